package main

import (
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godvm/devices/dsa"
	"godvm/vfio/vfiouser"
)

// TestDSAServerVDevs: one server, two --vdev sockets; each socket serves
// its own DSA of the shape its share gives (WQCAP), both at once.
func TestDSAServerVDevs(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	srv := startDSAServer(t, "--seccomp", "off", "--dsa", "wqs=4,wq-size=64,groups=2,engines=2",
		"--vdev", "socket="+a+",wqs=1,wq-size=16", "--vdev", "socket="+b+",wqs=3,wq-size=48")
	waitSocket(t, a)
	waitSocket(t, b)
	for _, c := range []struct {
		sock         string
		wqs, entries uint64
	}{{a, 1, 16}, {b, 3, 48}} {
		cl, err := vfiouser.Dial(c.sock, vfiouser.WithTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		var buf [8]byte
		if err := cl.ReadRegion(0, dsa.RegWQCap, buf[:]); err != nil {
			t.Fatal(err)
		}
		wqcap := binary.LittleEndian.Uint64(buf[:])
		if wqcap>>16&0xff != c.wqs || wqcap&0xffff != c.entries {
			t.Errorf("%s: WQCAP %#x, want %d WQs with %d entries", filepath.Base(c.sock), wqcap, c.wqs, c.entries)
		}
	}
	// Each connection was served by its own vdev (the log says which);
	// the log is read once the server has stopped.
	srv.cmd.Process.Kill()
	srv.wait(t, 10*time.Second)
	logs := srv.stderr.String()
	for _, v := range []string{"vdev=0", "vdev=1"} {
		if !strings.Contains(logs, "vfio-user client connected "+v) {
			t.Errorf("the server log shows no client on %s:\n%s", v, logs)
		}
	}
}

// TestDSAServerVDevErrors: bad --vdev/--parent combinations are refused
// with one line naming the problem.
func TestDSAServerVDevErrors(t *testing.T) {
	dir := t.TempDir()
	s := func(n string) string { return "socket=" + filepath.Join(dir, n) }
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--portal", "mapped"}, "give --socket PATH"},
		{[]string{"--vdev", "wqs=2"}, "socket=PATH is required"},
		{[]string{"--vdev", s("a") + ",bogus=1"}, `unknown key "bogus"`},
		{[]string{"--vdev", s("a") + ",wqs=x"}, "not a positive number"},
		{[]string{"--vdev", s("a") + ",wqs=9", "--vdev", s("b") + ",wqs=8"}, "only 7 of the parent's 16 WQs are left"},
		{[]string{"--vdev", s("a") + ",wq-size=300"}, "only 256 of the parent's 256 WQ entries"},
		{[]string{"--vdev", s("a"), "--vdev", s("a")}, "given twice"},
		{[]string{"--socket", "x", "--vdev", s("a")}, "one-guest shorthand"},
		{[]string{"--parent", "vfio=zz", "--vdev", s("a")}, "not a PCI address"},
		{[]string{"--parent", "vfio=0000:7f:1f.7", "--vdev", s("a")}, "no such PCI device"},
		{[]string{"--parent", "hardware", "--vdev", s("a")}, "want model or vfio="},
	}
	for _, c := range cases {
		srv := startDSAServer(t, c.args...)
		if err := srv.wait(t, 10*time.Second); err == nil {
			t.Errorf("%q: exit status 0", c.args)
			continue
		}
		out := strings.TrimSpace(srv.stderr.String())
		if !strings.Contains(out, c.want) || strings.Count(out, "\n") != 0 {
			t.Errorf("%q: stderr %q, want one line containing %q", c.args, out, c.want)
		}
	}
}
