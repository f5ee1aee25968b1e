package e2e

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"godvm/vmm/probe"
)

var (
	probeOnce sync.Once
	probeRes  *probe.Result
	probeErr  error
)

// guestMOVDIR64BFaults runs godvm's KVM probe (once) and reports whether a
// guest MOVDIR64B raises #UD inside the guest on this host. Then KVM never
// hands the instruction to godvm (on kvm_amd, and under QEMU/TCG, the #UD is
// reflected into the guest), so the stock idxd driver cannot submit work to
// any DSA godvm offers: only the control path can be tested here.
func guestMOVDIR64BFaults(t *testing.T) (bool, string) {
	t.Helper()
	probeOnce.Do(func() { probeRes, probeErr = probe.Run(probe.Options{}) })
	if probeErr != nil {
		t.Fatalf("KVM probe: %v", probeErr)
	}
	i, ok := probeRes.Insn(probe.MOVDIR64B)
	if !ok {
		t.Fatal("KVM probe did not test MOVDIR64B")
	}
	if i.Outcome == probe.Exception && i.Vector == 6 {
		return true, "MOVDIR64B raises #UD in the guest on this host (godvm probe), so the stock idxd driver's " +
			"submissions never reach godvm: dmatest and the data path cannot run here"
	}
	return false, ""
}

// dsaControlPathSteps are the agent's dsa-scenario diagnostics that come
// before the first descriptor submission.
var dsaControlPathSteps = []string{
	"bus/dsa/drivers/idxd/bind <- dsa0",
	"bus/dsa/drivers/dmaengine/bind <- wq0.0",
	"step: device and wq0.0 enabled",
}

// runDSAControlPath is the dsa scenario on a host whose guests cannot
// execute MOVDIR64B: the kernel is told the flag is there (setcpuid=), so
// the stock idxd driver loads and the agent configures and enables the
// device and a kernel WQ through sysfs exactly as on any host; the first
// descriptor submission then faults with #UD, which kills the agent (it runs
// as init) and panics the guest. The test asserts every control-path step
// and that the guest died where expected, not earlier; it logs plainly that
// the data path was not exercised.
func runDSAControlPath(t *testing.T, why string, args ...string) Output {
	t.Helper()
	out := bootAgent(t, agentRun{
		Scenarios: []string{"dsa"},
		CPUs:      2,
		Cmdline:   "setcpuid=movdir64b",
		Args:      args,
		Timeout:   300 * time.Second,
	})
	out.wantStatus(t, 2)
	for _, step := range dsaControlPathSteps {
		if !slices.Contains(out.KTAP.Diagnostics, step) {
			t.Errorf("control path: missing diagnostic %q; diagnostics %q", step, out.KTAP.Diagnostics)
		}
	}
	if !strings.Contains(out.Stdout, "invalid opcode") || !strings.Contains(out.Stdout, "idxd_submit_desc") {
		t.Errorf("the guest did not stop at the driver's first MOVDIR64B (idxd_submit_desc):\n%s", tail(out.Stdout, 40))
	}
	t.Logf("control path checked (idxd probe, accel-config-style configuration, device and WQ enabled); %s", why)
	return out
}
