package kernel

import (
	"gvisor.dev/gvisor/pkg/abi/linux"
)

// Kernel ABI. What gVisor's abi/linux has is used from there; what it lacks
// (API version, group status, the iommufd and device-cdev ioctls) is defined
// here from include/uapi/linux/{vfio,iommufd}.h. Every VFIO and iommufd
// ioctl is _IO(';', nr): no size, no direction. The region-info layout both
// back ends share is in package vfio.

// Ioctl request numbers.
var (
	ioctlGetAPIVersion   = linux.IO(linux.VFIO_TYPE, linux.VFIO_BASE+0)
	ioctlCheckExtension  = linux.VFIO_CHECK_EXTENSION
	ioctlSetIOMMU        = linux.VFIO_SET_IOMMU
	ioctlGroupGetStatus  = linux.IO(linux.VFIO_TYPE, linux.VFIO_BASE+3)
	ioctlGroupSetCont    = linux.VFIO_GROUP_SET_CONTAINER
	ioctlGroupUnsetCont  = linux.VFIO_GROUP_UNSET_CONTAINER
	ioctlGroupGetDevFD   = linux.VFIO_GROUP_GET_DEVICE_FD
	ioctlDeviceGetInfo   = linux.VFIO_DEVICE_GET_INFO
	ioctlDeviceRegion    = linux.VFIO_DEVICE_GET_REGION_INFO
	ioctlDeviceIRQInfo   = linux.VFIO_DEVICE_GET_IRQ_INFO
	ioctlDeviceSetIRQs   = linux.VFIO_DEVICE_SET_IRQS
	ioctlDeviceReset     = linux.VFIO_DEVICE_RESET
	ioctlIOMMUMapDMA     = linux.VFIO_IOMMU_MAP_DMA
	ioctlIOMMUUnmapDMA   = linux.VFIO_IOMMU_UNMAP_DMA
	ioctlBindIOMMUFD     = linux.IO(linux.VFIO_TYPE, linux.VFIO_BASE+18)
	ioctlAttachIOMMUFDPT = linux.IO(linux.VFIO_TYPE, linux.VFIO_BASE+19)
	ioctlDetachIOMMUFDPT = linux.IO(linux.VFIO_TYPE, linux.VFIO_BASE+20)

	iommuDestroy   = linux.IO(linux.VFIO_TYPE, 0x80)
	iommuIOASAlloc = linux.IO(linux.VFIO_TYPE, 0x81)
	iommuIOASMap   = linux.IO(linux.VFIO_TYPE, 0x85)
	iommuIOASUnmap = linux.IO(linux.VFIO_TYPE, 0x86)
)

// The IOMMU type godvm asks for (gVisor has it).
const typeIOMMU1v2 = linux.VFIO_TYPE1v2_IOMMU

// Constants gVisor lacks.
const (
	vfioAPIVersion = 0

	groupFlagsViable       = 1
	groupFlagsContainerSet = 2

	iommuIOASMapFixedIOVA = 1
	iommuIOASMapWriteable = 2
	iommuIOASMapReadable  = 4
)

// Struct layouts gVisor has.
type (
	deviceInfo = linux.VFIODeviceInfoMin      // 16: argsz flags num_regions num_irqs
	irqInfo    = linux.VFIOIrqInfo            // 16
	irqSet     = linux.VFIOIrqSet             // 20 + data
	dmaMap     = linux.VFIOIommuType1DmaMap   // 32
	dmaUnmap   = linux.VFIOIommuType1DmaUnmap // 24
)

// groupStatus is struct vfio_group_status.
type groupStatus struct {
	Argsz uint32
	Flags uint32
}

// bindIOMMUFD is struct vfio_device_bind_iommufd in its original 16-byte
// layout (newer kernels append token_uuid_ptr and honour argsz).
type bindIOMMUFD struct {
	Argsz    uint32
	Flags    uint32
	IOMMUFD  int32
	OutDevID uint32
}

// attachIOMMUFDPT is struct vfio_device_attach_iommufd_pt (12-byte layout,
// before pasid was appended).
type attachIOMMUFDPT struct {
	Argsz uint32
	Flags uint32
	PtID  uint32
}

// ioasAlloc is struct iommu_ioas_alloc.
type ioasAlloc struct {
	Size      uint32
	Flags     uint32
	OutIOASID uint32
}

// ioasMap is struct iommu_ioas_map.
type ioasMap struct {
	Size     uint32
	Flags    uint32
	IOASID   uint32
	Reserved uint32
	UserVA   uint64
	Length   uint64
	IOVA     uint64
}

// ioasUnmap is struct iommu_ioas_unmap.
type ioasUnmap struct {
	Size   uint32
	IOASID uint32
	IOVA   uint64
	Length uint64
}

// iommuDestroyArg is struct iommu_destroy.
type iommuDestroyArg struct {
	Size uint32
	ID   uint32
}
