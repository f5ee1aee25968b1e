package e2e

import (
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// dmatest's own result line, e.g.
// "dmatest: dma0chan0-copy0: summary 1000 tests, 0 failures 3512.41 iops 28099 KB/s (0)".
var dmatestSummary = regexp.MustCompile(`(dma\d+chan\d+)-copy\d+: summary (\d+) tests, (\d+) failures ([\d.]+) iops (\d+) KB/s`)

// TestDSA boots the test kernel with a software DSA and runs the agent's dsa
// scenario: the stock idxd driver configured as accel-config would, dmatest
// on the kernel dedicated WQ, fill and batch through dmaengine, WQ
// disable/re-enable, a second WQ in another group and the device unbind.
// Two shapes: a Sapphire Rapids-like DSA 1.0 and a small DSA 2.0 (64-byte
// WQCFG entries with per-WQ operation configuration).
func TestDSA(t *testing.T) {
	for _, shape := range []string{
		"wqs=8,wq-size=128,groups=4,engines=4,version=1.0",
		"wqs=2,wq-size=32,groups=2,engines=2,version=2.0",
	} {
		t.Run(shape, func(t *testing.T) { testDSA(t, shape) })
	}
}

func testDSA(t *testing.T, shape string) {
	testKernel(t) // skips without /dev/kvm
	if ud, why := guestMOVDIR64BFaults(t); ud {
		runDSAControlPath(t, why, "--dsa", shape)
		return
	}
	out := bootAgent(t, agentRun{
		Scenarios: []string{"dsa"},
		CPUs:      2,
		Args:      []string{"--dsa", shape},
		Timeout:   300 * time.Second,
	})
	out.wantStatus(t, 0)
	out.KTAP.wantOK(t, "dsa")
	for _, step := range []string{
		"step: device and wq0.0 enabled",
		"step: dmatest ok",
		"step: wq0.0 disabled and re-enabled",
		"step: wq0.1 (group 1) ok",
		"step: device disabled",
	} {
		if !slices.Contains(out.KTAP.Diagnostics, step) {
			t.Errorf("missing diagnostic %q; diagnostics %q", step, out.KTAP.Diagnostics)
		}
	}
	for _, d := range []string{"wq0.0 fill 4096 bytes ok", "wq0.0 batch of 3 (memmove, fill, fenced compare) ok", "wq0.1 memcpy 4096 bytes ok"} {
		if !slices.Contains(out.KTAP.Diagnostics, d) {
			t.Errorf("missing diagnostic %q", d)
		}
	}
	m := dmatestSummary.FindStringSubmatch(out.Stdout)
	if m == nil {
		t.Fatalf("no dmatest summary line on the console:\n%s", tail(out.Stdout, 40))
	}
	tests, _ := strconv.Atoi(m[2])
	failures, _ := strconv.Atoi(m[3])
	if tests < 1000 || failures != 0 {
		t.Errorf("dmatest on %s: %d tests, %d failures; want >= 1000 tests, 0 failures", m[1], tests, failures)
	}
	t.Logf("guest dmatest on %s: %s tests, %s iops, %s KB/s", m[1], m[2], m[4], m[5])
}
