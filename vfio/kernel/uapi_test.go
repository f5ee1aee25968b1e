package kernel

import (
	"testing"
	"unsafe"

	"godvm/internal/abi/abitest"
	"godvm/vfio"
)

// Numbers from include/uapi/linux/{vfio,iommufd}.h, computed with gcc
// from a small C program that prints each _IO/_IOW/_IOWR value.
func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uint32
		want uint32
	}{
		{"VFIO_GET_API_VERSION", ioctlGetAPIVersion, 0x3B64},
		{"VFIO_CHECK_EXTENSION", ioctlCheckExtension, 0x3B65},
		{"VFIO_SET_IOMMU", ioctlSetIOMMU, 0x3B66},
		{"VFIO_GROUP_GET_STATUS", ioctlGroupGetStatus, 0x3B67},
		{"VFIO_GROUP_SET_CONTAINER", ioctlGroupSetCont, 0x3B68},
		{"VFIO_GROUP_UNSET_CONTAINER", ioctlGroupUnsetCont, 0x3B69},
		{"VFIO_GROUP_GET_DEVICE_FD", ioctlGroupGetDevFD, 0x3B6A},
		{"VFIO_DEVICE_GET_INFO", ioctlDeviceGetInfo, 0x3B6B},
		{"VFIO_DEVICE_GET_REGION_INFO", ioctlDeviceRegion, 0x3B6C},
		{"VFIO_DEVICE_GET_IRQ_INFO", ioctlDeviceIRQInfo, 0x3B6D},
		{"VFIO_DEVICE_SET_IRQS", ioctlDeviceSetIRQs, 0x3B6E},
		{"VFIO_DEVICE_RESET", ioctlDeviceReset, 0x3B6F},
		{"VFIO_IOMMU_MAP_DMA", ioctlIOMMUMapDMA, 0x3B71},
		{"VFIO_IOMMU_UNMAP_DMA", ioctlIOMMUUnmapDMA, 0x3B72},
		{"VFIO_DEVICE_BIND_IOMMUFD", ioctlBindIOMMUFD, 0x3B76},
		{"VFIO_DEVICE_ATTACH_IOMMUFD_PT", ioctlAttachIOMMUFDPT, 0x3B77},
		{"VFIO_DEVICE_DETACH_IOMMUFD_PT", ioctlDetachIOMMUFDPT, 0x3B78},
		{"IOMMU_DESTROY", iommuDestroy, 0x3B80},
		{"IOMMU_IOAS_ALLOC", iommuIOASAlloc, 0x3B81},
		{"IOMMU_IOAS_MAP", iommuIOASMap, 0x3B85},
		{"IOMMU_IOAS_UNMAP", iommuIOASUnmap, 0x3B86},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if typeIOMMU1v2 != 3 {
		t.Errorf("VFIO_TYPE1v2_IOMMU = %d, want 3", typeIOMMU1v2)
	}
}

