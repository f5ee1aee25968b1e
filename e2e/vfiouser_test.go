package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"godvm/internal/proc"
	"godvm/internal/testkernel"
	"godvm/vmm/probe"
)

const vfioUserDSA = "wqs=8,wq-size=128,groups=4,engines=4,version=1.0"

// dsaServer starts `godvm dsa-server` in its own process and waits for its
// socket. The process is killed at the end of the test.
func dsaServer(t *testing.T, portal string) (sock string, server *exec.Cmd, logs *proc.Buffer) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "dsa.sock")
	server, logs = startDSAServer(t, []string{sock}, "--socket", sock, "--dsa", vfioUserDSA, "--portal", portal)
	return sock, server, logs
}

// startDSAServer starts `godvm dsa-server args...` and waits until each
// of socks exists; the process is killed at the end of the test.
func startDSAServer(t *testing.T, socks []string, args ...string) (server *exec.Cmd, logs *proc.Buffer) {
	t.Helper()
	logs = &proc.Buffer{}
	server = exec.Command(godvmBinary(t), append([]string{"dsa-server"}, args...)...)
	server.Stdout, server.Stderr = logs, logs
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		server.Process.Kill()
		server.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range socks {
		for {
			if _, err := os.Stat(s); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dsa-server did not create %s:\n%s", s, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return server, logs
}

// TestVfioUserDSA runs the agent's dsa scenario (idxd probe, accel-config
// style configuration, dmatest, ...) against the software DSA served by a
// separate `godvm dsa-server` process, exactly as TestDSA does against the
// built-in device: with the portal BAR mapped into the guest (portal
// writes do not exit to the server) and trapped (every portal write is a
// message), on the path godvm picks here; and mapped on the paravirtual
// path, which reaches the passthrough portal through the same seam.
func TestVfioUserDSA(t *testing.T) {
	cases := []struct {
		name, portal string
		cpus         int
		path         probe.DSAPath
	}{
		{"mapped/2cpus/auto", "mapped", 2, ""},
		{"trapped/1cpu/auto", "trapped", 1, ""},
		{"mapped/2cpus/pv", "mapped", 2, probe.DSAPV},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			testKernel(t) // skips without /dev/kvm
			sock, _, logs := dsaServer(t, c.portal)
			runDSA(t, dsaRun{
				CPUs:   c.cpus,
				Path:   c.path,
				Args:   []string{"--vfio-user", sock},
				OnFail: func() { t.Logf("dsa-server log:\n%s", proc.TailLines(logs.String(), 30)) },
				// A second run gets a server of its own.
				Renew: func(a *agentRun) {
					var next string
					next, _, logs = dsaServer(t, c.portal)
					a.Args = slices.Clone(a.Args)
					for i := range a.Args {
						if a.Args[i] == sock {
							a.Args[i] = next
						}
					}
				},
			})
		})
	}
}

// TestVfioUserServerKilled kills the server once the guest's agent has
// started: the VM must keep running to its own end (the agent reports,
// the guest powers off; no godvm error, no crash) and godvm must say that
// the device failed.
func TestVfioUserServerKilled(t *testing.T) {
	kernel := testKernel(t)
	sock, server, _ := dsaServer(t, "mapped")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	args := []string{"run", "--kernel", kernel, "--cpus", "2", "--timeout", "240s",
		"--cmdline", "godvm_agent.run=dsa", "--vfio-user", sock}
	cmd := exec.CommandContext(ctx, godvmBinary(t), args...)
	var stderr proc.Buffer
	cmd.Stderr = &stderr
	killed := false
	console, status, err := proc.WatchLines(cmd, func(line string) {
		// The agent has started (KTAP header): the guest is mid-run.
		if !killed && strings.Contains(line, "KTAP version 1") {
			server.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	})
	switch {
	case ctx.Err() != nil:
		t.Fatalf("godvm hung after the server died\nconsole:\n%s\nstderr:\n%s", proc.TailLines(console, 40), stderr.String())
	case err != nil:
		t.Fatal(err)
	}
	if !killed {
		t.Fatalf("the agent never started\nconsole:\n%s\nstderr:\n%s", proc.TailLines(console, 40), stderr.String())
	}
	// 0 (the scenario survived) or 3 (the guest reported the DSA broken) are
	// the guest's own verdicts; 1 (godvm error) or 2 (guest panic) are not.
	if status != 0 && status != 3 {
		t.Fatalf("exit status %d after the server died, want the guest's own result (0 or 3)\nconsole:\n%s\nstderr:\n%s",
			status, proc.TailLines(console, 40), stderr.String())
	}
	if k := ParseKTAP(console); k.Plan < 0 || len(k.Results) == 0 {
		t.Errorf("the agent did not finish its report after the server died:\n%s", proc.TailLines(console, 40))
	}
	for _, want := range []string{"vfio-user server " + sock + " gone; device failed", "vfio-user device " + sock + " failed"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("godvm's stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestVfioUserBadInput needs no KVM: a missing socket is one clear line.
func TestVfioUserBadInput(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "absent.sock")
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, testkernel.TinyELF(), 0o644) // gets past the kernel checks
	out := runGodvm(t, 30*time.Second, "run", "--kernel", kernel, "--vfio-user", sock)
	if out.Status != 1 {
		t.Fatalf("status %d, want 1\nstderr:\n%s", out.Status, out.Stderr)
	}
	if !strings.Contains(out.Stderr, sock) || strings.Count(strings.TrimSpace(out.Stderr), "\n") != 0 {
		t.Errorf("want one line naming %s, got:\n%s", sock, out.Stderr)
	}
	out = runGodvm(t, 30*time.Second, "dsa-server", "--socket", filepath.Join(t.TempDir(), "s.sock"), "--dsa", "wqs=99")
	if out.Status != 1 || !strings.Contains(out.Stderr, "wqs=99") {
		t.Errorf("bad --dsa: status %d stderr %q", out.Status, out.Stderr)
	}
}
