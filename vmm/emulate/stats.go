package emulate

import (
	"fmt"
	"strings"
	"sync/atomic"

	"godvm/devices/bus"
)

// Kind names what the emulator did with an instruction.
type Kind int

// Instruction kinds, in the order Stats prints them.
const (
	KindNone Kind = iota // nothing emulated (an error)
	KindINT3
	KindCLAC
	KindSTAC
	KindFWAIT
	KindPOPCNT
	KindMOVDIR64B
	KindENQCMD
	KindENQCMDS
	KindFault   // a fault injected instead (e.g. #GP for a misaligned MOVDIR64B)
	KindLDMXCSR // LDMXCSR (kernel_fpu_begin())
	KindSTMXCSR //
	KindX87     // another x87 instruction (FNINIT, FLDCW, FNSTSW, FSTP, FXSAVE, ...)
	KindSSE     // an SSE/SSE2 (or PSHUFB) register or memory operation
	numKinds
)

var kindNames = [numKinds]string{"none", "int3", "clac", "stac", "fwait", "popcnt", "movdir64b", "enqcmd", "enqcmds", "fault",
	"ldmxcsr", "stmxcsr", "x87", "sse"}

func (k Kind) String() string {
	if k >= 0 && k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Stats counts emulated instructions per kind, plus failures. Safe for
// concurrent use by every vCPU thread; the zero value is ready.
type Stats struct {
	counts [numKinds]atomic.Uint64
	failed atomic.Uint64
	// Paravirtual stores (pv.go), kept apart from emulated instructions so
	// that no one mistakes one for the other: those that reached the device
	// by bus kind (MOVDIR64B, ENQCMDS), ENQCMDS retries among them, and
	// refused requests.
	pvStores  [bus.ENQCMDS + 1]atomic.Uint64
	pvRetry   atomic.Uint64
	pvRefused atomic.Uint64
}

func (s *Stats) addPV(kind bus.WideKind, st PVStatus) {
	switch {
	case st >= PVBadRequest:
		s.pvRefused.Add(1)
	case kind == bus.MOVDIR64B || kind == bus.ENQCMDS:
		s.pvStores[kind].Add(1)
		if st == PVRetry {
			s.pvRetry.Add(1)
		}
	}
}

// PVStores is how many paravirtual stores of kind (bus.MOVDIR64B or
// bus.ENQCMDS) reached the device, retried ENQCMDS included.
func (s *Stats) PVStores(kind bus.WideKind) uint64 {
	if kind != bus.MOVDIR64B && kind != bus.ENQCMDS {
		return 0
	}
	return s.pvStores[kind].Load()
}

// PVRetries is how many paravirtual ENQCMDS the device did not accept.
func (s *Stats) PVRetries() uint64 { return s.pvRetry.Load() }

// PVRefused is how many paravirtual store requests were refused (status 2
// and up).
func (s *Stats) PVRefused() uint64 { return s.pvRefused.Load() }

type pvCount struct {
	name string
	n    uint64
}

// pvCounts are the paravirtual counters by the names Snapshot and String
// use, in order.
func (s *Stats) pvCounts() []pvCount {
	return []pvCount{
		{"pv-movdir64b", s.pvStores[bus.MOVDIR64B].Load()},
		{"pv-enqcmds", s.pvStores[bus.ENQCMDS].Load()},
		{"pv-retry", s.pvRetry.Load()},
		{"pv-refused", s.pvRefused.Load()},
	}
}

func (s *Stats) add(k Kind) {
	if k >= 0 && k < numKinds {
		s.counts[k].Add(1)
	}
}

// Count is how many instructions of kind k were handled.
func (s *Stats) Count(k Kind) uint64 {
	if k < 0 || k >= numKinds {
		return 0
	}
	return s.counts[k].Load()
}

// Failed is how many emulation attempts returned an error.
func (s *Stats) Failed() uint64 { return s.failed.Load() }

// Snapshot returns the non-zero counts by name ("int3", "clac", ...;
// "pv-movdir64b", "pv-enqcmds", "pv-retry", "pv-refused" for the
// paravirtual port; "failed" for errors).
func (s *Stats) Snapshot() map[string]uint64 {
	m := map[string]uint64{}
	for k := KindINT3; k < numKinds; k++ {
		if n := s.counts[k].Load(); n != 0 {
			m[k.String()] = n
		}
	}
	for _, c := range s.pvCounts() {
		if c.n != 0 {
			m[c.name] = c.n
		}
	}
	if n := s.failed.Load(); n != 0 {
		m["failed"] = n
	}
	return m
}

// String is a one-line summary for the boot trace, e.g.
// "int3=1 clac=412 stac=412 popcnt=3 movdir64b=1000", or "none". Paravirtual
// stores follow the instructions under their own names (pv-movdir64b,
// pv-enqcmds, pv-retry, pv-refused; non-zero ones only, like the rest),
// never counted as the instruction.
func (s *Stats) String() string {
	var parts []string
	for k := KindINT3; k < numKinds; k++ {
		if n := s.counts[k].Load(); n != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, n))
		}
	}
	for _, c := range s.pvCounts() {
		if c.n != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", c.name, c.n))
		}
	}
	if n := s.failed.Load(); n != 0 {
		parts = append(parts, fmt.Sprintf("failed=%d", n))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}
