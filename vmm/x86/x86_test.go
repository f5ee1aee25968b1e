package x86

import (
	"encoding/binary"
	"testing"

	"godvm/vmm/layout"
)

func TestGDTEntries(t *testing.T) {
	g := GDT()
	if g[0] != 0 || g[1] != 0 {
		t.Errorf("null descriptors: %#x %#x", g[0], g[1])
	}
	// Well-known encodings of flat 64-bit code and data descriptors.
	if g[2] != 0x00af9b000000ffff {
		t.Errorf("code descriptor %#x", g[2])
	}
	if g[3] != 0x00cf93000000ffff {
		t.Errorf("data descriptor %#x", g[3])
	}
	if g[4] != 0x00008b0000000067 {
		t.Errorf("tss descriptor %#x", g[4])
	}
	if n := len(GDTBytes()); n != layout.BootGDTSize {
		t.Errorf("GDT is %d bytes, layout reserves %d", n, layout.BootGDTSize)
	}
	if got := GDTEntry(0x4093, 0x12345678, 0xabcde); got != 0x124a93345678bcde {
		t.Errorf("GDTEntry base/limit split %#x", got)
	}
}

func TestSegmentDecode(t *testing.T) {
	s := BootSregs()
	want := Segment{Base: 0, Limit: 0xffffffff, Selector: SelCode, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
	if s.CS != want {
		t.Errorf("CS %+v, want %+v", s.CS, want)
	}
	wantD := Segment{Limit: 0xffffffff, Selector: SelData, Type: 3, Present: 1, S: 1, DB: 1, G: 1}
	for _, seg := range []Segment{s.DS, s.ES, s.SS, s.FS, s.GS} {
		if seg != wantD {
			t.Errorf("data segment %+v, want %+v", seg, wantD)
		}
	}
	if s.TR.Type != 0xb || s.TR.S != 0 || s.TR.Present != 1 || s.TR.Limit != 0x67 || s.TR.Selector != SelTSS {
		t.Errorf("TR %+v", s.TR)
	}
	if s.GDT.Base != layout.BootGDT || int(s.GDT.Limit) != layout.BootGDTSize-1 {
		t.Errorf("GDTR %+v", s.GDT)
	}
	if s.CR0&(CR0PE|CR0PG) != CR0PE|CR0PG || s.CR4&CR4PAE == 0 || s.EFER != EFERLME|EFERLMA || s.CR3 != layout.PML4 {
		t.Errorf("long mode not set up: cr0=%#x cr4=%#x efer=%#x cr3=%#x", s.CR0, s.CR4, s.EFER, s.CR3)
	}
	if SegmentFromGDT(0, 0).Unusable != 1 {
		t.Error("null descriptor should be unusable")
	}
}

func TestBootRegs(t *testing.T) {
	r := BootRegs(0x1000000, layout.ZeroPage)
	if r.RIP != 0x1000000 || r.RSI != layout.ZeroPage || r.RSP != layout.BootStack || r.RFLAGS != 2 {
		t.Errorf("%+v", r)
	}
}

func TestPageTables(t *testing.T) {
	gpa, b := PageTables()
	if gpa != layout.PML4 {
		t.Fatalf("page tables at %#x", gpa)
	}
	u := func(off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }
	if u(0) != 0xa003 {
		t.Errorf("PML4[0] %#x", u(0))
	}
	for i := 1; i < 512; i++ {
		if u(8*i) != 0 {
			t.Fatalf("PML4[%d] %#x", i, u(8*i))
		}
	}
	for i := 0; i < 4; i++ {
		if got, want := u(0x1000+8*i), uint64(0xb003+i*0x1000); got != want {
			t.Errorf("PDPT[%d] %#x, want %#x", i, got, want)
		}
	}
	if u(0x1000+8*4) != 0 {
		t.Error("PDPT[4] should be empty")
	}
	// Every 2 MiB page maps to itself: walk some addresses through the tables.
	for _, va := range []uint64{0, 0x1000000, 0x7fffffff, 0xbfe00000, 0xfee00000, 0xffffffff} {
		pdpte := u(0x1000 + 8*int(va>>30))
		pd := int(pdpte&^0xfff) - layout.PML4
		pde := u(pd + 8*int((va>>21)&511))
		if pde&(PTEPresent|PTEHuge) != PTEPresent|PTEHuge {
			t.Fatalf("va %#x: pde %#x", va, pde)
		}
		if pa := pde&^0x1fffff | va&0x1fffff; pa != va {
			t.Errorf("va %#x maps to %#x", va, pa)
		}
	}
	if u(0x2000+8*5) != 5<<21|0x83 {
		t.Errorf("PD[0][5] %#x", u(0x2000+8*5))
	}
}

func TestBootMSRs(t *testing.T) {
	seen := map[uint32]uint64{}
	for _, m := range BootMSRs() {
		if _, dup := seen[m.Index]; dup {
			t.Errorf("MSR %#x listed twice", m.Index)
		}
		seen[m.Index] = m.Value
	}
	if seen[MSRMTRRDefType] != 0x806 || seen[MSRMiscEnable] != 1 {
		t.Errorf("%v", seen)
	}
}

func TestSetLINT(t *testing.T) {
	regs := make([]byte, 0x400)
	binary.LittleEndian.PutUint32(regs[APICLVT0:], 0x10700) // masked, some mode
	binary.LittleEndian.PutUint32(regs[APICLVT1:], 0x10000)
	if !SetLINT(regs) {
		t.Fatal("SetLINT refused a full page")
	}
	if v := binary.LittleEndian.Uint32(regs[APICLVT0:]); v != 0x10700 {
		t.Errorf("LVT0 %#x", v)
	}
	if v := binary.LittleEndian.Uint32(regs[APICLVT1:]); v != 0x10400 {
		t.Errorf("LVT1 %#x", v)
	}
	if SetLINT(make([]byte, 10)) {
		t.Error("SetLINT accepted a short buffer")
	}
}

func TestCPUIDForVCPU(t *testing.T) {
	sup := []CPUIDEntry{
		{Function: 0, EAX: 0xd},
		{Function: 1, EBX: 0xff000800, ECX: 0x1, EDX: 0},
		{Function: 0xa, EAX: 0x7300402},
		{Function: 0xb, Index: 0, EDX: 9},
		{Function: 0xb, Index: 1, EDX: 9},
	}
	out := CPUIDForVCPU(sup, 3, 4)
	if sup[1].EBX != 0xff000800 {
		t.Fatal("input table modified")
	}
	if out[1].EBX != 0x03040800 || out[1].ECX != 0x80000001 || out[1].EDX&(1<<28) == 0 {
		t.Errorf("leaf 1 %+v", out[1])
	}
	if out[2].EAX != 0 {
		t.Errorf("leaf 0xa %+v", out[2])
	}
	if out[3].EDX != 3 || out[4].EDX != 3 {
		t.Errorf("leaf 0xb %+v %+v", out[3], out[4])
	}
	if one := CPUIDForVCPU(sup, 0, 1); one[1].EDX&(1<<28) != 0 {
		t.Error("HTT set for one CPU")
	}
}
