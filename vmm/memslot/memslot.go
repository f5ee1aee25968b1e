// Package memslot implements platform.MemSlots over KVM: extra memory slots
// (KVM_SET_USER_MEMORY_REGION) that map host memory, e.g. a VFIO BAR's mmap,
// into the guest so that its accesses do not exit.
package memslot

import (
	"fmt"
	"sync"

	"godvm/addr"
	"godvm/devices/platform"
	"godvm/kvm"
)

// VM is the part of a KVM VM fd the slots use.
type VM interface {
	SetUserMemoryRegion(r kvm.UserspaceMemoryRegion) error
}

// Config bounds the slots handed out.
type Config struct {
	// FirstSlot is the first memory slot MapHostMemory may use: the VMM
	// puts its RAM in slots below it.
	FirstSlot uint32
	// SlotLimit bounds slot numbers (default 509, the smallest
	// KVM_CAP_NR_MEMSLOTS of the kernels godvm meets; pass the real value).
	SlotLimit uint32
}

// Slots hands out the memory slots of one VM above Config.FirstSlot. Safe
// for concurrent use.
type Slots struct {
	vm    VM
	cfg   Config
	mu    sync.Mutex
	slots map[uint32]hostSlot
}

type hostSlot struct {
	gpa  uint64
	host []byte // held so the mapping outlives the slot
}

var (
	_ VM                = (*kvm.VM)(nil)
	_ platform.MemSlots = (*Slots)(nil)
)

// New makes the slot table over vm.
func New(vm VM, cfg Config) *Slots {
	if cfg.SlotLimit == 0 {
		cfg.SlotLimit = 509
	}
	return &Slots{vm: vm, cfg: cfg, slots: map[uint32]hostSlot{}}
}

// MapHostMemory maps host (e.g. a VFIO BAR mmap) at gpa as a new memory
// slot; the handle is the slot number. gpa, the host address and the length
// must be page-aligned. The caller keeps host mapped until UnmapHostMemory.
func (c *Slots) MapHostMemory(gpa uint64, host []byte, readonly bool) (int, error) {
	n := uint64(len(host))
	if n == 0 || !addr.PageAligned(n) || !addr.PageAligned(gpa) || !addr.PageAligned(addr.Host(host)) {
		return 0, fmt.Errorf("memslot: map host memory at %#x (+%#x): address, size and host mapping must be page-aligned", gpa, n)
	}
	if gpa+n < gpa {
		return 0, fmt.Errorf("memslot: map host memory at %#x (+%#x): range wraps", gpa, n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for s, h := range c.slots {
		if gpa < h.gpa+uint64(len(h.host)) && h.gpa < gpa+n {
			return 0, fmt.Errorf("memslot: map host memory at %#x (+%#x): overlaps slot %d at %#x", gpa, n, s, h.gpa)
		}
	}
	slot := c.cfg.FirstSlot
	for ; slot < c.cfg.SlotLimit; slot++ {
		if _, used := c.slots[slot]; !used {
			break
		}
	}
	if slot >= c.cfg.SlotLimit {
		return 0, fmt.Errorf("memslot: map host memory at %#x: no free memory slot (limit %d)", gpa, c.cfg.SlotLimit)
	}
	r := kvm.UserspaceMemoryRegion{Slot: slot, GuestPhysAddr: gpa, MemorySize: n, UserspaceAddr: addr.Host(host)}
	if readonly {
		r.Flags = kvm.MemReadonly
	}
	if err := c.vm.SetUserMemoryRegion(r); err != nil {
		return 0, fmt.Errorf("memslot: map host memory at %#x (+%#x) as slot %d: %w", gpa, n, slot, err)
	}
	c.slots[slot] = hostSlot{gpa: gpa, host: host}
	return int(slot), nil
}

// UnmapHostMemory deletes a slot made by MapHostMemory.
func (c *Slots) UnmapHostMemory(handle int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := uint32(handle)
	h, ok := c.slots[slot]
	if handle < 0 || !ok {
		return fmt.Errorf("memslot: unmap host memory: no slot %d", handle)
	}
	if err := c.vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{Slot: slot, GuestPhysAddr: h.gpa}); err != nil {
		return fmt.Errorf("memslot: unmap slot %d: %w", slot, err)
	}
	delete(c.slots, slot)
	return nil
}
