package e2e

// SIGTERM to `godvm run` while the guest is busy: the guest stops, godvm
// flushes and closes its disks and exits with 143 (128 + SIGTERM), and what
// the guest wrote before the signal is in the image.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"godvm/internal/proc"
)

// TestSignalFlushesDisk runs the agent's virtio-blk-hold scenario: a
// pattern written at sector 2048 with a plain write (no FUA, no flush), then
// the guest keeps running with the disk open. SIGTERM goes the moment the
// scenario says the write completed, so only godvm's own stop can have
// finished the job: exit 143, the stop reported, and the pattern in the
// image.
func TestSignalFlushesDisk(t *testing.T) {
	kernel := testKernel(t)
	img := newDiskImage(t, "rw.img", 8<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	args := []string{"run", "--kernel", kernel, "--memory", defaultMemory, "--timeout", "240s",
		"--cmdline", "quiet godvm_agent.run=virtio-blk-hold", "--disk", img + ",id=godvm-rw"}
	cmd := exec.CommandContext(ctx, godvmBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	signalled := false
	console, status, err := proc.WatchLines(cmd, func(line string) {
		if !signalled && strings.HasPrefix(printkTime.ReplaceAllString(line, ""), "# blk_hold_written=1") {
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Error(err)
			}
			signalled = true
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	k := ParseKTAP(console)
	if !signalled {
		t.Fatalf("the virtio-blk-hold scenario never wrote (status %d):\n%s\nstderr:\n%s", status, proc.TailLines(console, 30), stderr.String())
	}
	if _, done := k.Result("virtio-blk-hold"); done {
		t.Fatalf("the scenario ended before the signal stopped the guest (status %d): the test proves nothing\n%s", status, proc.TailLines(console, 20))
	}
	if status != 143 {
		t.Fatalf("exit status %d, want 143 (128 + SIGTERM)\nconsole:\n%s\nstderr:\n%s", status, proc.TailLines(console, 30), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "godvm: stopped by SIGTERM: vCPU 0 at RIP") ||
		!strings.HasSuffix(last, "; disks flushed and closed") {
		t.Errorf("stderr ends %q, want the stop report", last)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if got := b[blkPatternSector*512 : blkPatternSector*512+4096]; !bytes.Equal(got, blkPattern()) {
		t.Fatalf("image at sector %d: % x..., want the pattern the guest wrote before the signal", blkPatternSector, got[:32])
	}
}
