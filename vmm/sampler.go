package vmm

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"godvm/kvm"
)

// RIP sampling: the cheapest profiler there is for a guest that boots slowly
// under emulation. A sampler goroutine periodically asks each vCPU for its
// RIP (immediate_exit plus the kick signal); the vCPU thread answers when
// KVM_RUN returns EINTR and runs on. The samples feed the boot trace's
// profile and the timeout report ("stuck in default_idle").

// Sampling periods.
const (
	traceSamplePeriod   = 100 * time.Millisecond // with --boot-trace
	timeoutSamplePeriod = time.Second            // with --timeout only
	maxSamples          = 1 << 16                // per vCPU
	stuckSamples        = 5                      // last samples compared by the timeout report
)

// resetVectorIP is an AP's RIP before the BSP starts it (CS base 0xffff0000).
const resetVectorIP = 0xfff0

// sample records the vCPU's RIP and clears the kick (called on the vCPU
// thread after an EINTR). A stop kicks again after setting m.stopped, which
// the run loop checks next, so clearing immediate_exit here loses nothing.
func (v *vcpu) sample(run *kvm.Run) {
	run.SetImmediateExit(false)
	r, err := v.cpu.Regs()
	if err != nil || len(v.samples) >= maxSamples {
		return
	}
	v.samples = append(v.samples, r.RIP)
}

// startSampler samples every period until the machine stops.
func (m *Machine) startSampler(period time.Duration) {
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-m.stopCh:
				return
			case <-t.C:
				for _, v := range m.vcpus {
					if v.tid.Load() == 0 {
						continue
					}
					v.sampleReq.Store(true)
					m.kick(v)
				}
			}
		}
	}()
}

// function names addr's function (without the offset), or its address.
func (m *Machine) function(addr uint64) string {
	if addr == resetVectorIP {
		return "reset vector (an AP waiting for INIT/SIPI)"
	}
	s, ok := m.syms.Lookup(addr)
	if !ok {
		return fmt.Sprintf("%#x", addr)
	}
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	return s
}

// profile counts samples per function over all vCPUs, largest first.
func (m *Machine) profile(top int) []ProfileEntry {
	counts := map[string]int{}
	total := 0
	for _, v := range m.vcpus {
		for _, rip := range v.samples {
			counts[m.function(rip)]++
			total++
		}
	}
	var out []ProfileEntry
	for f, n := range counts {
		out = append(out, ProfileEntry{Function: f, Samples: n, Share: float64(n) / float64(total)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Samples != out[j].Samples {
			return out[i].Samples > out[j].Samples
		}
		return out[i].Function < out[j].Function
	})
	if len(out) > top {
		out = out[:top]
	}
	return out
}

// ProfileEntry is one line of the boot trace's RIP profile.
type ProfileEntry struct {
	Function string
	Samples  int
	Share    float64
}

// recent describes where a vCPU spent its last samples: "stuck in f" when
// they all fall in one function, else the functions seen.
func (m *Machine) recent(v *vcpu) string {
	n := len(v.samples)
	if n == 0 {
		return ""
	}
	last := v.samples[max(0, n-stuckSamples):]
	var fns []string
	seen := map[string]bool{}
	for _, rip := range last {
		f := m.function(rip)
		if !seen[f] {
			seen[f] = true
			fns = append(fns, f)
		}
	}
	if len(fns) == 1 && len(last) == stuckSamples {
		return "stuck in " + fns[0] + " for the last " + fmt.Sprint(stuckSamples) + " samples"
	}
	return "recently in " + strings.Join(fns, ", ")
}
