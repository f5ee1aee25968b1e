// Package e2e runs the godvm binary against the test kernel (images/) and
// checks exit statuses and the in-kernel agent's KTAP output.
//
// Tests that boot a guest need /dev/kvm: they skip, saying so, when it is
// absent (or with -short, as `make check` runs them), and fail when it is
// present but GODVM_TEST_KERNEL is not set or missing. Bad-input tests need
// neither.
//
// On a host without /dev/kvm the suite can run inside images/nested (a QEMU
// TCG machine with nested kvm_amd) from prebuilt binaries:
//
//	K=$(images/build-kernel.sh --print-path); R=$PWD
//	go build -o /tmp/e2e/godvm ./cmd/godvm && go test -c -o /tmp/e2e/e2e.test ./e2e
//	cd /tmp/e2e && GODVM_TEST_KERNEL=$K GODVM_BINARY=/tmp/e2e/godvm \
//	  $R/images/nested/run-in-nested-kvm.sh -r "$(dirname "$K")" -c 2 -t 900 -- ./e2e.test -test.run TestBoot -test.v
//
// Each area adds its own e2e/<area>_test.go using the helpers here:
//
//	out := bootAgent(t, agentRun{Scenarios: []string{"boot"}, CPUs: 2})
//	out.wantStatus(t, 0)
//	out.KTAP.wantOK(t, "boot")
//	v, _ := out.KTAP.Diag("cpus_online")
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"godvm/internal/kernelcache"
	"godvm/internal/proc"
)

// kvmDevice is where KVM is expected.
const kvmDevice = "/dev/kvm"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// godvmBinary builds cmd/godvm once per test run and returns its path.
// GODVM_BINARY names a prebuilt binary instead (for running the compiled
// tests where there is no Go toolchain, e.g. inside images/nested).
func godvmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GODVM_BINARY"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "godvm-e2e-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "godvm")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/godvm")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/godvm: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// requireKVM skips the test when the host has no /dev/kvm.
func requireKVM(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short (make check): skipping a test that boots a guest")
	}
	if _, err := os.Stat(kvmDevice); errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s absent on this host: skipping a test that boots a guest", kvmDevice)
	}
}

// testKernel returns the test kernel's vmlinux as `godvm bench` finds it
// (internal/kernelcache): GODVM_TEST_KERNEL, else the kernel `make kernel`
// built last. Without /dev/kvm the test is skipped first; with /dev/kvm
// present, no kernel is a failure.
func testKernel(t *testing.T) string {
	t.Helper()
	requireKVM(t)
	k, err := kernelcache.Find("")
	if err != nil {
		t.Fatalf("%s is present but there is no test kernel to boot: %v", kvmDevice, err)
	}
	if k.Vmlinux == "" {
		t.Fatalf("%s is present but the test kernel has no vmlinux: %s", kvmDevice, k)
	}
	return k.Vmlinux
}

