package proc

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestTails(t *testing.T) {
	s := "a\nb\nc\n"
	if got := TailLines(s, 2); got != "b\nc" {
		t.Errorf("TailLines %q", got)
	}
	if got := TailLines(s, 5); got != "a\nb\nc" {
		t.Errorf("TailLines of short output %q", got)
	}
	if got := TailBytes("  0123456789 \n", 4); got != "...6789" {
		t.Errorf("TailBytes %q", got)
	}
	if got := TailBytes("abc\n", 4); got != "abc" {
		t.Errorf("TailBytes of short output %q", got)
	}
}

func TestExitStatusAndWatchLines(t *testing.T) {
	var seen []string
	out, status, err := WatchLines(exec.Command("sh", "-c", "echo one; echo two; exit 3"), func(l string) { seen = append(seen, l) })
	if err != nil || status != 3 || out != "one\ntwo\n" || strings.Join(seen, ",") != "one,two" {
		t.Fatalf("out %q status %d err %v lines %q", out, status, err, seen)
	}
	if s, err := ExitStatus(nil); s != 0 || err != nil {
		t.Errorf("nil: %d %v", s, err)
	}
	other := errors.New("not started")
	if _, err := ExitStatus(other); err != other {
		t.Errorf("a non-exit error is passed on: %v", err)
	}
	if _, _, err := WatchLines(exec.Command("/nonexistent/godvm"), func(string) {}); err == nil {
		t.Error("a missing binary started")
	}
	var b Buffer
	b.Write([]byte("x"))
	if b.String() != "x" {
		t.Error("Buffer")
	}
}
