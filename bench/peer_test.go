package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The peer scenario reports what QEMU says when it cannot run, and counts an
// agent pass when it can. A fake qemu on PATH plays both parts.
func TestPeerOutcomes(t *testing.T) {
	dir := t.TempDir()
	bz := filepath.Join(dir, "bzImage")
	os.WriteFile(bz, []byte("x"), 0o644)
	fake := filepath.Join(dir, QEMU)
	cases := []struct {
		script string
		status string
	}{
		{"echo 'Could not access KVM kernel module: No such file or directory' >&2; echo 'qemu-system-x86_64: failed to initialize kvm: No such file or directory' >&2; exit 1", StatusFailed},
		{"echo 'ok 1 - boot'; exit 1", StatusOK},
		{"echo booting; exit 7", StatusFailed},
		{"exit 0", StatusUnavailable},
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	for i, c := range cases {
		os.WriteFile(fake, []byte("#!/bin/sh\n"+c.script+"\n"), 0o755)
		if p, _ := exec.LookPath(QEMU); p != fake {
			t.Fatalf("fake qemu not first on PATH: %s", p)
		}
		rep := Run(context.Background(), []Scenario{PeerScenario()}, &Env{BzImage: bz, Quick: true}, Options{Runs: 1})
		s := rep.Scenarios[0]
		t.Logf("case %d: %s %s", i, s.Status, s.Reason)
		switch i {
		case 0:
			// Exit 1 with an error message and no agent output reads as a pass by
			// exit code alone; QEMU's real KVM failure exits 1 too, so the
			// scenario must look at the output.
			if s.Status != StatusUnavailable || s.Reason == "" {
				t.Errorf("KVM failure not reported: %+v", s)
			}
		case 1:
			if s.Status != StatusOK || len(s.Metrics) != 1 {
				t.Errorf("pass not counted: %+v", s)
			}
		case 2:
			if s.Status != StatusFailed {
				t.Errorf("agent failure not reported: %+v", s)
			}
		case 3:
			if s.Status != c.status {
				t.Errorf("%+v", s)
			}
		}
	}
}
