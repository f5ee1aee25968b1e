package boot

import (
	"encoding/binary"
	"reflect"
	"testing"

	"godvm/vmm/layout"
)

// packedOffset is the offset of field name in v as encoding/binary lays it
// out (packed, no alignment), which is how the kernel declares these structs.
func packedOffset(t *testing.T, v any, name string) int {
	t.Helper()
	rt := reflect.TypeOf(v)
	off := 0
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		if f.Name == name {
			return off
		}
		off += binary.Size(reflect.Zero(f.Type).Interface())
	}
	t.Fatalf("%s has no field %s", rt, name)
	return 0
}

// Offsets from Documentation/arch/x86/zero-page.rst and boot.rst.
func TestBootParamsLayout(t *testing.T) {
	if n := binary.Size(BootParams{}); n != 4096 {
		t.Fatalf("boot_params is %d bytes, want 4096", n)
	}
	if n := binary.Size(E820Entry{}); n != 20 {
		t.Fatalf("boot_e820_entry is %d bytes, want 20", n)
	}
	for _, c := range []struct {
		field string
		off   int
	}{
		{"ACPIRSDPAddr", 0x070},
		{"ExtRamdiskImage", 0x0c0},
		{"ExtRamdiskSize", 0x0c4},
		{"ExtCmdLinePtr", 0x0c8},
		{"E820Entries", 0x1e8},
		{"Sentinel", 0x1ef},
		{"Hdr", 0x1f1},
		{"E820Table", 0x2d0},
	} {
		if got := packedOffset(t, BootParams{}, c.field); got != c.off {
			t.Errorf("boot_params.%s at %#x, want %#x", c.field, got, c.off)
		}
	}
}

func TestSetupHeaderLayout(t *testing.T) {
	if n := binary.Size(SetupHeader{}); n != HdrEnd-HdrOffset {
		t.Fatalf("setup_header is %#x bytes, want %#x", n, HdrEnd-HdrOffset)
	}
	for _, c := range []struct {
		field string
		off   int
	}{
		{"SetupSects", 0x1f1}, {"RootFlags", 0x1f2}, {"Syssize", 0x1f4},
		{"VidMode", 0x1fa}, {"BootFlag", 0x1fe}, {"Jump", 0x200},
		{"Header", 0x202}, {"Version", 0x206}, {"KernelVersion", 0x20e},
		{"TypeOfLoader", 0x210}, {"Loadflags", 0x211}, {"Code32Start", 0x214},
		{"RamdiskImage", 0x218}, {"RamdiskSize", 0x21c}, {"HeapEndPtr", 0x224},
		{"ExtLoaderVer", 0x226}, {"CmdLinePtr", 0x228}, {"InitrdAddrMax", 0x22c},
		{"KernelAlignment", 0x230}, {"RelocatableKernel", 0x234}, {"MinAlignment", 0x235},
		{"Xloadflags", 0x236}, {"CmdlineSize", 0x238}, {"HardwareSubarch", 0x23c},
		{"HardwareSubarchData", 0x240}, {"PayloadOffset", 0x248}, {"PayloadLength", 0x24c},
		{"SetupData", 0x250}, {"PrefAddress", 0x258}, {"InitSize", 0x260},
		{"HandoverOffset", 0x264}, {"KernelInfoOffset", 0x268},
	} {
		if got := HdrOffset + packedOffset(t, SetupHeader{}, c.field); got != c.off {
			t.Errorf("setup_header.%s at %#x, want %#x", c.field, got, c.off)
		}
	}
}

func TestBootParamsRoundTrip(t *testing.T) {
	bp := &BootParams{ACPIRSDPAddr: 0xe0000}
	bp.Hdr.CmdLinePtr = 0x20000
	if err := bp.SetE820([]layout.E820Entry{{Addr: 0, Size: 0x9fc00, Type: layout.E820RAM}, {Addr: 0x100000, Size: 0x1000, Type: layout.E820Reserved}}); err != nil {
		t.Fatal(err)
	}
	b := bp.Bytes()
	le := binary.LittleEndian
	if len(b) != 4096 || le.Uint64(b[0x70:]) != 0xe0000 || le.Uint32(b[0x228:]) != 0x20000 || b[0x1e8] != 2 {
		t.Fatalf("encoding wrong: len %d", len(b))
	}
	// e820 entry 1 at 0x2d0 + 20.
	if le.Uint64(b[0x2e4:]) != 0x100000 || le.Uint64(b[0x2ec:]) != 0x1000 || le.Uint32(b[0x2f4:]) != 2 {
		t.Error("e820 entry 1 misplaced")
	}
	back, err := DecodeBootParams(b)
	if err != nil || back.ACPIRSDPAddr != bp.ACPIRSDPAddr || back.E820Table != bp.E820Table || back.Hdr != bp.Hdr {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := DecodeBootParams(b[:100]); err == nil {
		t.Error("short zero page accepted")
	}
	if err := bp.SetE820(make([]layout.E820Entry, E820Max+1)); err == nil {
		t.Error("too many e820 entries accepted")
	}
}

func TestRNGSeedNode(t *testing.T) {
	seed := make([]byte, RNGSeedSize)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	n := RNGSeedNode(seed)
	le := binary.LittleEndian
	if len(n) != 48 || le.Uint64(n) != 0 || le.Uint32(n[8:]) != 9 || le.Uint32(n[12:]) != 32 || n[16] != 1 || n[47] != 32 {
		t.Fatalf("setup_data node % x", n)
	}
	if binary.Size(SetupDataNode{}) != 16 {
		t.Error("struct setup_data header is 16 bytes")
	}
}
