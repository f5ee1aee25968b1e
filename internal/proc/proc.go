// Package proc runs a command (the godvm binary, a peer VMM, dsa-server) for
// bench and e2e and renders what it printed: a buffer safe to read while the
// child writes, the exit status of a finished command, a line-by-line
// watch of its output, and the tail of long output in lines or in bytes.
package proc

import (
	"bufio"
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer safe for one writer (a child's stdout or stderr)
// and concurrent readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ExitStatus turns what cmd.Run or cmd.Wait returned into the exit status:
// 0 for nil, the child's status for an *exec.ExitError (-1 when a signal
// killed it), and err itself when the command did not run or wait failed.
func ExitStatus(err error) (int, error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	default:
		return 0, err
	}
}

// WatchLines starts cmd with its stdout piped, calls each with every line the
// child prints (each may signal the child), and waits for it. It returns all
// of stdout and the exit status; err is set only when the command could not
// start or wait failed for another reason than its exit status.
func WatchLines(cmd *exec.Cmd, each func(line string)) (stdout string, status int, err error) {
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, err
	}
	var out strings.Builder
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		each(line)
	}
	status, err = ExitStatus(cmd.Wait())
	return out.String(), status, err
}

// TailLines is the last n lines of s.
func TailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TailBytes is the last n bytes of s without surrounding space, after "..."
// when s was cut: for output quoted inside a one-line error.
func TailBytes(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
