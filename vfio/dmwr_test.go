package vfio

import "testing"

// The type capability (device-specific regions such as the DMWr region)
// survives encoding, alone and chained with the others.
func TestRegionInfoTypeCap(t *testing.T) {
	d := DMWrRegionInfo(9, 2, 0x8000)
	out, _, err := DecodeRegionInfo(EncodeRegionInfo(d, 0))
	if err != nil || !out.HasType || out.Type != DMWrRegionType || out.Subtype != DMWrSubtypeBase|2 || out.Size != 0x10000 || out.Readable() || !out.Writable() {
		t.Fatalf("DMWr region decoded %+v, %v", out, err)
	}
	all := RegionInfo{Index: 2, Flags: RegionFlagRead | RegionFlagWrite | RegionFlagMmap, Size: 0x20000,
		Areas: []Area{{0, 0x1000}}, MSIXMappable: true, HasType: true, Type: 7, Subtype: 9}
	out, _, err = DecodeRegionInfo(EncodeRegionInfo(all, 0))
	if err != nil || !out.HasType || out.Type != 7 || out.Subtype != 9 || !out.MSIXMappable || len(out.Areas) != 1 || out.Areas[0] != (Area{0, 0x1000}) {
		t.Fatalf("three capabilities decoded %+v, %v", out, err)
	}
	if off, sup := DMWrTarget(DMWrOffset(0x1040, 0x8000, true), 0x8000); off != 0x1040 || !sup {
		t.Fatalf("ENQCMDS offset round trip: %#x %v", off, sup)
	}
	if off, sup := DMWrTarget(DMWrOffset(0x1040, 0x8000, false), 0x8000); off != 0x1040 || sup {
		t.Fatalf("ENQCMD offset round trip: %#x %v", off, sup)
	}
}
