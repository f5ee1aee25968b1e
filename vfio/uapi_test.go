package vfio

import (
	"testing"
	"unsafe"
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

type field struct {
	name      string
	got, want uintptr
}

func checkLayout(t *testing.T, name string, size, want uintptr, fields ...field) {
	t.Helper()
	if size != want {
		t.Errorf("sizeof(%s) = %d, want %d", name, size, want)
	}
	for _, f := range fields {
		if f.got != f.want {
			t.Errorf("offsetof(%s.%s) = %d, want %d", name, f.name, f.got, f.want)
		}
	}
}

// Sizes and offsets from vfio.md §1.2 (gcc on x86-64).
func TestStructLayouts(t *testing.T) {
	var gs groupStatus
	checkLayout(t, "vfio_group_status", unsafe.Sizeof(gs), 8,
		field{"flags", unsafe.Offsetof(gs.Flags), 4})
	var di deviceInfo
	checkLayout(t, "vfio_device_info(minsz)", unsafe.Sizeof(di), 16,
		field{"flags", unsafe.Offsetof(di.Flags), 4}, field{"num_regions", unsafe.Offsetof(di.NumRegions), 8},
		field{"num_irqs", unsafe.Offsetof(di.NumIrqs), 12})
	var ri regionInfo
	checkLayout(t, "vfio_region_info", unsafe.Sizeof(ri), 32,
		field{"flags", unsafe.Offsetof(ri.Flags), 4}, field{"index", unsafe.Offsetof(ri.Index), 8},
		field{"cap_offset", unsafe.Offsetof(ri.CapOffset), 12}, field{"size", unsafe.Offsetof(ri.Size), 16},
		field{"offset", unsafe.Offsetof(ri.Offset), 24})
	var ch infoCapHeader
	checkLayout(t, "vfio_info_cap_header", unsafe.Sizeof(ch), 8,
		field{"version", unsafe.Offsetof(ch.Version), 2}, field{"next", unsafe.Offsetof(ch.Next), 4})
	var sm sparseMmapCap
	checkLayout(t, "vfio_region_info_cap_sparse_mmap", unsafe.Sizeof(sm), 16,
		field{"nr_areas", unsafe.Offsetof(sm.NrAreas), 8}, field{"reserved", unsafe.Offsetof(sm.Reserved), 12})
	var sa sparseMmapArea
	checkLayout(t, "vfio_region_sparse_mmap_area", unsafe.Sizeof(sa), 16, field{"size", unsafe.Offsetof(sa.Size), 8})
	var tc typeCap
	checkLayout(t, "vfio_region_info_cap_type", unsafe.Sizeof(tc), 16,
		field{"type", unsafe.Offsetof(tc.Type), 8}, field{"subtype", unsafe.Offsetof(tc.Subtype), 12})
	var ii irqInfo
	checkLayout(t, "vfio_irq_info", unsafe.Sizeof(ii), 16,
		field{"flags", unsafe.Offsetof(ii.Flags), 4}, field{"index", unsafe.Offsetof(ii.Index), 8}, field{"count", unsafe.Offsetof(ii.Count), 12})
	var is irqSet
	checkLayout(t, "vfio_irq_set", unsafe.Sizeof(is), 20,
		field{"flags", unsafe.Offsetof(is.Flags), 4}, field{"index", unsafe.Offsetof(is.Index), 8},
		field{"start", unsafe.Offsetof(is.Start), 12}, field{"count", unsafe.Offsetof(is.Count), 16})
	var dm dmaMap
	checkLayout(t, "vfio_iommu_type1_dma_map", unsafe.Sizeof(dm), 32,
		field{"flags", unsafe.Offsetof(dm.Flags), 4}, field{"vaddr", unsafe.Offsetof(dm.Vaddr), 8},
		field{"iova", unsafe.Offsetof(dm.IOVa), 16}, field{"size", unsafe.Offsetof(dm.Size), 24})
	var du dmaUnmap
	checkLayout(t, "vfio_iommu_type1_dma_unmap", unsafe.Sizeof(du), 24,
		field{"iova", unsafe.Offsetof(du.IOVa), 8}, field{"size", unsafe.Offsetof(du.Size), 16})
	var b bindIOMMUFD
	checkLayout(t, "vfio_device_bind_iommufd(v1)", unsafe.Sizeof(b), 16,
		field{"iommufd", unsafe.Offsetof(b.IOMMUFD), 8}, field{"out_devid", unsafe.Offsetof(b.OutDevID), 12})
	var at attachIOMMUFDPT
	checkLayout(t, "vfio_device_attach_iommufd_pt(v1)", unsafe.Sizeof(at), 12, field{"pt_id", unsafe.Offsetof(at.PtID), 8})
	var al ioasAlloc
	checkLayout(t, "iommu_ioas_alloc", unsafe.Sizeof(al), 12, field{"out_ioas_id", unsafe.Offsetof(al.OutIOASID), 8})
	var im ioasMap
	checkLayout(t, "iommu_ioas_map", unsafe.Sizeof(im), 40,
		field{"flags", unsafe.Offsetof(im.Flags), 4}, field{"ioas_id", unsafe.Offsetof(im.IOASID), 8},
		field{"__reserved", unsafe.Offsetof(im.Reserved), 12}, field{"user_va", unsafe.Offsetof(im.UserVA), 16},
		field{"length", unsafe.Offsetof(im.Length), 24}, field{"iova", unsafe.Offsetof(im.IOVA), 32})
	var iu ioasUnmap
	checkLayout(t, "iommu_ioas_unmap", unsafe.Sizeof(iu), 24,
		field{"ioas_id", unsafe.Offsetof(iu.IOASID), 4}, field{"iova", unsafe.Offsetof(iu.IOVA), 8}, field{"length", unsafe.Offsetof(iu.Length), 16})
	var id iommuDestroyArg
	checkLayout(t, "iommu_destroy", unsafe.Sizeof(id), 8, field{"id", unsafe.Offsetof(id.ID), 4})
}

func TestEncodeIRQSet(t *testing.T) {
	b := EncodeIRQSet(PCIMSIXIRQIndex, 0, []int{7, -1})
	want := []byte{28, 0, 0, 0, 0x24, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}
	if string(b) != string(want) {
		t.Fatalf("irq set = % x\nwant      % x", b, want)
	}
	b = EncodeIRQSet(PCIMSIXIRQIndex, 3, nil)
	want = []byte{20, 0, 0, 0, 0x21, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if string(b) != string(want) {
		t.Fatalf("disable = % x\nwant      % x", b, want)
	}
}

func TestRegionInfoRoundTrip(t *testing.T) {
	in := RegionInfo{Index: 2, Flags: RegionFlagRead | RegionFlagWrite | RegionFlagMmap, Size: 0x20000,
		Areas: []Area{{0, 0x1000}, {0x1000, 0x1000}}, MSIXMappable: true}
	buf := EncodeRegionInfo(in, 0x40000000000)
	if len(buf) != 32+16+32+8 {
		t.Fatalf("encoded %d bytes, want 88", len(buf))
	}
	out, off, err := DecodeRegionInfo(buf)
	if err != nil {
		t.Fatal(err)
	}
	if off != 0x40000000000 || out.Size != in.Size || out.Index != 2 || !out.MSIXMappable || len(out.Areas) != 2 ||
		out.Areas[1] != (Area{0x1000, 0x1000}) || out.Flags&RegionFlagCaps == 0 {
		t.Fatalf("decoded %+v off %#x", out, off)
	}
	// No caps and MMAP: the whole region is one area.
	whole := EncodeRegionInfo(RegionInfo{Index: 0, Flags: RegionFlagRead | RegionFlagMmap, Size: 0x1000, Areas: []Area{{0, 0x1000}}}, 0)
	out, _, err = DecodeRegionInfo(whole)
	if err != nil || len(whole) != 32 || len(out.Areas) != 1 || out.Areas[0] != (Area{0, 0x1000}) {
		t.Fatalf("whole-region decode %+v, %v (len %d)", out, err, len(whole))
	}
}

func TestDecodeRegionInfoHostile(t *testing.T) {
	good := EncodeRegionInfo(RegionInfo{Index: 2, Flags: 7, Size: 0x2000, Areas: []Area{{0, 0x1000}}}, 0)
	cases := map[string]func([]byte) []byte{
		"short":          func(b []byte) []byte { return b[:20] },
		"cap past end":   func(b []byte) []byte { b[12] = 200; return b },
		"cap in header":  func(b []byte) []byte { b[12] = 8; return b },
		"too many areas": func(b []byte) []byte { b[40] = 9; return b },
		"area past size": func(b []byte) []byte { b[48+8+1] = 0x30; return b },
		"loop":           func(b []byte) []byte { b[36] = 32; return b },
	}
	for name, mut := range cases {
		b := mut(append([]byte(nil), good...))
		if _, _, err := DecodeRegionInfo(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}
