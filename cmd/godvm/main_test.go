package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"godvm/internal/testkernel"
	"godvm/vmm"
)

// runApp runs godvm in-process and returns its exit status and stderr.
func runApp(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	app := newApp(&out, &errb)
	status := exitStatus(app.Run(append([]string{"godvm"}, args...)), &errb)
	return status, errb.String()
}

func TestBadInputOneLine(t *testing.T) {
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "notes.txt")
	os.WriteFile(notKernel, []byte("not a kernel"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "--kernel is required"},
		{[]string{"run", "--kernel", filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"run", "--kernel", notKernel}, "not an x86-64 Linux kernel"},
		{[]string{"run", "--kernel", notKernel, "--memory", "lots"}, "--memory"},
		{[]string{"run", "--kernel", notKernel, "--cpus", "0"}, "--cpus"},
		{[]string{"run", "--kernel", notKernel, "--timeout", "-5s"}, "--timeout"},
		{[]string{"run", "--no-such-flag"}, "no-such-flag"},
		{[]string{"run", "--kernel", notKernel, "extra"}, "unexpected argument"},
		{[]string{"run", "--kernel", notKernel, "--seccomp", "maybe"}, "--seccomp \"maybe\": want on or off"},
		{[]string{"dsa-server", "--socket", filepath.Join(dir, "s"), "--seccomp", "maybe"}, "--seccomp \"maybe\": want on or off"},
		{[]string{"frobnicate"}, "unknown command"},
	}
	for _, c := range cases {
		status, stderr := runApp(t, c.args...)
		if status != 1 {
			t.Errorf("%v: status %d, want 1 (stderr %q)", c.args, status, stderr)
		}
		if !strings.Contains(stderr, c.want) {
			t.Errorf("%v: stderr %q lacks %q", c.args, stderr, c.want)
		}
		if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
			t.Errorf("%v: %d-line error %q", c.args, n+1, stderr)
		}
		if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
			t.Errorf("%v: stack trace: %q", c.args, stderr)
		}
	}
}

// A bzImage whose payload godvm decompresses: what is wrong with it is one
// line too, found before the machine is built (--no-host-defaults keeps
// the probe out; the kernel is refused before /dev/kvm is opened).
func TestBadBzImageOneLine(t *testing.T) {
	dir := t.TempDir()
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	notELF := write("not-elf", testkernel.BzImage(gz([]byte("a text file, not a vmlinux"))))
	img := testkernel.BzImage(gz(testkernel.TinyELF()))
	binary.LittleEndian.PutUint32(img[0x248:], 1<<20) // payload_offset past the end
	offset := write("offset", img)
	bomb := write("bomb", testkernel.BzImage(binary.LittleEndian.AppendUint32([]byte("\xfd7zXZ\x00"), 0xffffffff)))
	for _, c := range []struct {
		kernel, want string
	}{
		{notELF, "gzip payload decompressed to 26 bytes that are not a loadable vmlinux"},
		{offset, "beyond the end of the file"},
		{bomb, "declares 4096 MiB decompressed, more than godvm's limit of 1024 MiB"},
	} {
		status, stderr := runApp(t, "run", "--kernel", c.kernel, "--no-host-defaults")
		if status != 1 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%s: status %d stderr %q, want one line with %q", filepath.Base(c.kernel), status, stderr, c.want)
		}
	}
}

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if err := newApp(&out, &errb).Run([]string{"godvm", "run", "--help"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"--kernel", "--initrd", "--cmdline", "--cpus", "--memory", "--timeout", "--boot-trace", "--verbose", "--no-host-defaults", "--dsa-path", "--system-map", "--guest-decompress", "--seccomp"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("run --help lacks %s", f)
		}
	}
	// The exit statuses, the signals' and seccomp's included.
	for _, s := range []string{"Exit status:", "130  SIGINT", "143: SIGTERM", "159  the seccomp filters"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("run --help lacks %q", s)
		}
	}
}

// Device flag values are parsed before the machine is built; a comma
// inside a value does not split it.
//
// The cases that parse are stopped by one more device setup step, added
// last, so no guest is started whether or not /dev/kvm exists (the test
// used to skip where it does); --no-host-defaults keeps the KVM probe out.
func TestDeviceFlags(t *testing.T) {
	const parsed = "device flags parsed; stopping before the machine is built"
	saved := deviceSetup
	deviceSetup = append(deviceSetup[:len(deviceSetup):len(deviceSetup)], func(*cli.Context, *vmm.Config) error {
		return errors.New(parsed)
	})
	defer func() { deviceSetup = saved }()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, testkernel.TinyELF(), 0o644)
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, make([]byte, 4096), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--disk", img + ",readonly"}, parsed},
		{[]string{"--disk", ""}, "missing image path"},
		{[]string{"--disk", "img,bogus=1"}, "--disk"},
		{[]string{"--net", "nope"}, "--net"},
		{[]string{"--dsa", "wqs=abc"}, "--dsa"},
		{[]string{"--dsa", "default"}, parsed},
		{[]string{"--virtio-console", ""}, "--virtio-console"},
	} {
		status, stderr := runApp(t, append([]string{"run", "--kernel", kernel, "--no-host-defaults"}, c.args...)...)
		if status != 1 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: status %d stderr %q, want one line with %q", c.args, status, stderr, c.want)
		}
	}
}
