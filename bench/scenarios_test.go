package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeGodvm is a stand-in for the godvm binary: it records its arguments
// and prints out, as `godvm run --boot-trace` would, then exits with status.
func fakeGodvm(t *testing.T, out string, status int) (bin, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	bin, argsFile = filepath.Join(dir, "godvm"), filepath.Join(dir, "args")
	os.WriteFile(filepath.Join(dir, "out"), []byte(out), 0o644)
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" >" + argsFile + "\ncat " + filepath.Join(dir, "out") +
		"\nexit " + strconv.Itoa(status) + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argsFile
}

func readArgs(t *testing.T, f string) []string {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// argAfter returns the argument that follows flag, or "".
func argAfter(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// What the agent's dsa scenario and --boot-trace print on kvm_pvm (the
// shape of the reference run, 2026-11-27).
const dsaRunOutput = `KTAP version 1
1..1
# step: device and wq0.0 enabled
dmatest: dma0chan0-copy0: summary 1000 tests, 0 failures 71.81 iops 37 KB/s (0)
# step: dmatest ok
ok 1 dsa
boot-trace: guest agent ready (boot-timer write) after 30.4s
boot-trace: ran 1m4.5s; vCPU time outside KVM_RUN: 0.3%
boot-trace: exits: KVM_EXIT_IO=49972 KVM_EXIT_INTERNAL_ERROR=1017 KVM_EXIT_MMIO=458
boot-trace: emulated instructions: int3=1 fwait=4 movdir64b=1012
boot-trace: serial bytes written by the guest: 15841
`

// dsa-guest boots the machine it says (test kernel, System.map, vCPUs, a
// DSA, the path's flags, dmatest sized through the agent's parameters) and
// turns dmatest's summary and the trace into per-path metrics.
func TestDSAGuestPathMetrics(t *testing.T) {
	bin, argsFile := fakeGodvm(t, dsaRunOutput, 0)
	env := &Env{Godvm: bin, Kernel: "/k/vmlinux", SystemMap: "/k/System.map", Quick: true}
	r := newRecorder()
	if err := runDSAGuest(context.Background(), env, r, pathNamed(t, "emulated"), []string{"--dsa-path", "emulated"}); err != nil {
		t.Fatal(err)
	}
	args := readArgs(t, argsFile)
	if args[0] != "run" || argAfter(args, "--kernel") != "/k/vmlinux" || argAfter(args, "--system-map") != "/k/System.map" ||
		argAfter(args, "--cpus") != "2" || argAfter(args, "--dsa") != "default" || argAfter(args, "--dsa-path") != "emulated" ||
		argAfter(args, "--timeout") != "5m0s" || !strings.Contains(strings.Join(args, " "), "--boot-trace") {
		t.Errorf("godvm run arguments: %q", args)
	}
	cl := argAfter(args, "--cmdline")
	for _, w := range []string{"godvm_agent.run=dsa", "godvm_agent.dmatest_buf=256", "godvm_agent.dmatest_iters=1000"} {
		if !strings.Contains(cl, w) {
			t.Errorf("cmdline %q lacks %s", cl, w)
		}
	}
	got := map[string]Metric{}
	for _, m := range r.metricsList() {
		got[m.Name] = m
	}
	for name, want := range map[string]float64{
		"descriptors/s (dmatest iops), emulated path": 71.81,
		"dmatest throughput, emulated path":           0.037,
		"exits per descriptor, emulated path":         1.017,
	} {
		if m, ok := got[name]; !ok || len(m.Values) != 1 || m.Values[0] != want {
			t.Errorf("%s: %+v, want %v (have %v)", name, m, want, got)
		}
	}
	if e := r.info["exits, emulated path"]; e != "KVM_EXIT_INTERNAL_ERROR=1017 KVM_EXIT_IO=49972 KVM_EXIT_MMIO=458" {
		t.Errorf("exits info %q", e)
	}
	if e := r.info["emulated or paravirtual, emulated path"]; e != "fwait=4 int3=1 movdir64b=1012" {
		t.Errorf("emulated info %q", e)
	}
}

// A run that did not do what dsa-guest measures is a failure that says why.
func TestDSAGuestFailures(t *testing.T) {
	for _, c := range []struct {
		name, out string
		status    int
		want      string
	}{
		{"guest failed", "not ok 1 dsa\n", 3, "exited 3"},
		{"no summary", strings.Replace(dsaRunOutput, "summary", "sum", 1), 0, "no summary"},
		{"failures", strings.Replace(dsaRunOutput, " 0 failures", " 2 failures", 1), 0, "2 of 1000 tests failed"},
		{"too few", strings.Replace(dsaRunOutput, "1000 tests", "20 tests", 1), 0, "ran 20 tests, asked for 1000"},
		{"other path", strings.Replace(dsaRunOutput, "KVM_EXIT_INTERNAL_ERROR=1017 ", "", 1), 0, "no KVM_EXIT_INTERNAL_ERROR exits"},
		{"agent on another path", "# dsa_path=pv\n" + dsaRunOutput, 0, "agent reports dsa_path=pv"},
	} {
		bin, _ := fakeGodvm(t, c.out, c.status)
		err := runDSAGuest(context.Background(), &Env{Godvm: bin, Kernel: "/k/vmlinux", Quick: true}, newRecorder(), pathNamed(t, "emulated"), []string{"--dsa-path", "emulated"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// boot runs the agent's boot scenario only and reports the trace.
func TestBootScenarioFake(t *testing.T) {
	bin, argsFile := fakeGodvm(t, dsaRunOutput, 0)
	env := &Env{Godvm: bin, Kernel: "/k/vmlinux"}
	r := newRecorder()
	if err := BootScenario().Run(context.Background(), env, r); err != nil {
		t.Fatal(err)
	}
	args := readArgs(t, argsFile)
	if argAfter(args, "--cmdline") != "godvm_agent.run=boot" || argAfter(args, "--cpus") != "2" || argAfter(args, "--system-map") != "" {
		t.Errorf("arguments %q", args)
	}
	got := map[string]float64{}
	for _, m := range r.metricsList() {
		got[m.Name] = m.Median
	}
	if got["time to agent start"] != 30.4 || got["exits"] != 49972+1017+458 || got["exits KVM_EXIT_IO"] != 49972 || got["vCPU time outside KVM_RUN"] != 0.3 {
		t.Errorf("metrics %v", got)
	}
}

// Without a test kernel the guest scenarios say what the discovery said.
func TestCheckGuestNoKernel(t *testing.T) {
	if KVMStatus() != "available" {
		t.Skip("/dev/kvm is not usable here: CheckGuest stops at that first")
	}
	why := os.ErrNotExist
	env := &Env{Godvm: "/bin/true", NoKernel: why}
	if err := CheckGuest(env); err != why {
		t.Errorf("CheckGuest: %v, want the discovery's error", err)
	}
}

func TestKVMModule(t *testing.T) {
	sys := t.TempDir()
	if m := kvmModule(sys); m != "" {
		t.Errorf("none loaded: %q", m)
	}
	os.Mkdir(filepath.Join(sys, "kvm_pvm"), 0o755)
	os.Mkdir(filepath.Join(sys, "kvm"), 0o755)
	if m := kvmModule(sys); m != "kvm_pvm" {
		t.Errorf("kvm_pvm loaded: %q", m)
	}
}

// The pv path counts the paravirtual port's stores (one KVM_EXIT_IO each),
// and is offered only by a godvm that has run --dsa-path.
func TestDSAGuestPVPath(t *testing.T) {
	out := "# dsa_path=pv\n" + strings.Replace(strings.Replace(dsaRunOutput,
		"KVM_EXIT_INTERNAL_ERROR=1017 ", "", 1),
		"movdir64b=1012", "pv-movdir64b=1010 pv-enqcmds=2", 1)
	bin, argsFile := fakeGodvm(t, out, 0)
	env := &Env{Godvm: bin, Kernel: "/k/vmlinux", Quick: true}
	pv := pathNamed(t, "pv")
	if err := pv.Check(env); err == nil || !strings.Contains(err.Error(), "--dsa-path") {
		t.Errorf("a godvm without --dsa-path: %v", err)
	}
	if a := pathArgs(env, pv); a != nil {
		t.Errorf("args without the flag: %q", a)
	}
	r := newRecorder()
	if err := runDSAGuest(context.Background(), env, r, pv, []string{"--dsa-path", "pv"}); err != nil {
		t.Fatal(err)
	}
	if a := readArgs(t, argsFile); argAfter(a, "--dsa-path") != "pv" {
		t.Errorf("arguments %q", a)
	}
	if m, ok := r.metrics["exits per descriptor, pv path"]; !ok || len(m.Values) != 1 || m.Values[0] != 1.012 {
		t.Errorf("exits per descriptor, pv path: %+v, want 1.012 (have %v)", m, r.order)
	}
	if m, ok := r.metrics["descriptors/s (dmatest iops), pv path"]; !ok || m.Values[0] != 71.81 {
		t.Errorf("pv throughput: %+v (have %v)", m, r.order)
	}

	withFlag, _ := fakeGodvm(t, "   --dsa-path value  emulated|pv|native\n", 0)
	env.Godvm = withFlag
	if a := pathArgs(env, pv); len(a) != 2 || a[1] != "pv" {
		t.Errorf("args with the flag: %q", a)
	}
	// pv is possible on every host that runs guests (the probe needs KVM).
	if KVMStatus() == "available" {
		if err := pv.Check(env); err != nil {
			t.Errorf("a godvm with --dsa-path: %v", err)
		}
	}
}

func pathNamed(t *testing.T, name string) DSAPath {
	t.Helper()
	for _, p := range DSAPaths() {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no DSA path %q", name)
	return DSAPath{}
}
