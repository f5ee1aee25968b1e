package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"godvm/internal/testkernel"
)

// spinKernel is a vmlinux-shaped ELF whose entry is `jmp .`: a guest that
// runs until godvm stops it, without an exit.
func spinKernel(t *testing.T) string {
	t.Helper()
	b := testkernel.TinyELF()
	copy(b[120:], []byte{0xeb, 0xfe})
	p := filepath.Join(t.TempDir(), "spin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// SIGINT and SIGTERM stop the guest, close the machine (the disk is
// flushed and closed: under the seccomp filters, so the shutdown path is
// allowed by them) and exit with 128 + the signal, with a one-line report.
// The guest is godvm's own this time (this test binary as godvm, see
// asgodvm_test.go): e2e's TestSignalFlushesDisk boots the test kernel and
// checks the guest's write reached the image.
func TestSignalStopsGuest(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm: ", err)
	}
	kernel := spinKernel(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sig     syscall.Signal
		seccomp string
		status  int
		name    string
	}{
		{syscall.SIGINT, "on", 130, "SIGINT"},
		{syscall.SIGTERM, "on", 143, "SIGTERM"},
		{syscall.SIGTERM, "off", 143, "SIGTERM"},
	} {
		t.Run(c.name+"/seccomp="+c.seccomp, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "run", "--kernel", kernel, "--memory", "64M", "--no-host-defaults",
				"--verbose", "--seccomp="+c.seccomp, "--disk", img, "--timeout", "60s")
			cmd.Env = append(os.Environ(), asGodvm+"=1")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The guest runs once the kernel line is logged (and the
			// filters are in, with --seccomp=on).
			ready := "msg=kernel "
			if c.seccomp == "on" {
				ready = "seccomp filters installed"
			}
			var lines []string
			sc := bufio.NewScanner(stderr)
			sent := false
			for sc.Scan() {
				lines = append(lines, sc.Text())
				if !sent && strings.Contains(sc.Text(), ready) {
					time.Sleep(200 * time.Millisecond) // into KVM_RUN
					cmd.Process.Signal(c.sig)
					sent = true
				}
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			out := strings.Join(lines, "\n")
			if !sent {
				t.Fatalf("never saw %q; stderr:\n%s", ready, out)
			}
			if got := cmd.ProcessState.ExitCode(); got != c.status {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", got, c.status, out)
			}
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "godvm: stopped by "+c.name+": vCPU 0 at RIP 0x1000000") ||
				!strings.HasSuffix(last, "; disks flushed and closed") {
				t.Errorf("last line %q, want the stop report", last)
			}
		})
	}
}
