package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"godvm/internal/proc"
	"godvm/vmm/probe"
)

// Scenarios returns every scenario in the order they run.
func Scenarios() []Scenario {
	return []Scenario{BootScenario(), MemoryScenario(), DSAEngineScenario(), DSAMediatorScenario(), DSAGuestScenario(), PeerScenario()}
}

// guestLimit bounds one guest run. A guest cannot be made shorter in quick
// mode, only fail sooner: on kvm_pvm a dsa run takes 60-80 s alone on two
// cores and twice that beside other work, so quick allows 5 minutes.
func guestLimit(env *Env) time.Duration {
	if env.Quick {
		return 5 * time.Minute
	}
	return 10 * time.Minute
}

// GuestCPUs is the vCPU count of every guest the bench boots: that of
// `make run`, and the one the boot-time target is stated for.
const GuestCPUs = 2

// guestArgs are `godvm run`'s arguments for a bench guest: the test kernel,
// GuestCPUs vCPUs, godvm's default RAM, the agent's command line, then
// extra (devices).
func guestArgs(env *Env, cmdline string, extra ...string) []string {
	a := []string{"--kernel", env.Kernel, "--cpus", strconv.Itoa(GuestCPUs), "--cmdline", cmdline}
	return append(a, extra...)
}

// BootScenario measures godvm booting the test kernel to its agent.
func BootScenario() Scenario {
	return Scenario{
		Name:        "boot",
		Description: "godvm start to the guest agent's boot-timer write; VMM share of wall time; exits by reason",
		Check:       CheckGuest,
		Run: func(ctx context.Context, env *Env, r *Recorder) error {
			g, err := RunGuest(ctx, env, guestLimit(env), guestArgs(env, "godvm_agent.run=boot")...)
			if err != nil {
				return err
			}
			if g.Trace.BootTime == 0 {
				return fmt.Errorf("the guest agent never wrote the boot timer")
			}
			r.Info("guest", fmt.Sprintf("%d vCPUs, agent scenario boot", GuestCPUs))
			r.Add("time to agent start", "s", g.Trace.BootTime.Seconds())
			r.Add("wall time", "s", g.Wall.Seconds())
			r.Add("vCPU time outside KVM_RUN", "%", 100*g.Trace.OutsideShare)
			r.Add("exits", "count", float64(g.Trace.TotalExits()))
			reasons := make([]string, 0, len(g.Trace.Exits))
			for k := range g.Trace.Exits {
				reasons = append(reasons, k)
			}
			sort.Strings(reasons) // the same metric order in every report
			for _, k := range reasons {
				r.Add("exits "+k, "count", float64(g.Trace.Exits[k]))
			}
			return nil
		},
	}
}

// MemoryScenario measures the VMM's own resident memory (guest RAM excluded)
// when the guest agent starts and at its peak under DSA load.
func MemoryScenario() Scenario {
	return Scenario{
		Name:        "memory",
		Description: "godvm RSS without guest RAM (one software DSA attached): at the agent's start, and the peak while the guest runs dmatest where it can",
		Check:       CheckGuest,
		Run: func(ctx context.Context, env *Env, r *Recorder) error {
			// Under DSA load over the first data path this host has;
			// without one, the same machine (with its DSA) only booting.
			cmdline, extra, load := "godvm_agent.run=boot", []string{"--dsa", "default"}, "no DSA load: "
			if paths, why := usableDSAPaths(env); len(paths) > 0 {
				p := paths[0]
				cmdline, extra = dsaCmdline(), append(extra, pathArgs(env, p)...)
				load = fmt.Sprintf("DSA load: dmatest, %d x %d-byte copies over the %s path", dmatestIters, dmatestBuf, p.Name)
			} else {
				load += why
			}
			r.Info("load", load)
			g, err := RunGuest(ctx, env, guestLimit(env), guestArgs(env, cmdline, extra...)...)
			if err != nil {
				return err
			}
			if g.VMMKBAtAgent == 0 {
				return fmt.Errorf("no memory sample was taken after the agent started")
			}
			r.Add("VMM RSS at agent start", "MiB", float64(g.VMMKBAtAgent)/1024)
			r.Add("VMM RSS peak", "MiB", float64(g.VMMKBPeak)/1024)
			r.Add("guest RAM resident (peak)", "MiB", float64(g.GuestKBPeak)/1024)
			return nil
		},
	}
}

