package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if err := newApp(&out, &errb).Run([]string{"godvm", "run", "--help"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"--kernel", "--initrd", "--cmdline", "--cpus", "--memory", "--timeout", "--boot-trace", "--verbose", "--no-host-defaults", "--system-map"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("run --help lacks %s", f)
		}
	}
}
