package layout

import (
	"testing"

	"godvm/addr"
)

func TestRAMSplit(t *testing.T) {
	r, err := RAM(512 * MiB)
	if err != nil || len(r) != 1 || r[0] != (addr.Range{Base: 0, Size: 512 * MiB}) {
		t.Fatalf("512M: %v %v", r, err)
	}
	r, err = RAM(4 * GiB)
	if err != nil || len(r) != 2 || r[0] != (addr.Range{Base: 0, Size: LowRAMEnd}) || r[1] != (addr.Range{Base: HighRAM, Size: GiB}) {
		t.Fatalf("4G: %v %v", r, err)
	}
	for _, bad := range []uint64{0, MinMemory - 4096, MaxMemory + 4096, 64*MiB + 1} {
		if _, err := RAM(bad); err == nil {
			t.Errorf("RAM(%#x) accepted", bad)
		}
	}
	r, err = RAM(MaxMemory)
	if err != nil || r[len(r)-1].End() > MMIO64Start {
		t.Fatalf("max: %v %v", r, err)
	}
}

// Fixed regions must not overlap each other, and each must sit where the
// guest expects it.
func TestFixedRegionsDisjoint(t *testing.T) {
	type named struct {
		name string
		r    addr.Range
	}
	fixed := []named{
		{"gdt", addr.Range{Base: BootGDT, Size: BootGDTSize}},
		{"idt", addr.Range{Base: BootIDT, Size: 8}},
		{"setup_data", addr.Range{Base: SetupData, Size: 0x1000}},
		{"zero page", addr.Range{Base: ZeroPage, Size: 0x1000}},
		{"stack", addr.Range{Base: BootStack - 0x800, Size: 0x800}},
		{"page tables", addr.Range{Base: PML4, Size: 0x2000 + PageDirs*0x1000}},
		{"cmdline", addr.Range{Base: Cmdline, Size: CmdlineMax}},
		{"acpi", addr.Range{Base: ACPIStart, Size: ACPISize}},
		{"mptable", addr.Range{Base: MPTable, Size: MPTableMax}},
		{"kernel", addr.Range{Base: HighMemStart, Size: 1}},
		{"mmio32", addr.Range{Base: MMIO32Start, Size: MMIO32Size}},
		{"ecam", addr.Range{Base: ECAMStart, Size: ECAMSize}},
		{"ioapic", addr.Range{Base: IOAPICBase, Size: IOAPICSize}},
		{"lapic", addr.Range{Base: LAPICBase, Size: LAPICSize}},
		{"mmio64", addr.Range{Base: MMIO64Start, Size: MMIO64Size}},
		{"kvm ident map", addr.Range{Base: KVMIdentMap, Size: 0x1000}},
		{"kvm tss", addr.Range{Base: KVMTSS, Size: 0x3000}},
	}
	for i, a := range fixed {
		for _, b := range fixed[i+1:] {
			if a.r.Base < b.r.End() && b.r.Base < a.r.End() {
				t.Errorf("%s %#x+%#x overlaps %s %#x+%#x", a.name, a.r.Base, a.r.Size, b.name, b.r.Base, b.r.Size)
			}
		}
	}
	// Low boot structures below the EBDA, tables inside the BIOS area.
	for _, n := range fixed[:7] {
		if n.r.End() > EBDAStart {
			t.Errorf("%s ends above the EBDA", n.name)
		}
	}
	if ACPIStart < EBDAStart || ACPIStart+ACPISize > MPTable || MPTable+MPTableMax > BIOSEnd {
		t.Error("ACPI/MP areas are not inside the reserved BIOS area")
	}
	if MMIO32Start+MMIO32Size != ECAMStart || ECAMStart+ECAMSize > IOAPICBase {
		t.Error("32-bit hole layout broken")
	}
	if PageDirs*GiB < 4*GiB {
		t.Error("identity map does not cover 4 GiB")
	}
}

func TestE820(t *testing.T) {
	for _, size := range []uint64{MinMemory, 512 * MiB, 3 * GiB, 8 * GiB} {
		ram, err := RAM(size)
		if err != nil {
			t.Fatal(err)
		}
		e := E820(ram)
		var total uint64
		for i, x := range e {
			if i > 0 && e[i-1].Addr+e[i-1].Size > x.Addr {
				t.Errorf("%d: entries %d and %d overlap: %+v", size, i-1, i, e)
			}
			if x.Type == E820RAM {
				total += x.Size
				if x.Addr < BIOSEnd && x.Addr+x.Size > EBDAStart {
					t.Errorf("RAM entry covers the BIOS area: %+v", x)
				}
				if x.Addr < HighRAM && x.Addr+x.Size > LowRAMEnd {
					t.Errorf("RAM entry in the hole: %+v", x)
				}
			}
		}
		if want := size - (BIOSEnd - EBDAStart); total != want {
			t.Errorf("%d: usable RAM %#x, want %#x", size, total, want)
		}
		if e[0] != (E820Entry{0, EBDAStart, E820RAM}) {
			t.Errorf("first entry %+v", e[0])
		}
	}
}

// TestPCIIOWindow: the I/O window holds none of godvm's own ports, fits
// the 64 KiB port space and is aligned for its largest BAR.
func TestPCIIOWindow(t *testing.T) {
	ports := map[string]addr.Range{
		"COM1": {Base: PortCOM1, Size: 8}, "CMOS": {Base: PortCMOS, Size: 2}, "POST": {Base: PortPOST, Size: 1}, "i8042": {Base: PortI8042Cmd, Size: 1}, "debug exit": {Base: PortDebugExit, Size: 1},
		"boot timer": {Base: PortBootTimer, Size: 1}, "pv64b": {Base: PortPV64B, Size: 1}, "pvpanic": {Base: PortPVPanic, Size: 1},
		"PM1a event": {Base: PortPM1aEvent, Size: 4}, "PM1a control": {Base: PortPM1aCtrl, Size: 2}, "reset": {Base: PortResetCF9, Size: 1},
		"PCI config": {Base: PortPCIConfig, Size: 8}, "PIC/PIT/ELCR (KVM)": {Base: 0x20, Size: 0x4d2 - 0x20},
	}
	w := addr.Range{Base: PCIIOStart, Size: PCIIOSize}
	for name, p := range ports {
		if p.Base < w.End() && w.Base < p.End() {
			t.Errorf("%s %#x+%d is inside the PCI I/O window %#x-%#x", name, p.Base, p.Size, w.Base, w.End()-1)
		}
	}
	if w.End() > 1<<16 || w.Base < 0x1000 || w.Base%w.Size != 0 {
		t.Errorf("PCI I/O window %#x+%#x", w.Base, w.Size)
	}
}
