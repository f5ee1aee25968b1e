package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"godvm/internal/proc"
)

// QEMU is the peer VMM godvm is compared with.
const QEMU = "qemu-system-x86_64"

// PeerScenario boots the same test kernel with Debian's QEMU under KVM, the
// agent's boot scenario reporting through QEMU's isa-debug-exit device on
// the same port godvm uses. QEMU exits with (value<<1)|1, so a guest pass
// is exit status 1. The device is one byte wide: four bytes would also take
// the boot-timer port 0xf5 and end QEMU at the agent's first write. On hosts where QEMU cannot boot the guest, the scenario
// is reported unavailable with QEMU's own error.
func PeerScenario() Scenario {
	return Scenario{
		Name:        "peer",
		Description: "the same kernel booted by " + QEMU + " -enable-kvm: time to the guest agent's result",
		Check: func(env *Env) error {
			if _, err := exec.LookPath(QEMU); err != nil {
				return fmt.Errorf("%s is not installed (apt-get install qemu-system-x86)", QEMU)
			}
			if env.BzImage == "" {
				return errors.New("no bzImage of the test kernel (QEMU's -kernel needs one)")
			}
			if _, err := os.Stat(env.BzImage); err != nil {
				return err
			}
			return nil
		},
		Run: runPeer,
	}
}

func runPeer(ctx context.Context, env *Env, r *Recorder) error {
	limit := 10 * time.Minute
	if env.Quick {
		limit = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	args := []string{"-enable-kvm", "-cpu", "host", "-m", "512", "-smp", "1", "-nographic", "-no-reboot",
		"-nodefaults", "-serial", "stdio",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x01",
		"-kernel", env.BzImage,
		"-append", "console=ttyS0 noxsave godvm_agent.run=boot"}
	if env.Initrd != "" {
		args = append(args, "-initrd", env.Initrd)
	}
	cmd := exec.CommandContext(ctx, QEMU, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0).Seconds()
	r.Info("command", QEMU+" "+strings.Join(args, " "))
	status, werr := proc.ExitStatus(err)
	switch {
	case ctx.Err() != nil:
		r.Info("last output", proc.TailBytes(out.String(), 400))
		return fmt.Errorf("%s did not finish within %s", QEMU, limit)
	case err == nil:
		return Unavailable("%s exited 0 without the guest agent's result: %s", QEMU, proc.TailBytes(out.String(), 300))
	case werr == nil && status == 1 && agentPassed.MatchString(out.String()):
		// isa-debug-exit: (0<<1)|1, the agent's pass. QEMU's own failures
		// exit 1 too, hence the KTAP line is required as well.
		return r.Add("time to agent result", "s", wall)
	case werr == nil && status&1 == 1 && status > 1:
		return fmt.Errorf("guest agent under %s reported failure %d", QEMU, status>>1)
	default:
		return Unavailable("%s cannot boot the guest here: %s", QEMU, firstError(out.String(), err))
	}
}

// agentPassed matches the agent's KTAP result line for the boot scenario.
var agentPassed = regexp.MustCompile(`(?m)^ok \d+ (- )?boot\b`)

// firstError picks QEMU's own complaint from its output.
func firstError(out string, err error) string {
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.Contains(l, "qemu-system") || strings.Contains(strings.ToLower(l), "error") || strings.Contains(l, "KVM") {
			return l
		}
	}
	if s := proc.TailBytes(out, 200); s != "" {
		return s
	}
	return err.Error()
}
