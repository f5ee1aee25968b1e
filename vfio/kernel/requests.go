package kernel

// Requests names every VFIO and iommufd ioctl request this package defines,
// by the kernel's name, for allow-lists: internal/sandbox builds godvm's
// seccomp filters from it. TestRequestsComplete fails when a request
// variable in uapi.go is missing here.
func Requests() map[string]uint32 {
	return map[string]uint32{
		"VFIO_GET_API_VERSION":          ioctlGetAPIVersion,
		"VFIO_CHECK_EXTENSION":          ioctlCheckExtension,
		"VFIO_SET_IOMMU":                ioctlSetIOMMU,
		"VFIO_GROUP_GET_STATUS":         ioctlGroupGetStatus,
		"VFIO_GROUP_SET_CONTAINER":      ioctlGroupSetCont,
		"VFIO_GROUP_UNSET_CONTAINER":    ioctlGroupUnsetCont,
		"VFIO_GROUP_GET_DEVICE_FD":      ioctlGroupGetDevFD,
		"VFIO_DEVICE_GET_INFO":          ioctlDeviceGetInfo,
		"VFIO_DEVICE_GET_REGION_INFO":   ioctlDeviceRegion,
		"VFIO_DEVICE_GET_IRQ_INFO":      ioctlDeviceIRQInfo,
		"VFIO_DEVICE_SET_IRQS":          ioctlDeviceSetIRQs,
		"VFIO_DEVICE_RESET":             ioctlDeviceReset,
		"VFIO_IOMMU_MAP_DMA":            ioctlIOMMUMapDMA,
		"VFIO_IOMMU_UNMAP_DMA":          ioctlIOMMUUnmapDMA,
		"VFIO_DEVICE_BIND_IOMMUFD":      ioctlBindIOMMUFD,
		"VFIO_DEVICE_ATTACH_IOMMUFD_PT": ioctlAttachIOMMUFDPT,
		"VFIO_DEVICE_DETACH_IOMMUFD_PT": ioctlDetachIOMMUFDPT,
		"IOMMU_DESTROY":                 iommuDestroy,
		"IOMMU_IOAS_ALLOC":              iommuIOASAlloc,
		"IOMMU_IOAS_MAP":                iommuIOASMap,
		"IOMMU_IOAS_UNMAP":              iommuIOASUnmap,
	}
}
