package e2e

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"godvm/internal/proc"
	"godvm/vmm/probe"
)

// dmatest's own result line, e.g.
// "dmatest: dma0chan0-copy0: summary 1000 tests, 0 failures 3512.41 iops 28099 KB/s (0)".
var dmatestSummary = regexp.MustCompile(`(dma\d+chan\d+)-copy\d+: summary (\d+) tests, (\d+) failures ([\d.]+) iops (\d+) KB/s`)

// dsaSteps are the agent's dsa-scenario steps (images/agent/scenario_dsa.c),
// each reported as "step: <name> ok (<seconds> s)".
var dsaSteps = []string{
	"device and wq0.0 enabled",
	"wq0.0 memcpy, fill and batch",
	"dmatest",
	"wq0.0 disabled and re-enabled",
	"wq0.1 (group 1)",
	"device disabled",
	"device re-enabled",
}

// dsaRun is one boot of the agent's full dsa scenario.
type dsaRun struct {
	CPUs int
	// Path is --dsa-path; "" leaves godvm's choice (auto).
	Path probe.DSAPath
	// Args attach the DSA (--dsa SHAPE, --vfio-user SOCKET).
	Args []string
	// OnFail is called before the test fails (e.g. to show a server log).
	OnFail func()
	// Timeout bounds the guest run (default 300 s).
	Timeout time.Duration
	// Renew prepares a second run after a nested environment fault
	// (agentRun.Renew).
	Renew func(r *agentRun)
}

// TestDSA boots the test kernel with the built-in software DSA and runs the
// agent's dsa scenario: the stock idxd driver configured as accel-config
// would, memcpy, fill and a batch through dmaengine, the kernel's dmatest
// (1000 iterations, verification on), WQ disable/re-enable, a second WQ in
// another group, device disable (the step Debian's 6.12.117 idxd crashes
// on without images/kernel/patches/0002) and a re-enable after it.
//
// Two shapes, a Sapphire Rapids-like DSA 1.0 (2 vCPUs) and a small DSA 2.0
// (1 vCPU: dmatest's thread and the agent share it), on the data path the
// probe picks for this host; and the paravirtual path forced, which every
// host can do (on kvm_pvm it is the one run of it; where the probe picks pv
// anyway it is a third shape on the same path).
func TestDSA(t *testing.T) {
	cases := []struct {
		name string
		run  dsaRun
	}{
		{"v1.0/2cpus/auto", dsaRun{CPUs: 2, Args: []string{"--dsa", "wqs=8,wq-size=128,groups=4,engines=4,version=1.0"}}},
		{"v2.0/1cpu/auto", dsaRun{CPUs: 1, Args: []string{"--dsa", "wqs=2,wq-size=32,groups=2,engines=2,version=2.0"}}},
		{"v1.0/2cpus/pv", dsaRun{CPUs: 2, Path: probe.DSAPV, Args: []string{"--dsa", "default"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runDSA(t, c.run) })
	}
}

// runDSA boots the dsa scenario with --boot-trace and checks every step,
// dmatest's own summary, the path the guest was told and that godvm saw the
// submissions arrive on that path.
func runDSA(t *testing.T, r dsaRun) Output {
	t.Helper()
	want := r.Path
	if want == "" {
		want, _ = hostDSAPath(t)
	}
	args := append([]string{"--boot-trace"}, r.Args...)
	if r.Path != "" {
		args = append(args, "--dsa-path", string(r.Path))
	}
	limit := r.Timeout
	if limit == 0 {
		limit = 300 * time.Second
	}
	out := bootAgent(t, agentRun{
		Scenarios: []string{"dsa"},
		CPUs:      r.CPUs,
		Args:      args,
		Timeout:   limit,
		Renew:     r.Renew,
	})
	if out.Status != 0 && r.OnFail != nil {
		r.OnFail()
	}
	out.wantStatus(t, 0)
	out.KTAP.wantOK(t, "dsa")
	if v, _ := out.KTAP.Diag("dsa_path"); v != string(want) {
		t.Errorf("the guest says dsa_path=%q, want %q", v, want)
	}
	for _, step := range dsaSteps {
		if !hasDiagPrefix(out.KTAP, "step: "+step+" ok (") {
			t.Errorf("step %q did not pass; diagnostics %q", step, out.KTAP.Diagnostics)
		}
	}
	for _, d := range []string{"wq0.0 fill 4096 bytes ok", "wq0.0 batch of 3 (memmove, fill, fenced compare) ok", "wq0.1 memcpy 4096 bytes ok"} {
		if !slices.Contains(out.KTAP.Diagnostics, d) {
			t.Errorf("missing diagnostic %q", d)
		}
	}
	m := dmatestSummary.FindStringSubmatch(out.Stdout)
	if m == nil {
		t.Fatalf("no dmatest summary line on the console:\n%s", proc.TailLines(out.Stdout, 40))
	}
	tests, _ := strconv.Atoi(m[2])
	failures, _ := strconv.Atoi(m[3])
	if tests < 1000 || failures != 0 {
		t.Errorf("dmatest on %s: %d tests, %d failures; want >= 1000 tests, 0 failures", m[1], tests, failures)
	}
	// Every descriptor dmatest submitted reached godvm on the path named:
	// emulation failures completed by vmm/emulate, or the pv port.
	emulated, pv := traceCount(out.Stderr, "movdir64b"), traceCount(out.Stderr, "pv-movdir64b")
	onPath, other := emulated, pv
	if want == probe.DSAPV {
		onPath, other = pv, emulated
	}
	if onPath < tests || other != 0 {
		t.Errorf("path %s: godvm counted movdir64b=%d pv-movdir64b=%d, want >= %d on the path and 0 off it\n%s",
			want, emulated, pv, tests, out.Stderr)
	}
	if !strings.Contains(out.Stderr, "boot-trace: DSA data path: "+string(want)) {
		t.Errorf("godvm's boot trace does not name the path %s:\n%s", want, out.Stderr)
	}
	summary := ""
	for _, d := range out.KTAP.Diagnostics {
		if strings.HasPrefix(d, "summary: dsa") {
			summary = d
		}
	}
	t.Logf("%s (godvm: %s; agent ready after %s)", summary, exitsLine(out.Stderr), agentReady(out.Stderr))
	return out
}

// hasDiagPrefix reports whether a diagnostic starts with prefix.
func hasDiagPrefix(k KTAP, prefix string) bool {
	for _, d := range k.Diagnostics {
		if strings.HasPrefix(d, prefix) {
			return true
		}
	}
	return false
}

// traceCount reads NAME=N from the boot trace's "emulated instructions"
// line; 0 when absent.
func traceCount(stderr, name string) int {
	for _, l := range strings.Split(stderr, "\n") {
		rest, ok := strings.CutPrefix(l, "boot-trace: emulated instructions: ")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if v, ok := strings.CutPrefix(f, name+"="); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
	}
	return 0
}

func exitsLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if v, ok := strings.CutPrefix(l, "boot-trace: exits: "); ok {
			return v
		}
	}
	return "no exit counts"
}

func agentReady(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if v, ok := strings.CutPrefix(l, "boot-trace: guest agent ready (boot-timer write) after "); ok {
			return v
		}
	}
	return "?"
}
