// Package bus dispatches port-I/O and MMIO accesses by address range to
// devices. The vCPU loop looks the range up and calls the device; nothing else.
package bus

import (
	"fmt"
	"sort"
	"sync"
)

// Device is a range of I/O or MMIO space. off is relative to the start of the
// range; len(data) is the access width (1, 2, 4 or 8; 64 for wide writes that
// reach a device without Wide64 support). Read fills data.
type Device interface {
	Read(off uint64, data []byte)
	Write(off uint64, data []byte)
}

// WideKind says which instruction produced a 64-byte write.
type WideKind int

const (
	MOVDIR64B WideKind = iota // posted, no answer
	ENQCMD                    // non-posted; user privilege (PASID from the MSR)
	ENQCMDS                   // non-posted; supervisor (PASID in the source)
)

func (k WideKind) String() string {
	switch k {
	case MOVDIR64B:
		return "MOVDIR64B"
	case ENQCMD:
		return "ENQCMD"
	case ENQCMDS:
		return "ENQCMDS"
	}
	return fmt.Sprintf("WideKind(%d)", int(k))
}

// Wide64 is implemented by devices that accept 64-byte atomic writes
// (a DSA portal). accepted is ENQCMD's answer: false sets ZF ("retry").
// For MOVDIR64B the answer is ignored.
type Wide64 interface {
	Write64B(off uint64, data *[64]byte, kind WideKind) (accepted bool)
}

type entry struct {
	base, size uint64
	name       string
	dev        Device
}

// Bus is an address space (PIO or MMIO). Safe for concurrent use.
type Bus struct {
	mu      sync.RWMutex
	entries []entry // sorted by base, non-overlapping
}

// Register places dev at [base, base+size).
func (b *Bus) Register(base, size uint64, name string, dev Device) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("bus: %s: bad range %#x+%#x", name, base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= base })
	if i > 0 {
		if p := b.entries[i-1]; p.base+p.size > base {
			return fmt.Errorf("bus: %s at %#x+%#x overlaps %s at %#x+%#x", name, base, size, p.name, p.base, p.size)
		}
	}
	if i < len(b.entries) {
		if n := b.entries[i]; base+size > n.base {
			return fmt.Errorf("bus: %s at %#x+%#x overlaps %s at %#x+%#x", name, base, size, n.name, n.base, n.size)
		}
	}
	b.entries = append(b.entries, entry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = entry{base, size, name, dev}
	return nil
}

// Unregister removes the range that starts at base.
func (b *Bus) Unregister(base uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, e := range b.entries {
		if e.base == base {
			b.entries = append(b.entries[:i], b.entries[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("bus: nothing registered at %#x", base)
}

// Find returns the device covering [addr, addr+n) and the offset in it.
func (b *Bus) Find(addr, n uint64) (Device, uint64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	es := b.entries
	i := sort.Search(len(es), func(i int) bool { return es[i].base+es[i].size > addr })
	if i < len(es) && es[i].base <= addr && addr+n <= es[i].base+es[i].size && addr+n >= addr {
		return es[i].dev, addr - es[i].base, true
	}
	return nil, 0, false
}

// Read dispatches a read; false means nothing is there.
func (b *Bus) Read(addr uint64, data []byte) bool {
	d, off, ok := b.Find(addr, uint64(len(data)))
	if ok {
		d.Read(off, data)
	}
	return ok
}

// Write dispatches a write; false means nothing is there.
func (b *Bus) Write(addr uint64, data []byte) bool {
	d, off, ok := b.Find(addr, uint64(len(data)))
	if ok {
		d.Write(off, data)
	}
	return ok
}

// Write64B delivers a 64-byte atomic write. found is false when nothing is
// mapped there. A device without Wide64 gets an ordinary 64-byte Write and
// accepts it.
func (b *Bus) Write64B(addr uint64, data *[64]byte, kind WideKind) (found, accepted bool) {
	d, off, ok := b.Find(addr, 64)
	if !ok {
		return false, false
	}
	if w, ok := d.(Wide64); ok {
		return true, w.Write64B(off, data, kind)
	}
	d.Write(off, data[:])
	return true, true
}

// Wide64Router is implemented by a Wide64 device that only forwards 64-byte
// writes to sub-devices (pci.Mux): Wide64At reports whether the sub-device
// at off implements Wide64 itself.
type Wide64Router interface {
	Wide64At(off uint64) bool
}

// Wide64At reports whether a 64-byte write at addr reaches a device that
// takes 64-byte writes itself (implements Wide64; through a Wide64Router,
// the sub-device there), rather than as the plain 64-byte Write that
// Write64B falls back to. vmm/emulate's paravirtual store uses it to refuse
// destinations that are not portals.
func (b *Bus) Wide64At(addr uint64) bool {
	d, off, ok := b.Find(addr, 64)
	if !ok {
		return false
	}
	if r, ok := d.(Wide64Router); ok {
		return r.Wide64At(off)
	}
	_, ok = d.(Wide64)
	return ok
}

// Range describes one registration (for diagnostics).
type Range struct {
	Base, Size uint64
	Name       string
}

// Ranges lists the registrations in address order.
func (b *Bus) Ranges() []Range {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]Range, len(b.entries))
	for i, e := range b.entries {
		out[i] = Range{e.base, e.size, e.name}
	}
	return out
}