// dmatest's size in the guest, given to the agent (images/agent: its dsa
// scenario runs the kernel's dmatest with these). Small buffers on
// purpose: dmatest fills and verifies every byte in guest ring 0, which on
// kvm_pvm is emulated about 1000x slower; the bench measures descriptors.
const (
	dmatestBuf   = 256
	dmatestIters = 1000
)

// dsaCmdline runs the agent's dsa scenario (idxd configuration, checks,
// dmatest, WQ and device disable).
func dsaCmdline() string {
	return fmt.Sprintf("godvm_agent.run=dsa godvm_agent.dmatest_buf=%d godvm_agent.dmatest_iters=%d", dmatestBuf, dmatestIters)
}

// DSAPath is one way the guest's descriptors reach godvm's DSA (godvm run
// --dsa-path NAME; vmm/probe's DSAPath).
type DSAPath struct {
	Name string
	// Check says why this host cannot use the path (nil: it can).
	Check func(env *Env) error
	// SubmitExits counts, in a run's trace, the VM exits its descriptor
	// submissions took; ExitsWhat says what that is, for the report.
	SubmitExits func(Trace) uint64
	ExitsWhat   string
}

// DSAPaths are the data paths dsa-guest compares, in order: each one this
// host can give a guest (vmm/probe), the pv path only with a godvm that
// has --dsa-path.
func DSAPaths() []DSAPath {
	internalErrors := func(t Trace) uint64 { return t.Exits["KVM_EXIT_INTERNAL_ERROR"] }
	return []DSAPath{{
		// The guest CPU executes MOVDIR64B; a store to godvm's emulated
		// portal still stops the vCPU with an emulation failure that godvm
		// completes: Intel with MOVDIR64B under kvm_intel.
		Name:        string(probe.DSANative),
		Check:       func(*Env) error { return checkDSAPath(probe.DSANative) },
		SubmitExits: internalErrors,
		ExitsWhat:   "KVM_EXIT_INTERNAL_ERROR",
	}, {
		// Each guest MOVDIR64B/ENQCMDS stops the vCPU with an emulation
		// failure that godvm completes (vmm/emulate): kvm_pvm.
		Name:        string(probe.DSAEmulated),
		Check:       func(*Env) error { return checkDSAPath(probe.DSAEmulated) },
		SubmitExits: internalErrors,
		ExitsWhat:   "KVM_EXIT_INTERNAL_ERROR",
	}, {
		// The patched test kernel hands each store to godvm with one
		// 4-byte IN from port 0xf6: one KVM_EXIT_IO per store, counted
		// by godvm as pv-movdir64b / pv-enqcmds. Possible on every host.
		Name: string(probe.DSAPV),
		Check: func(env *Env) error {
			if !hasDSAPathFlag(env) {
				return errors.New("this godvm has no run --dsa-path flag")
			}
			return checkDSAPath(probe.DSAPV)
		},
		SubmitExits: func(t Trace) uint64 { return t.Emulated["pv-movdir64b"] + t.Emulated["pv-enqcmds"] },
		ExitsWhat:   "paravirtual port 0xf6 (KVM_EXIT_IO, pv-movdir64b + pv-enqcmds)",
	}}
}

// hasDSAPathFlag says whether env's godvm binary has `run --dsa-path`
// (the bench may run a godvm of another vintage: GODVM_BINARY).
func hasDSAPathFlag(env *Env) bool {
	out, _ := exec.Command(env.Godvm, "run", "--help").CombinedOutput()
	return strings.Contains(string(out), "--dsa-path")
}

// pathArgs are the godvm run flags that choose p: none where godvm has no
// --dsa-path (an older godvm: its only path is the one its probe picks).
func pathArgs(env *Env, p DSAPath) []string {
	if hasDSAPathFlag(env) {
		return []string{"--dsa-path", p.Name}
	}
	return nil
}