// Sizes and offsets of the kernel back end's ioctl arguments, from
// include/uapi/linux/{vfio,iommufd}.h (gcc on x86-64).
func TestStructLayouts(t *testing.T) {
	var gs groupStatus
	abitest.CheckLayout(t, "vfio_group_status", unsafe.Sizeof(gs), 8,
		abitest.Field{Name: "flags", Got: unsafe.Offsetof(gs.Flags), Want: 4})
	var di deviceInfo
	abitest.CheckLayout(t, "vfio_device_info(minsz)", unsafe.Sizeof(di), 16,
		abitest.Field{Name: "flags", Got: unsafe.Offsetof(di.Flags), Want: 4}, abitest.Field{Name: "num_regions", Got: unsafe.Offsetof(di.NumRegions), Want: 8},
		abitest.Field{Name: "num_irqs", Got: unsafe.Offsetof(di.NumIrqs), Want: 12})
	var ii irqInfo
	abitest.CheckLayout(t, "vfio_irq_info", unsafe.Sizeof(ii), 16,
		abitest.Field{Name: "flags", Got: unsafe.Offsetof(ii.Flags), Want: 4}, abitest.Field{Name: "index", Got: unsafe.Offsetof(ii.Index), Want: 8}, abitest.Field{Name: "count", Got: unsafe.Offsetof(ii.Count), Want: 12})
	var is irqSet
	abitest.CheckLayout(t, "vfio_irq_set", unsafe.Sizeof(is), 20,
		abitest.Field{Name: "flags", Got: unsafe.Offsetof(is.Flags), Want: 4}, abitest.Field{Name: "index", Got: unsafe.Offsetof(is.Index), Want: 8},
		abitest.Field{Name: "start", Got: unsafe.Offsetof(is.Start), Want: 12}, abitest.Field{Name: "count", Got: unsafe.Offsetof(is.Count), Want: 16})
	var dm dmaMap
	abitest.CheckLayout(t, "vfio_iommu_type1_dma_map", unsafe.Sizeof(dm), 32,
		abitest.Field{Name: "flags", Got: unsafe.Offsetof(dm.Flags), Want: 4}, abitest.Field{Name: "vaddr", Got: unsafe.Offsetof(dm.Vaddr), Want: 8},
		abitest.Field{Name: "iova", Got: unsafe.Offsetof(dm.IOVa), Want: 16}, abitest.Field{Name: "size", Got: unsafe.Offsetof(dm.Size), Want: 24})
	var du dmaUnmap
	abitest.CheckLayout(t, "vfio_iommu_type1_dma_unmap", unsafe.Sizeof(du), 24,
		abitest.Field{Name: "iova", Got: unsafe.Offsetof(du.IOVa), Want: 8}, abitest.Field{Name: "size", Got: unsafe.Offsetof(du.Size), Want: 16})
	var b bindIOMMUFD
	abitest.CheckLayout(t, "vfio_device_bind_iommufd(v1)", unsafe.Sizeof(b), 16,
		abitest.Field{Name: "iommufd", Got: unsafe.Offsetof(b.IOMMUFD), Want: 8}, abitest.Field{Name: "out_devid", Got: unsafe.Offsetof(b.OutDevID), Want: 12})
	var at attachIOMMUFDPT
	abitest.CheckLayout(t, "vfio_device_attach_iommufd_pt(v1)", unsafe.Sizeof(at), 12, abitest.Field{Name: "pt_id", Got: unsafe.Offsetof(at.PtID), Want: 8})
	var al ioasAlloc
	abitest.CheckLayout(t, "iommu_ioas_alloc", unsafe.Sizeof(al), 12, abitest.Field{Name: "out_ioas_id", Got: unsafe.Offsetof(al.OutIOASID), Want: 8})
	var im ioasMap
	abitest.CheckLayout(t, "iommu_ioas_map", unsafe.Sizeof(im), 40,
		abitest.Field{Name: "flags", Got: unsafe.Offsetof(im.Flags), Want: 4}, abitest.Field{Name: "ioas_id", Got: unsafe.Offsetof(im.IOASID), Want: 8},
		abitest.Field{Name: "__reserved", Got: unsafe.Offsetof(im.Reserved), Want: 12}, abitest.Field{Name: "user_va", Got: unsafe.Offsetof(im.UserVA), Want: 16},
		abitest.Field{Name: "length", Got: unsafe.Offsetof(im.Length), Want: 24}, abitest.Field{Name: "iova", Got: unsafe.Offsetof(im.IOVA), Want: 32})
	var iu ioasUnmap
	abitest.CheckLayout(t, "iommu_ioas_unmap", unsafe.Sizeof(iu), 24,
		abitest.Field{Name: "ioas_id", Got: unsafe.Offsetof(iu.IOASID), Want: 4}, abitest.Field{Name: "iova", Got: unsafe.Offsetof(iu.IOVA), Want: 8}, abitest.Field{Name: "length", Got: unsafe.Offsetof(iu.Length), Want: 16})
	var id iommuDestroyArg
	abitest.CheckLayout(t, "iommu_destroy", unsafe.Sizeof(id), 8, abitest.Field{Name: "id", Got: unsafe.Offsetof(id.ID), Want: 4})
}

func TestEncodeIRQSet(t *testing.T) {
	b := EncodeIRQSet(vfio.PCIMSIXIRQIndex, 0, []int{7, -1})
	want := []byte{28, 0, 0, 0, 0x24, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}
	if string(b) != string(want) {
		t.Fatalf("irq set = % x\nwant      % x", b, want)
	}
	b = EncodeIRQSet(vfio.PCIMSIXIRQIndex, 3, nil)
	want = []byte{20, 0, 0, 0, 0x21, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if string(b) != string(want) {
		t.Fatalf("disable = % x\nwant      % x", b, want)
	}
}
