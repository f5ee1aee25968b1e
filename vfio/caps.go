package vfio

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"godvm/internal/abi"
)

// RegionInfoSize is the size of struct vfio_region_info without capabilities.
const RegionInfoSize = 32

// maxCaps bounds a capability chain walk (a hostile peer may build a loop).
const maxCaps = 64

// maxSparseAreas bounds the number of sparse-mmap areas accepted.
const maxSparseAreas = 1024

// DecodeRegionInfo decodes a vfio_region_info buffer as returned by
// VFIO_DEVICE_GET_REGION_INFO or vfio-user's DEVICE_GET_REGION_INFO reply:
// the 32-byte struct, then the capability chain. It returns the info and the
// offset field (where the region lives in the device fd). Malformed chains
// are errors; nothing here trusts the buffer.
func DecodeRegionInfo(buf []byte) (RegionInfo, uint64, error) {
	if len(buf) < RegionInfoSize {
		return RegionInfo{}, 0, fmt.Errorf("vfio: region info is %d bytes, want at least %d", len(buf), RegionInfoSize)
	}
	ri := abi.From[regionInfo](buf)
	info := RegionInfo{Index: ri.Index, Flags: ri.Flags, Size: ri.Size}
	if ri.Flags&RegionFlagCaps != 0 && ri.CapOffset != 0 {
		if err := parseCaps(buf, ri.CapOffset, &info); err != nil {
			return RegionInfo{}, 0, err
		}
	}
	if info.Mappable() && info.Areas == nil {
		info.Areas = []Area{{0, info.Size}}
	}
	if !info.Mappable() {
		info.Areas = nil
	}
	return info, ri.Offset, nil
}

func parseCaps(buf []byte, off uint32, info *RegionInfo) error {
	hsz := uint32(unsafe.Sizeof(infoCapHeader{}))
	for n := 0; off != 0; n++ {
		if n == maxCaps {
			return fmt.Errorf("vfio: region %d: capability chain longer than %d (loop?)", info.Index, maxCaps)
		}
		if off < RegionInfoSize || uint64(off)+uint64(hsz) > uint64(len(buf)) {
			return fmt.Errorf("vfio: region %d: capability at %d outside the %d-byte info", info.Index, off, len(buf))
		}
		h := abi.From[infoCapHeader](buf[off:])
		switch h.ID {
		case capSparseMmap:
			hs := uint64(unsafe.Sizeof(sparseMmapCap{}))
			if uint64(off)+hs > uint64(len(buf)) {
				return fmt.Errorf("vfio: region %d: sparse-mmap capability truncated", info.Index)
			}
			c := abi.From[sparseMmapCap](buf[off:])
			if c.NrAreas > maxSparseAreas || uint64(off)+hs+16*uint64(c.NrAreas) > uint64(len(buf)) {
				return fmt.Errorf("vfio: region %d: sparse-mmap capability with %d areas does not fit", info.Index, c.NrAreas)
			}
			areas := make([]Area, 0, c.NrAreas)
			p := uint64(off) + hs
			for i := uint32(0); i < c.NrAreas; i++ {
				a := Area{binary.NativeEndian.Uint64(buf[p:]), binary.NativeEndian.Uint64(buf[p+8:])}
				p += 16
				if a.Size == 0 {
					continue
				}
				if a.Offset+a.Size < a.Offset || a.Offset+a.Size > info.Size {
					return fmt.Errorf("vfio: region %d: sparse area %#x+%#x outside the %#x-byte region", info.Index, a.Offset, a.Size, info.Size)
				}
				areas = append(areas, a)
			}
			info.Areas = areas
		case capType:
			if uint64(off)+uint64(unsafe.Sizeof(typeCap{})) > uint64(len(buf)) {
				return fmt.Errorf("vfio: region %d: type capability truncated", info.Index)
			}
			c := abi.From[typeCap](buf[off:])
			info.Type, info.Subtype, info.HasType = c.Type, c.Subtype, true
		case capMSIXMappable:
			info.MSIXMappable = true
		}
		off = h.Next
	}
	return nil
}

// EncodeRegionInfo builds a vfio_region_info buffer with a sparse-mmap
// capability when info.Areas is set and does not cover the whole region, a
// type capability when info.HasType, and the MSI-X-mappable capability when
// info.MSIXMappable (the vfio-user server uses it). offset is the region's
// offset in its fd.
func EncodeRegionInfo(info RegionInfo, offset uint64) []byte {
	ri := regionInfo{Argsz: RegionInfoSize, Flags: info.Flags, Index: info.Index, Size: info.Size, Offset: offset}
	sparse := info.Mappable() && !(len(info.Areas) == 1 && info.Areas[0] == Area{0, info.Size})
	var caps []byte
	// add appends one capability (its header first in body), chaining the
	// previous one's next field to it.
	last := -1
	add := func(body []byte) {
		at := RegionInfoSize + uint32(len(caps))
		if last >= 0 {
			binary.NativeEndian.PutUint32(caps[last+4:], at) // infoCapHeader.Next
		}
		last = len(caps)
		caps = append(caps, body...)
	}
	if sparse {
		c := sparseMmapCap{Header: infoCapHeader{ID: capSparseMmap, Version: 1}, NrAreas: uint32(len(info.Areas))}
		body := append([]byte(nil), abi.Bytes(&c)...)
		for _, a := range info.Areas {
			sa := sparseMmapArea{a.Offset, a.Size}
			body = append(body, abi.Bytes(&sa)...)
		}
		add(body)
	}
	if info.HasType {
		c := typeCap{Header: infoCapHeader{ID: capType, Version: 1}, Type: info.Type, Subtype: info.Subtype}
		add(abi.Bytes(&c))
	}
	if info.MSIXMappable {
		h := infoCapHeader{ID: capMSIXMappable, Version: 1}
		add(abi.Bytes(&h))
	}
	if len(caps) > 0 {
		ri.Flags |= RegionFlagCaps
		ri.CapOffset = RegionInfoSize
	}
	ri.Argsz = RegionInfoSize + uint32(len(caps))
	return append(append([]byte(nil), abi.Bytes(&ri)...), caps...)
}