// usableDSAPaths returns the paths this host can use, or why none.
func usableDSAPaths(env *Env) ([]DSAPath, string) {
	var ok []DSAPath
	var why []string
	for _, p := range DSAPaths() {
		if err := p.Check(env); err != nil {
			why = append(why, p.Name+": "+err.Error())
			continue
		}
		ok = append(ok, p)
	}
	return ok, strings.Join(why, "; ")
}

// DSAGuestScenario runs the kernel's dmatest on the built-in software DSA,
// once per data path, and reports descriptors per second and the exits
// each descriptor took on that path.
func DSAGuestScenario() Scenario {
	return Scenario{
		Name:        "dsa-guest",
		Description: "dmatest memcpy in the guest kernel on the software DSA, per data path: descriptors/s and submission exits per descriptor",
		Check: func(env *Env) error {
			if err := CheckGuest(env); err != nil {
				return err
			}
			if paths, why := usableDSAPaths(env); len(paths) == 0 {
				return fmt.Errorf("no DSA data path on this host: %s", why)
			}
			return nil
		},
		Run: func(ctx context.Context, env *Env, r *Recorder) error {
			paths, why := usableDSAPaths(env)
			if why != "" {
				r.Info("paths not measured", why)
			}
			r.Info("dmatest", fmt.Sprintf("%d iterations of %d-byte copies, 1 thread, verification on; %d vCPUs", dmatestIters, dmatestBuf, GuestCPUs))
			for _, p := range paths {
				if err := runDSAGuest(ctx, env, r, p, pathArgs(env, p)); err != nil {
					return fmt.Errorf("%s path: %v", p.Name, err)
				}
			}
			return nil
		},
	}
}

// agentPath is the data path the guest agent says it used ("# dsa_path=").
var agentPath = regexp.MustCompile(`(?m)dsa_path=(\S+)`)

func runDSAGuest(ctx context.Context, env *Env, r *Recorder, p DSAPath, args []string) error {
	extra := append([]string{"--dsa", "default"}, args...)
	g, err := RunGuest(ctx, env, guestLimit(env), guestArgs(env, dsaCmdline(), extra...)...)
	if err != nil {
		return err
	}
	d, ok := ParseDmatest(g.Output)
	if !ok {
		return fmt.Errorf("dmatest printed no summary: %s", proc.TailBytes(g.Output, 300))
	}
	if d.Failures > 0 {
		return fmt.Errorf("dmatest: %d of %d tests failed", d.Failures, d.Tests)
	}
	if d.Tests < dmatestIters {
		return fmt.Errorf("dmatest ran %d tests, asked for %d (does the agent take godvm_agent.dmatest_iters?)", d.Tests, dmatestIters)
	}
	// With --dsa-path given, the agent must have been on that path.
	if m := agentPath.FindStringSubmatch(g.Output); m != nil && len(args) > 0 && m[1] != p.Name {
		return fmt.Errorf("the guest agent reports dsa_path=%s", m[1])
	}
	sub := p.SubmitExits(g.Trace)
	if sub == 0 {
		return fmt.Errorf("no %s exits in the trace: the descriptors did not take the %s path", p.ExitsWhat, p.Name)
	}
	path := ", " + p.Name + " path"
	r.Add("descriptors/s (dmatest iops)"+path, "ops/s", d.IOPS)
	r.Add("dmatest throughput"+path, "MB/s", d.KBps/1000)
	r.Add("exits per descriptor"+path, "count", float64(sub)/float64(d.Tests))
	r.Info("exits per descriptor"+path, p.ExitsWhat+" exits of the whole run / dmatest tests (the agent's other checks submit a few more)")
	r.Info("exits"+path, fmtCounts(g.Trace.Exits))
	r.Info("emulated or paravirtual"+path, fmtCounts(g.Trace.Emulated))
	return nil
}

// fmtCounts renders counts as "a=3 b=1", sorted by name.
func fmtCounts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
