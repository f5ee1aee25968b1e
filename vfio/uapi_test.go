package vfio

import (
	"testing"
	"unsafe"

	"godvm/internal/abi/abitest"
)

// Sizes and offsets of the region-info layouts both back ends use, from
// include/uapi/linux/vfio.h (gcc on x86-64).
func TestStructLayouts(t *testing.T) {
	var ri regionInfo
	abitest.CheckLayout(t, "vfio_region_info", unsafe.Sizeof(ri), 32,
		abitest.Field{Name: "flags", Got: unsafe.Offsetof(ri.Flags), Want: 4}, abitest.Field{Name: "index", Got: unsafe.Offsetof(ri.Index), Want: 8},
		abitest.Field{Name: "cap_offset", Got: unsafe.Offsetof(ri.CapOffset), Want: 12}, abitest.Field{Name: "size", Got: unsafe.Offsetof(ri.Size), Want: 16},
		abitest.Field{Name: "offset", Got: unsafe.Offsetof(ri.Offset), Want: 24})
	var ch infoCapHeader
	abitest.CheckLayout(t, "vfio_info_cap_header", unsafe.Sizeof(ch), 8,
		abitest.Field{Name: "version", Got: unsafe.Offsetof(ch.Version), Want: 2}, abitest.Field{Name: "next", Got: unsafe.Offsetof(ch.Next), Want: 4})
	var sm sparseMmapCap
	abitest.CheckLayout(t, "vfio_region_info_cap_sparse_mmap", unsafe.Sizeof(sm), 16,
		abitest.Field{Name: "nr_areas", Got: unsafe.Offsetof(sm.NrAreas), Want: 8}, abitest.Field{Name: "reserved", Got: unsafe.Offsetof(sm.Reserved), Want: 12})
	var sa sparseMmapArea
	abitest.CheckLayout(t, "vfio_region_sparse_mmap_area", unsafe.Sizeof(sa), 16, abitest.Field{Name: "size", Got: unsafe.Offsetof(sa.Size), Want: 8})
	var tc typeCap
	abitest.CheckLayout(t, "vfio_region_info_cap_type", unsafe.Sizeof(tc), 16,
		abitest.Field{Name: "type", Got: unsafe.Offsetof(tc.Type), Want: 8}, abitest.Field{Name: "subtype", Got: unsafe.Offsetof(tc.Subtype), Want: 12})
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
