package vfio

import (
	"gvisor.dev/gvisor/pkg/abi/linux"
)

// The structure both back ends put on the wire: struct vfio_region_info
// with its capability chain (vfio-user carries it as the kernel lays it
// out). What gVisor's abi/linux has is used from
// there; the capability layouts are defined here from
// include/uapi/linux/vfio.h. The kernel back end's ioctls and the rest of
// its ABI are in vfio/kernel.

// Region info capability ids.
const (
	capSparseMmap   = 1
	capType         = 2
	capMSIXMappable = 3
)

// Struct layouts gVisor has.
type (
	regionInfo = linux.VFIORegionInfo // 32
)

// infoCapHeader is struct vfio_info_cap_header. Next is the offset of the
// next capability from the start of the info buffer; 0 ends the chain.
type infoCapHeader struct {
	ID      uint16
	Version uint16
	Next    uint32
}

// sparseMmapCap is struct vfio_region_info_cap_sparse_mmap without areas[].
type sparseMmapCap struct {
	Header   infoCapHeader
	NrAreas  uint32
	Reserved uint32
}

// sparseMmapArea is struct vfio_region_sparse_mmap_area.
type sparseMmapArea struct {
	Offset uint64
	Size   uint64
}

// typeCap is struct vfio_region_info_cap_type.
type typeCap struct {
	Header  infoCapHeader
	Type    uint32
	Subtype uint32
}
