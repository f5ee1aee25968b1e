package emulate

import (
	"fmt"
	"strings"
	"sync/atomic"
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
	KindFault // a fault injected instead (e.g. #GP for a misaligned MOVDIR64B)
	numKinds
)

var kindNames = [numKinds]string{"none", "int3", "clac", "stac", "fwait", "popcnt", "movdir64b", "enqcmd", "enqcmds", "fault"}

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
// "failed" for errors).
func (s *Stats) Snapshot() map[string]uint64 {
	m := map[string]uint64{}
	for k := KindINT3; k < numKinds; k++ {
		if n := s.counts[k].Load(); n != 0 {
			m[k.String()] = n
		}
	}
	if n := s.failed.Load(); n != 0 {
		m["failed"] = n
	}
	return m
}

// String is a one-line summary for the boot trace, e.g.
// "int3=1 clac=412 stac=412 popcnt=3", or "none".
func (s *Stats) String() string {
	var parts []string
	for k := KindINT3; k < numKinds; k++ {
		if n := s.counts[k].Load(); n != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, n))
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
