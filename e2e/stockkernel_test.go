package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"godvm/internal/proc"
)

// TestStockKernel boots a distribution's stock kernel as it is shipped
// (Debian's linux-image-amd64: a bzImage with an XZ payload, nothing
// built in for godvm) with no initrd and no root= parameter, and passes
// when the kernel itself reports that it cannot mount a root file system:
// everything before the root mount worked on this host, through whatever
// godvm emulates and the host-compatibility parameters the probe chose
// (on kvm_pvm: noxsave, clearcpuid=..., cryptomgr.notests). panic=-1 makes
// the kernel reset at that panic, which ends godvm (exit status 0, "guest
// reset"): a stock kernel has no pvpanic driver built in to tell godvm.
//
// GODVM_STOCK_KERNEL names the vmlinuz; `make test-stock-kernel` downloads
// the package (apt-get download, dpkg-deb -x into ~/.cache/godvm) and sets
// it. GODVM_STOCK_ARGS adds godvm flags (e.g. "--no-host-defaults"), and
// GODVM_STOCK_CMDLINE guest parameters, for trying other combinations.
// Slow: about 6-10 minutes of one host core on kvm_pvm (README, "bzImage
// kernels").
func TestStockKernel(t *testing.T) {
	kernel := os.Getenv("GODVM_STOCK_KERNEL")
	if kernel == "" {
		t.Skip("GODVM_STOCK_KERNEL is not set: `make test-stock-kernel` downloads Debian's linux-image-amd64 and runs this test")
	}
	requireKVM(t)
	if _, err := os.Stat(kernel); err != nil {
		t.Fatalf("GODVM_STOCK_KERNEL: %v", err)
	}
	limit := 30 * time.Minute
	cmdline := strings.TrimSpace("panic=-1 " + os.Getenv("GODVM_STOCK_CMDLINE"))
	args := []string{"run", "--kernel", kernel, "--cpus", "1", "--memory", "256M", "--cmdline", cmdline,
		"--timeout", limit.String(), "--boot-trace", "--verbose"}
	args = append(args, strings.Fields(os.Getenv("GODVM_STOCK_ARGS"))...)
	out := runGodvm(t, limit+2*time.Minute, args...)
	t.Logf("godvm %s: exit status %d after %v", strings.Join(args, " "), out.Status, out.Elapsed.Round(time.Second))
	for _, l := range strings.Split(out.Stderr, "\n") {
		if strings.Contains(l, "host-compatibility") || strings.Contains(l, "bzImage") || strings.HasPrefix(l, "boot-trace:") ||
			strings.Contains(l, "emulate") {
			t.Log(l)
		}
	}
	milestones := []string{"Linux version", "Command line:", "Kernel command line:", "x86/fpu:", "Memory:", "smpboot: CPU0",
		"random: crng init done", "alg: self-tests", "Freeing unused", "VFS: Cannot open root device", "VFS: Unable to mount root fs",
		"Kernel panic", "Rebooting"}
	for _, l := range strings.Split(out.Stdout, "\n") {
		for _, m := range milestones {
			if strings.Contains(l, m) {
				t.Log("console: " + strings.TrimSpace(l))
				break
			}
		}
	}
	if !regexp.MustCompile(`Kernel panic - not syncing: VFS: Unable to mount root fs`).MatchString(out.Stdout) {
		t.Fatalf("the kernel did not reach its root mount (exit status %d)\nconsole (last lines):\n%s\nstderr:\n%s",
			out.Status, proc.TailLines(out.Stdout, 60), proc.TailLines(out.Stderr, 30))
	}
	if out.Status != 0 || !strings.Contains(out.Stderr, "reset") {
		t.Errorf("after the panic, exit status %d (want 0: the kernel resets with panic=-1)\nstderr:\n%s", out.Status, proc.TailLines(out.Stderr, 20))
	}
	if ts := printkTimeOf(out.Stdout, "VFS: Unable to mount root fs"); ts != "" {
		t.Logf("the kernel panicked at guest time %ss, %v after godvm started", ts, out.Elapsed.Round(time.Second))
	}
}

// printkTimeOf is the printk timestamp of the first console line holding s.
func printkTimeOf(console, s string) string {
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, s) {
			if m := regexp.MustCompile(`^\[\s*(\d+\.\d+)\]`).FindStringSubmatch(strings.TrimSpace(l)); m != nil {
				return m[1]
			}
		}
	}
	return ""
}
