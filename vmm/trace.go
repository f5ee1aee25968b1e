package vmm

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"godvm/kvm"
)

// Trace is the --boot-trace report.
type Trace struct {
	BootTime     time.Duration // to the agent's boot-timer write (0: never)
	Wall         time.Duration
	Exits        map[string]uint64 // by exit reason
	OutsideShare float64           // share of vCPU time spent outside KVM_RUN
	Emulated     string            // emulated instructions by kind, then paravirtual stores (pv-*)
	DSAPath      string            // Config.DSAPath
	UnknownPorts map[string]uint64 // "in 0x61" -> count
	UnknownMMIO  map[string]uint64 // page -> count
	SerialBytes  uint64
	Profile      []ProfileEntry // RIP samples by function, largest first
}

func (m *Machine) trace(wall time.Duration) *Trace {
	t := &Trace{Wall: wall, Exits: map[string]uint64{}, UnknownPorts: map[string]uint64{}, UnknownMMIO: map[string]uint64{}}
	t.BootTime, _ = m.bootTimer.Elapsed()
	for i := range m.stats.exits {
		if n := m.stats.exits[i].Load(); n > 0 {
			t.Exits[kvm.ExitReason(i).String()] = n
		}
	}
	if n := m.stats.otherExt.Load(); n > 0 {
		t.Exits["other"] = n
	}
	var out, ran int64
	for _, v := range m.vcpus {
		out += v.outNs
		ran += int64(v.ranFor)
	}
	if ran > 0 {
		t.OutsideShare = float64(out) / float64(ran)
	}
	t.Emulated = m.emu.Stats.String()
	t.DSAPath = m.cfg.DSAPath
	m.stats.mu.Lock()
	for k, n := range m.stats.ports {
		dir := "in"
		if k.write {
			dir = "out"
		}
		t.UnknownPorts[fmt.Sprintf("%s %#x", dir, k.port)] = n
	}
	for a, n := range m.stats.mmio {
		t.UnknownMMIO[fmt.Sprintf("%#x", a)] = n
	}
	m.stats.mu.Unlock()
	t.SerialBytes = m.serial.TxBytes()
	t.Profile = m.profile(15)
	return t
}

// Write prints the trace, one item per line.
func (t *Trace) Write(w io.Writer) {
	if t.BootTime > 0 {
		fmt.Fprintf(w, "boot-trace: guest agent ready (boot-timer write) after %v\n", t.BootTime.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "boot-trace: the guest never wrote the boot timer (port 0xf5)\n")
	}
	fmt.Fprintf(w, "boot-trace: ran %v; vCPU time outside KVM_RUN: %.1f%%\n", t.Wall.Round(time.Millisecond), 100*t.OutsideShare)
	fmt.Fprintf(w, "boot-trace: exits: %s\n", sortedCounts(t.Exits))
	fmt.Fprintf(w, "boot-trace: emulated instructions: %s\n", t.Emulated)
	if t.DSAPath != "" {
		fmt.Fprintf(w, "boot-trace: DSA data path: %s\n", t.DSAPath)
	}
	fmt.Fprintf(w, "boot-trace: serial bytes written by the guest: %d\n", t.SerialBytes)
	if len(t.UnknownPorts) > 0 {
		fmt.Fprintf(w, "boot-trace: unknown I/O ports: %s\n", sortedCounts(t.UnknownPorts))
	}
	if len(t.UnknownMMIO) > 0 {
		fmt.Fprintf(w, "boot-trace: unmapped MMIO pages: %s\n", sortedCounts(t.UnknownMMIO))
	}
	if len(t.Profile) > 0 {
		fmt.Fprintf(w, "boot-trace: where the vCPUs were (RIP samples every %v):\n", traceSamplePeriod)
		for _, p := range t.Profile {
			fmt.Fprintf(w, "boot-trace:   %5.1f%%  %6d  %s\n", 100*p.Share, p.Samples, p.Function)
		}
	}
}

// sortedCounts renders "a=3 b=1", largest first.
func sortedCounts(m map[string]uint64) string {
	type kv struct {
		k string
		v uint64
	}
	var l []kv
	for k, v := range m {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool {
		if l[i].v != l[j].v {
			return l[i].v > l[j].v
		}
		return l[i].k < l[j].k
	})
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = fmt.Sprintf("%s=%d", e.k, e.v)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}
