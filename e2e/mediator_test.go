package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godvm/internal/proc"
)

// TestVfioUserDSAMediated runs two guests at once, each with its own
// virtual DSA carved from one `godvm dsa-server --vdev ... --vdev ...`
// (the software parent: 16 WQs, 256 entries, 8 groups, 8 engines; each
// guest a DSA of 8 WQs, 128 entries, 4 groups, 4 engines, the shape
// TestVfioUserDSA's guests get from a whole server). Both run the agent's
// dsa scenario (idxd probe, accel-config style configuration, dmatest with
// verification, fill, batch, WQ disable/re-enable, device disable and
// re-enable) on the data path godvm picks here, and both must pass. Run
// it with go test -timeout 15m: two guests at once on a small host take
// minutes.
func TestVfioUserDSAMediated(t *testing.T) {
	testKernel(t) // skips without /dev/kvm
	dir := t.TempDir()
	socks := []string{filepath.Join(dir, "guest-a.sock"), filepath.Join(dir, "guest-b.sock")}
	_, logs := startDSAServer(t, socks, "--dsa", "wqs=16,wq-size=256,groups=8,engines=8,version=1.0",
		"--vdev", "socket="+socks[0]+",wqs=8,wq-size=128", "--vdev", "socket="+socks[1]+",wqs=8,wq-size=128", "--portal", "mapped")
	t.Run("guests", func(t *testing.T) {
		for i, s := range socks {
			t.Run(string(rune('a'+i)), func(t *testing.T) {
				t.Parallel()
				runDSA(t, dsaRun{
					// One vCPU each: two guests share this host's CPUs
					// (on kvm_pvm each guest alone takes 60-90 s).
					CPUs:    1,
					Args:    []string{"--vfio-user", s},
					OnFail:  func() { t.Logf("dsa-server log:\n%s", proc.TailLines(logs.String(), 30)) },
					Timeout: 600 * time.Second,
				})
			})
		}
	})
	// Both guests were served by one process, each by its own vdev.
	out := logs.String()
	for _, v := range []string{"vdev=0", "vdev=1"} {
		if !strings.Contains(out, "vfio-user client connected "+v) {
			t.Errorf("dsa-server log shows no client on %s:\n%s", v, proc.TailLines(out, 30))
		}
	}
	if t.Failed() {
		t.Logf("dsa-server log:\n%s", proc.TailLines(out, 30))
	}
}
