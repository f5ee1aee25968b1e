package vmm

import (
	"sync"
	"sync/atomic"

	"godvm/kvm"
)

// stats are the counters the boot trace reports.
type stats struct {
	exits    [64]atomic.Uint64
	otherExt atomic.Uint64
	mu       sync.Mutex
	ports    map[portKey]uint64
	mmio     map[uint64]uint64
}

type portKey struct {
	port  uint16
	write bool
}

func (s *stats) countExit(r kvm.ExitReason) {
	if int(r) < len(s.exits) {
		s.exits[r].Add(1)
	} else {
		s.otherExt.Add(1)
	}
}

func (s *stats) unknownPort(port uint16, write bool) {
	s.mu.Lock()
	if s.ports == nil {
		s.ports = map[portKey]uint64{}
	}
	s.ports[portKey{port, write}]++
	s.mu.Unlock()
}

func (s *stats) unknownMMIO(addr uint64, write bool) {
	s.mu.Lock()
	if s.mmio == nil {
		s.mmio = map[uint64]uint64{}
	}
	s.mmio[addr&^0xfff]++
	s.mu.Unlock()
}
