package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godvm/internal/proc"
	"godvm/internal/testkernel"
)

// TestBoot boots the test kernel with 2 vCPUs and --boot-trace: KTAP from
// the agent, both CPUs online, and godvm's boot trace (boot-timer time, exits
// by reason).
func TestBoot(t *testing.T) {
	out := bootAgent(t, agentRun{Scenarios: []string{"boot"}, CPUs: 2, Args: []string{"--boot-trace"}})
	out.wantStatus(t, 0)
	if !out.KTAP.Version || out.KTAP.Plan != 1 {
		t.Errorf("KTAP header missing: %+v", out.KTAP)
	}
	out.KTAP.wantOK(t, "boot")
	if v, ok := out.KTAP.Diag("cpus_online"); !ok || v != "2" {
		t.Errorf("cpus_online=%q (%v), want 2; diagnostics %q", v, ok, out.KTAP.Diagnostics)
	}
	if !strings.Contains(out.Stderr, "guest agent ready (boot-timer write) after") || !strings.Contains(out.Stderr, "KVM_EXIT_IO=") {
		t.Errorf("boot trace missing: %q", out.Stderr)
	}
	t.Logf("agent ready after %s; exits %s", agentReady(out.Stderr), exitsLine(out.Stderr))
}

// TestOneCPUFailureExits3 boots 1 vCPU with the boot scenario, which
// passes, and the fail scenario, which reports failure: the agent's KTAP
// has both results and godvm exits 3 with the debug-exit value (the number
// of failed scenarios).
func TestOneCPUFailureExits3(t *testing.T) {
	out := bootAgent(t, agentRun{Scenarios: []string{"boot", "fail"}, CPUs: 1})
	out.wantStatus(t, 3)
	out.KTAP.wantOK(t, "boot")
	if v, ok := out.KTAP.Diag("cpus_online"); !ok || v != "1" {
		t.Errorf("cpus_online=%q (%v), want 1", v, ok)
	}
	if r, ok := out.KTAP.Result("fail"); !ok || r.OK || r.Num != 2 {
		t.Errorf("KTAP result for fail: %+v %v", r, ok)
	}
	if !strings.Contains(out.Stderr, "debug-exit value 1") {
		t.Errorf("stderr does not print the value: %q", out.Stderr)
	}
}

func TestPanicScenarioExits2(t *testing.T) {
	out := bootAgent(t, agentRun{Scenarios: []string{"panic"}})
	out.wantStatus(t, 2)
	if !strings.Contains(out.Stdout, "deliberate panic") {
		t.Errorf("console lacks the panic message:\n%s", proc.TailLines(out.Stdout, 20))
	}
}

// Bad input: one line on stderr, exit status 1, and no /dev/kvm needed
// (files are checked before KVM is opened).
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "README")
	os.WriteFile(notKernel, []byte("this is not a kernel\n"), 0o644)
	// A tiny but well-formed vmlinux-shaped ELF: enough to get past the
	// kernel checks to the initrd and memory checks.
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, testkernel.TinyELF(), 0o644)
	bigInitrd := filepath.Join(dir, "initrd.cpio")
	f, err := os.Create(bigInitrd)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(80 << 20)
	f.Close()

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing kernel", []string{"run", "--kernel", filepath.Join(dir, "nope")}, "no such file"},
		{"not a kernel", []string{"run", "--kernel", notKernel}, "not an x86-64 Linux kernel"},
		{"initrd larger than RAM", []string{"run", "--kernel", kernel, "--initrd", bigInitrd, "--memory", "64M"}, "larger than guest memory"},
		{"memory too small", []string{"run", "--kernel", kernel, "--memory", "2M"}, "too small"},
		{"no kernel flag", []string{"run"}, "--kernel"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := runGodvm(t, time.Minute, c.args...)
			out.wantStatus(t, 1)
			msg := strings.TrimSpace(out.Stderr)
			if strings.Contains(msg, "\n") || !strings.Contains(msg, c.want) {
				t.Errorf("stderr %q: want one line mentioning %q", out.Stderr, c.want)
			}
		})
	}
}

func TestParseKTAP(t *testing.T) {
	console := "[    0.000000] Linux version 6.1\r\n" +
		"[   41.123456] KTAP version 1\n" +
		"[   41.123500] 1..3\n" +
		"[   41.2] # cpus_online=2\n" +
		"ok 1 - boot\n" +
		"[   42.0] not ok 2 - fail\n" +
		"ok 3 - dsa # SKIP no device\n" +
		"# godvm_agent: 1 of 3 failed\n"
	k := ParseKTAP(console)
	if !k.Version || k.Plan != 3 || len(k.Results) != 3 {
		t.Fatalf("%+v", k)
	}
	if r, _ := k.Result("boot"); !r.OK || r.Num != 1 {
		t.Errorf("boot %+v", r)
	}
	if r, _ := k.Result("fail"); r.OK || r.Num != 2 {
		t.Errorf("fail %+v", r)
	}
	if r, _ := k.Result("dsa"); !r.OK || r.Directive != "SKIP no device" {
		t.Errorf("dsa %+v", r)
	}
	if v, ok := k.Diag("cpus_online"); !ok || v != "2" {
		t.Errorf("diag %q", v)
	}
	if _, ok := k.Diag("missing"); ok {
		t.Error("missing diag found")
	}
	if ParseKTAP("no ktap here").Plan != -1 {
		t.Error("plan without KTAP")
	}
}