// systemMap returns the System.map next to the test kernel, or "".
func systemMap(kernel string) string {
	p := filepath.Join(filepath.Dir(kernel), "System.map")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// Output is a finished godvm run.
type Output struct {
	Args    []string
	Status  int
	Stdout  string // the guest console
	Stderr  string // godvm's own messages
	Elapsed time.Duration
	KTAP    KTAP
}

// runGodvm runs the godvm binary with args, killing it after limit.
func runGodvm(t *testing.T, limit time.Duration, args ...string) Output {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, godvmBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = nil // /dev/null: no terminal handling
	start := time.Now()
	err := cmd.Run()
	o := Output{Args: args, Stdout: stdout.String(), Stderr: stderr.String(), Elapsed: time.Since(start)}
	if err != nil && ctx.Err() != nil {
		t.Fatalf("godvm %s: killed after %v\nconsole:\n%s\nstderr:\n%s", strings.Join(args, " "), limit, proc.TailLines(o.Stdout, 40), o.Stderr)
	}
	if o.Status, err = proc.ExitStatus(err); err != nil {
		t.Fatalf("godvm: %v", err)
	}
	o.KTAP = ParseKTAP(o.Stdout)
	return o
}

// wantStatus fails the test unless godvm exited with status, and shows the
// console tail and stderr when it did not.
func (o Output) wantStatus(t *testing.T, status int) {
	t.Helper()
	if o.Status != status {
		t.Fatalf("godvm %s: exit status %d, want %d\nconsole (last lines):\n%s\nstderr:\n%s",
			strings.Join(o.Args, " "), o.Status, status, proc.TailLines(o.Stdout, 40), o.Stderr)
	}
}

// defaultMemory is the guest RAM of the agent's boots: on kvm_pvm the
// kernel's struct-page initialisation for godvm's default 512 MiB costs
// about 4 s of emulated ring 0 per boot, and no scenario needs more.
const defaultMemory = "128M"

// agentRun describes a boot of the test kernel with the in-kernel agent.
type agentRun struct {
	Scenarios []string // godvm_agent.run= (comma-joined)
	CPUs      int      // default 1
	Memory    string   // default 128M (defaultMemory)
	Cmdline   string   // extra guest parameters
	// BootLog keeps the kernel's boot messages on the console; by default
	// the guest boots with quiet (the agent turns the console back on for
	// its report): fewer port exits and less emulated ring-0 printk work.
	BootLog bool
	Args    []string      // extra godvm flags (devices)
	Timeout time.Duration // godvm --timeout; default 240s
	// Renew prepares a second run after a nested environment fault (see
	// nestedEnvFault), e.g. a fresh device server; nil: the same run.
	Renew func(r *agentRun)
}

// bootAgent boots the test kernel with the agent running the scenarios.
//
// Inside images/nested only, a run that ends in the environment's own fault
// (nestedEnvFault) is logged in full and run once more; the second run's
// result is the test's. Everywhere else, and for any other failure, the
// first run is the verdict.
func bootAgent(t *testing.T, r agentRun) Output {
	t.Helper()
	out := bootAgentOnce(t, r)
	if why, ok := nestedEnvFault(out); ok {
		t.Logf("NESTED ENVIRONMENT FAULT (%s): the nested stack (QEMU/TCG SVM, outer kvm_amd) corrupts its guests now and then "+
			"(images/nested/README.md); running once more. The failed run:\nconsole (last lines):\n%s\nstderr:\n%s",
			why, proc.TailLines(out.Stdout, 20), out.Stderr)
		if r.Renew != nil {
			r.Renew(&r)
		}
		out = bootAgentOnce(t, r)
	}
	return out
}

// stuckOutside matches godvm's timeout report for a vCPU stuck at an address
// that its System.map does not name (outside the guest kernel's text).
var stuckOutside = regexp.MustCompile(`stuck in 0x[0-9a-f]+ for the last`)

// nestedEnvFault reports whether a run inside images/nested (GODVM_NESTED_VM=1,
// set by run-in-nested-kvm.sh) ended in one of the two ways the nested
// SVM has been seen to break a nested guest, with godvm's own error
// (status 1): a triple fault with no oops before it, or a vCPU stuck at an
// address outside the guest kernel (traced on 2026-11-27: the nested guest's
// RIP and CR3 replaced by the outer kernel's, RIP = kvm_amd's
// __svm_vcpu_run+0x9c, the instruction after its VMRUN).
func nestedEnvFault(o Output) (string, bool) {
	if os.Getenv("GODVM_NESTED_VM") != "1" || o.Status != 1 || strings.Contains(o.Stdout, "Oops") ||
		strings.Contains(o.Stdout, "Kernel panic") {
		return "", false
	}
	switch {
	case strings.Contains(o.Stderr, "the guest triple-faulted (KVM_EXIT_SHUTDOWN)"):
		return "guest triple fault", true
	case stuckOutside.MatchString(o.Stderr):
		return "vCPU stuck outside the guest kernel", true
	}
	return "", false
}

func bootAgentOnce(t *testing.T, r agentRun) Output {
	t.Helper()
	kernel := testKernel(t)
	if r.Timeout == 0 {
		r.Timeout = 240 * time.Second
	}
	cmdline := "godvm_agent.run=" + strings.Join(r.Scenarios, ",")
	if !r.BootLog {
		cmdline = "quiet " + cmdline
	}
	if r.Cmdline != "" {
		cmdline += " " + r.Cmdline
	}
	args := []string{"run", "--kernel", kernel, "--cmdline", cmdline, "--timeout", r.Timeout.String()}
	if r.CPUs > 0 {
		args = append(args, "--cpus", strconv.Itoa(r.CPUs))
	}
	if r.Memory == "" {
		r.Memory = defaultMemory
	}
	args = append(args, "--memory", r.Memory)
	if sm := systemMap(kernel); sm != "" {
		args = append(args, "--system-map", sm)
	}
	args = append(args, r.Args...)
	// The process limit leaves godvm time to report its own timeout.
	return runGodvm(t, r.Timeout+60*time.Second, args...)
}

// KTAPResult is one "ok"/"not ok" line.
type KTAPResult struct {
	OK        bool
	Num       int
	Name      string
	Directive string // "SKIP ..." etc., without '#'
}

// KTAP is the agent's report parsed from the console.
type KTAP struct {
	Version     bool // "KTAP version 1" seen
	Plan        int  // N of "1..N"; -1 when absent
	Results     []KTAPResult
	Diagnostics []string // "# ..." lines, without "# "
}

var (
	// printk's "[   12.345678] " prefix, if the kernel has printk.time.
	printkTime = regexp.MustCompile(`^\[\s*\d+\.\d+\]\s?`)
	ktapResult = regexp.MustCompile(`^(not ok|ok) (\d+)(?: -)? ?([^#]*?)\s*(?:#\s*(.*))?$`)
	ktapPlan   = regexp.MustCompile(`^1\.\.(\d+)$`)
)

// ParseKTAP extracts KTAP lines from console output (other kernel messages
// are ignored).
func ParseKTAP(console string) KTAP {
	k := KTAP{Plan: -1}
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimRight(line, "\r")
		line = printkTime.ReplaceAllString(line, "")
		line = strings.TrimSpace(line)
		switch {
		case line == "KTAP version 1":
			k.Version = true
		case ktapPlan.MatchString(line):
			n, _ := strconv.Atoi(ktapPlan.FindStringSubmatch(line)[1])
			k.Plan = n
		case strings.HasPrefix(line, "# "):
			k.Diagnostics = append(k.Diagnostics, strings.TrimPrefix(line, "# "))
		case ktapResult.MatchString(line):
			m := ktapResult.FindStringSubmatch(line)
			n, _ := strconv.Atoi(m[2])
			k.Results = append(k.Results, KTAPResult{OK: m[1] == "ok", Num: n, Name: m[3], Directive: m[4]})
		}
	}
	return k
}

