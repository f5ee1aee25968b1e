// Package vfio is godvm's view of a device that lives outside the VMM: one
// Device interface (regions, interrupts, reset, DMA mapping of guest memory)
// with two back ends side by side, kernel VFIO (vfio/kernel: legacy
// container/group and iommufd with the device cdev) and vfio-user
// (vfio/vfiouser). This package holds what they share: the interface, the
// region and IRQ descriptions, the region-info wire format and the DMWr
// region.
//
// The passthrough PCI device (vfio/passthrough) consumes only the interface.
package vfio

import (
	"errors"
	"fmt"

	"godvm/guestmem"
)

// Region indices of a vfio-pci device (linux/vfio.h VFIO_PCI_*_REGION_INDEX).
const (
	PCIBAR0RegionIndex   = 0
	PCIBAR5RegionIndex   = 5
	PCIROMRegionIndex    = 6
	PCIConfigRegionIndex = 7
	PCIVGARegionIndex    = 8
	PCINumRegions        = 9
)

// IRQ indices of a vfio-pci device (VFIO_PCI_*_IRQ_INDEX).
const (
	PCIINTxIRQIndex = 0
	PCIMSIIRQIndex  = 1
	PCIMSIXIRQIndex = 2
	PCIErrIRQIndex  = 3
	PCIReqIRQIndex  = 4
	PCINumIRQs      = 5
)

// Device info flags (VFIO_DEVICE_FLAGS_*).
const (
	DeviceFlagReset = 1 << 0
	DeviceFlagPCI   = 1 << 1
)

// Region flags (VFIO_REGION_INFO_FLAG_*).
const (
	RegionFlagRead  = 1 << 0
	RegionFlagWrite = 1 << 1
	RegionFlagMmap  = 1 << 2
	RegionFlagCaps  = 1 << 3
)

// IRQ info flags (VFIO_IRQ_INFO_*).
const (
	IRQFlagEventFD    = 1 << 0
	IRQFlagMaskable   = 1 << 1
	IRQFlagAutomasked = 1 << 2
	IRQFlagNoResize   = 1 << 3
)

// DeviceInfo is VFIO_DEVICE_GET_INFO's answer.
type DeviceInfo struct {
	Flags      uint32
	NumRegions uint32
	NumIRQs    uint32
}

// Area is a part of a region that may be mmapped (a sparse-mmap area),
// relative to the start of the region.
type Area struct {
	Offset uint64
	Size   uint64
}

// RegionInfo describes one region.
type RegionInfo struct {
	Index uint32
	Flags uint32
	Size  uint64
	// Areas lists what may be mmapped. With the MMAP flag and no
	// sparse-mmap capability it is the whole region; without MMAP it is empty.
	Areas []Area
	// MSIXMappable is set when the region carries the MSIX_MAPPABLE capability.
	MSIXMappable bool
	// Type/Subtype come from the TYPE capability (device-specific regions).
	Type, Subtype uint32
	HasType       bool
}

// Readable and friends test the flags.
func (r RegionInfo) Readable() bool { return r.Flags&RegionFlagRead != 0 }
func (r RegionInfo) Writable() bool { return r.Flags&RegionFlagWrite != 0 }
func (r RegionInfo) Mappable() bool { return r.Flags&RegionFlagMmap != 0 }

// IRQInfo describes one interrupt index.
type IRQInfo struct {
	Index uint32
	Flags uint32
	Count uint32
}

// Device is a VFIO device, kernel or vfio-user. Methods are safe for
// concurrent use. Guest-visible failures never panic: a device that has gone
// away (a vfio-user server that died) answers reads with all-ones and
// returns ErrFailed.
type Device interface {
	// Info returns the device flags and the number of regions and IRQ indices.
	Info() DeviceInfo
	// RegionInfo describes region index (with its sparse-mmap areas).
	RegionInfo(index uint32) (RegionInfo, error)
	// ReadRegion reads len(p) bytes at off in region index.
	ReadRegion(index uint32, off uint64, p []byte) error
	// WriteRegion writes p at off in region index.
	WriteRegion(index uint32, off uint64, p []byte) error
	// MapRegion mmaps [off, off+size) of region index (shared, read/write).
	// The range must lie in one of the region's Areas.
	MapRegion(index uint32, off, size uint64) ([]byte, error)
	// UnmapRegion undoes MapRegion.
	UnmapRegion(b []byte) error
	// IRQInfo describes IRQ index.
	IRQInfo(index uint32) (IRQInfo, error)
	// SetIRQs binds eventfds to vectors start..start+len(fds)-1 of index
	// (ACTION_TRIGGER|DATA_EVENTFD): the device signals fds[i] when vector
	// start+i fires. An fd of -1 unbinds that vector. With no fds the whole
	// index is disabled.
	SetIRQs(index, start uint32, fds []int) error
	// Reset resets the device (if it supports reset).
	Reset() error
	// DMAMap lets the device reach guest RAM region r at IOVA = GPA.
	DMAMap(r *guestmem.Region) error
	// DMAUnmap removes a mapping made by DMAMap.
	DMAUnmap(r *guestmem.Region) error
	// Failed returns nil while the device works, the reason once it failed.
	Failed() error
	// Close releases the device (mappings, fds, the connection).
	Close() error
}

// ErrFailed marks accesses to a device that has failed (server gone).
var ErrFailed = errors.New("vfio: device failed")

// MapAllRAM DMA-maps every region of mem with IOVA = GPA.
func MapAllRAM(d Device, mem *guestmem.Memory) error {
	for _, r := range mem.Regions() {
		if err := d.DMAMap(r); err != nil {
			return fmt.Errorf("vfio: DMA map of guest RAM %#x+%#x: %w", r.GPA, r.Size, err)
		}
	}
	return nil
}
