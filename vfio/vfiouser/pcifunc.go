package vfiouser

import (
	"errors"

	"godvm/vfio"
)

// PCILayout is the region and IRQ shape of a PCI function served by a
// Backend: what every backend's Info, RegionInfo and IRQInfo repeat.
// Regions not named here are reported with size 0 (absent BARs); an index
// past NumRegions is an error.
type PCILayout struct {
	Name       string                     // for errors ("dsa-server", "testdev")
	Regions    map[uint32]uint64          // region index (a BAR or vfio.PCIConfigRegionIndex) -> size
	Mmap       map[uint32]vfio.Area       // regions with one mmappable area (only while Mappable says so)
	Extra      map[uint32]vfio.RegionInfo // device-specific regions past the PCI ones
	MSIX       int                        // MSI-X vectors (0: none)
	NumRegions uint32                     // 0: vfio.PCINumRegions
}

// Info is the DEVICE_GET_INFO answer: a resettable PCI device.
func (l *PCILayout) Info() vfio.DeviceInfo {
	n := l.NumRegions
	if n == 0 {
		n = vfio.PCINumRegions
	}
	return vfio.DeviceInfo{Flags: vfio.DeviceFlagReset | vfio.DeviceFlagPCI, NumRegions: n, NumIRQs: vfio.PCINumIRQs}
}

// RegionInfo answers GET_REGION_INFO; mappable says whether the region's
// mmappable area is offered now.
func (l *PCILayout) RegionInfo(index uint32, mappable bool) (vfio.RegionInfo, error) {
	if ri, ok := l.Extra[index]; ok {
		return ri, nil
	}
	rw := uint32(vfio.RegionFlagRead | vfio.RegionFlagWrite)
	if size, ok := l.Regions[index]; ok {
		ri := vfio.RegionInfo{Index: index, Flags: rw, Size: size}
		if a, ok := l.Mmap[index]; ok && mappable {
			ri.Flags |= vfio.RegionFlagMmap
			ri.Areas = []vfio.Area{a}
		}
		return ri, nil
	}
	if index < vfio.PCINumRegions {
		return vfio.RegionInfo{Index: index}, nil
	}
	return vfio.RegionInfo{}, errors.New(l.Name + ": no such region")
}

// IRQInfo answers GET_IRQ_INFO: MSI-X with eventfds, the other PCI indexes
// empty.
func (l *PCILayout) IRQInfo(index uint32) (vfio.IRQInfo, error) {
	switch {
	case index == vfio.PCIMSIXIRQIndex && l.MSIX > 0:
		return vfio.IRQInfo{Index: index, Flags: vfio.IRQFlagEventFD | vfio.IRQFlagNoResize, Count: uint32(l.MSIX)}, nil
	case index < vfio.PCINumIRQs:
		return vfio.IRQInfo{Index: index}, nil
	}
	return vfio.IRQInfo{}, errors.New(l.Name + ": no such IRQ index")
}

// ConfigAccess splits a configuration-space access into the naturally
// aligned pieces (widths 4, 2 and 1) a config-space model takes.
func ConfigAccess(off uint64, p []byte, f func(off uint32, p []byte)) {
	for len(p) > 0 {
		n := 1
		switch {
		case len(p) >= 4 && off%4 == 0:
			n = 4
		case len(p) >= 2 && off%2 == 0:
			n = 2
		}
		f(uint32(off), p[:n])
		off, p = off+uint64(n), p[n:]
	}
}