// Result returns the result line for a test name.
func (k KTAP) Result(name string) (KTAPResult, bool) {
	for _, r := range k.Results {
		if r.Name == name {
			return r, true
		}
	}
	return KTAPResult{}, false
}

// Diag returns the value of a "# key=value" diagnostic.
func (k KTAP) Diag(key string) (string, bool) {
	for _, d := range k.Diagnostics {
		if v, ok := strings.CutPrefix(d, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// wantOK fails unless the named test passed (not skipped).
func (k KTAP) wantOK(t *testing.T, name string) {
	t.Helper()
	r, ok := k.Result(name)
	switch {
	case !ok:
		t.Errorf("KTAP: no result for %q (results %+v)", name, k.Results)
	case !r.OK:
		t.Errorf("KTAP: %q failed; diagnostics %q", name, k.Diagnostics)
	case strings.HasPrefix(r.Directive, "SKIP"):
		t.Errorf("KTAP: %q skipped: %s", name, r.Directive)
	}
}

func TestNestedEnvFault(t *testing.T) {
	triple := "godvm: vCPU 0 at RIP 0xfff0: the guest triple-faulted (KVM_EXIT_SHUTDOWN): an exception could not be delivered"
	stuck := "godvm: timeout: the guest stopped making progress or did not finish in time: vCPU 0 at RIP 0xffffffffc035320c, stuck in 0xffffffffc035320c for the last 5 samples"
	stuckNamed := "godvm: timeout: the guest stopped making progress or did not finish in time: vCPU 0 at RIP 0xffffffff81a592eb (native_safe_halt+0xb), stuck in native_safe_halt for the last 5 samples"
	cases := []struct {
		name   string
		nested string
		o      Output
		want   bool
	}{
		{"triple fault in nested", "1", Output{Status: 1, Stderr: triple}, true},
		{"stuck outside the kernel in nested", "1", Output{Status: 1, Stderr: stuck}, true},
		{"triple fault on a real host", "", Output{Status: 1, Stderr: triple}, false},
		{"stuck in a named function", "1", Output{Status: 1, Stderr: stuckNamed}, false},
		{"triple fault after an oops", "1", Output{Status: 1, Stdout: "BUG: unable to handle page fault\nOops: 0000", Stderr: triple}, false},
		{"guest verdict, not godvm's error", "1", Output{Status: 3, Stderr: triple}, false},
		{"passed", "1", Output{Status: 0}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GODVM_NESTED_VM", c.nested)
			if _, got := nestedEnvFault(c.o); got != c.want {
				t.Errorf("nestedEnvFault = %v, want %v", got, c.want)
			}
		})
	}
}
