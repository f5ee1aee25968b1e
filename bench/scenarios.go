package bench

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Scenarios returns every scenario in the order they run.
func Scenarios() []Scenario {
	return []Scenario{BootScenario(), MemoryScenario(), DSAEngineScenario(), DSAGuestScenario(), PeerScenario()}
}

func guestLimit(env *Env) time.Duration {
	if env.Quick {
		return 3 * time.Minute
	}
	return 10 * time.Minute
}

// BootScenario measures godvm booting the test kernel to its agent.
func BootScenario() Scenario {
	return Scenario{
		Name:        "boot",
		Description: "godvm start to the guest agent's boot-timer write; VMM share of wall time; exits by reason",
		Check:       CheckGuest,
		Run: func(ctx context.Context, env *Env, r *Recorder) error {
			g, err := RunGuest(ctx, env, guestLimit(env), "--kernel", env.Kernel, "--cmdline", "godvm_agent.run=boot")
			if err != nil {
				return err
			}
			if g.Trace.BootTime == 0 {
				return fmt.Errorf("the guest agent never wrote the boot timer")
			}
			r.Add("time to agent start", "s", g.Trace.BootTime.Seconds())
			r.Add("wall time", "s", g.Wall.Seconds())
			r.Add("vCPU time outside KVM_RUN", "%", 100*g.Trace.OutsideShare)
			r.Add("exits", "count", float64(g.Trace.TotalExits()))
			for k, v := range g.Trace.Exits {
				r.Add("exits "+k, "count", float64(v))
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
			// Under DSA load where the guest can drive the DSA; elsewhere the
			// same machine (with its DSA) running only the boot scenario.
			cmdline, load := dsaCmdline, "DSA load (dmatest)"
			if why := dsaDataPath(); why != nil {
				cmdline, load = "godvm_agent.run=boot", "no DSA load: "+why.Error()
			}
			r.Info("load", load)
			g, err := RunGuest(ctx, env, guestLimit(env), "--kernel", env.Kernel, "--dsa", "default", "--cmdline", cmdline)
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

// dsaCmdline runs the agent's dsa scenario (idxd configuration, dmatest).
const dsaCmdline = "godvm_agent.run=dsa"

// DSAGuestScenario runs the kernel's dmatest on the built-in software DSA
// and reports throughput and exits per descriptor.
func DSAGuestScenario() Scenario {
	return Scenario{
		Name:        "dsa-guest",
		Description: "dmatest memcpy in the guest kernel on the software DSA: throughput and VM exits per descriptor",
		Check:       CheckDSAGuest,
		Run: func(ctx context.Context, env *Env, r *Recorder) error {
			g, err := RunGuest(ctx, env, guestLimit(env), "--kernel", env.Kernel, "--dsa", "default", "--cmdline", dsaCmdline)
			if err != nil {
				return err
			}
			d, ok := ParseDmatest(g.Output)
			if !ok {
				return fmt.Errorf("dmatest printed no summary: %s", tail(g.Output, 300))
			}
			if d.Failures > 0 {
				return fmt.Errorf("dmatest: %d of %d tests failed", d.Failures, d.Tests)
			}
			r.Add("dmatest throughput", "MB/s", d.KBps/1000)
			r.Add("dmatest iops", "ops/s", d.IOPS)
			r.Add("exits per descriptor", "count", float64(g.Trace.TotalExits())/float64(d.Tests))
			r.Info("exits", fmtExits(g.Trace.Exits))
			return nil
		},
	}
}

func fmtExits(m map[string]uint64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	return strings.Join(parts, " ")
}
