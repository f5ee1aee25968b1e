package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDSAServerProcess is not a test: it is `godvm dsa-server` in a child
// process for the tests below (GODVM_DSA_SERVER_ARGS holds its arguments,
// separated by \x1f).
func TestDSAServerProcess(t *testing.T) {
	args := os.Getenv("GODVM_DSA_SERVER_ARGS")
	if args == "" {
		return
	}
	app := newApp(os.Stdout, os.Stderr)
	os.Exit(exitStatus(app.Run(append([]string{"godvm", "dsa-server"}, strings.Split(args, "\x1f")...)), os.Stderr))
}

type dsaServer struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan error
}

func startDSAServer(t *testing.T, args ...string) *dsaServer {
	t.Helper()
	s := &dsaServer{cmd: exec.Command(os.Args[0], "-test.run=^TestDSAServerProcess$"), done: make(chan error, 1)}
	s.cmd.Env = append(os.Environ(), "GODVM_DSA_SERVER_ARGS="+strings.Join(args, "\x1f"))
	s.cmd.Stderr = &s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
	return s
}

// wait returns the server's exit error, or fails the test after d.
func (s *dsaServer) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // for Cleanup
		return err
	case <-time.After(d):
		t.Fatalf("dsa-server still running after %v; stderr:\n%s", d, s.stderr.String())
		return nil
	}
}

// waitSocket waits until something accepts connections at path.
func waitSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %s", path)
}

func sameSocket(t *testing.T, path string, want os.FileInfo) bool {
	fi, err := os.Lstat(path)
	return err == nil && os.SameFile(fi, want)
}

// A second dsa-server on a live socket path used to remove the first one's
// socket and take the path over; and a server that exits used to delete
// whatever socket was at its path by then.
func TestDSAServerLiveSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dsa.sock")
	a := startDSAServer(t, "--socket", sock)
	waitSocket(t, sock)
	aSock, _ := os.Lstat(sock)
	b := startDSAServer(t, "--socket", sock)
	var ee *exec.ExitError
	if err := b.wait(t, 10*time.Second); !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(b.stderr.String(), "in use") {
		t.Fatalf("second server on a live socket: %v, stderr %q", err, b.stderr.String())
	}
	if !sameSocket(t, sock, aSock) {
		t.Fatal("the first server's socket was replaced")
	}
	// The first server's socket goes away (someone removed it), a third
	// server starts on the path; when the first exits, the third's socket
	// must survive.
	os.Remove(sock)
	c := startDSAServer(t, "--socket", sock)
	waitSocket(t, sock)
	cSock, _ := os.Lstat(sock)
	a.cmd.Process.Signal(syscall.SIGTERM)
	if err := a.wait(t, 10*time.Second); err != nil {
		t.Fatalf("first server after SIGTERM: %v", err)
	}
	if !sameSocket(t, sock, cSock) {
		t.Fatal("the first server's exit removed the third server's socket")
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.wait(t, 10*time.Second)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind after SIGTERM: %v", err)
	}
}

// SIGHUP (the terminal or ssh session that started the server went away)
// used to kill dsa-server with its socket left behind.
func TestDSAServerSIGHUP(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dsa.sock")
	s := startDSAServer(t, "--socket", sock)
	waitSocket(t, sock)
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.wait(t, 10*time.Second)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind after SIGHUP: %v", err)
	}
	// A stale socket (a server killed with SIGKILL) is replaced.
	s = startDSAServer(t, "--socket", sock)
	waitSocket(t, sock)
	s.cmd.Process.Kill()
	s.wait(t, 10*time.Second)
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("SIGKILL should leave the socket: %v", err)
	}
	s = startDSAServer(t, "--socket", sock)
	waitSocket(t, sock)
}
