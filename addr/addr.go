// Package addr holds what every layer of godvm says about addresses: the
// range type for guest-physical memory and port space (layout's RAM and
// windows, the PCI root's BAR windows, the ACPI tables' windows), the page
// size, and the host virtual address of a mapping (for KVM memory slots and
// VFIO DMA maps). It imports nothing of godvm's, so devices, vfio and vmm
// can all use it.
package addr

import "unsafe"

// PageSize is the x86 base page: the granule of memory slots, DMA maps,
// BAR mappings and guest page walks.
const PageSize = 4096

// Range is a span [Base, Base+Size) of guest-physical address space or of
// port space.
type Range struct {
	Base, Size uint64
}

// End is the first address after r.
func (r Range) End() uint64 { return r.Base + r.Size }

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool { return r.Base < o.End() && o.Base < r.End() }

// Host is the host virtual address of b's first byte (0 for an empty slice),
// as KVM_SET_USER_MEMORY_REGION and VFIO_IOMMU_MAP_DMA take it.
func Host(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// PageAligned reports whether v is a multiple of PageSize.
func PageAligned(v uint64) bool { return v%PageSize == 0 }
