package layout

import (
	"testing"
)

func TestRAMSplit(t *testing.T) {
	r, err := RAM(512 * MiB)
	if err != nil || len(r) != 1 || r[0] != (Region{0, 512 * MiB}) {
		t.Fatalf("512M: %v %v", r, err)
	}
	r, err = RAM(4 * GiB)
	if err != nil || len(r) != 2 || r[0] != (Region{0, LowRAMEnd}) || r[1] != (Region{HighRAM, GiB}) {
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
		r    Region
	}
	fixed := []named{
		{"gdt", Region{BootGDT, BootGDTSize}},
		{"idt", Region{BootIDT, 8}},
		{"setup_data", Region{SetupData, 0x1000}},
		{"zero page", Region{ZeroPage, 0x1000}},
		{"stack", Region{BootStack - 0x800, 0x800}},
		{"page tables", Region{PML4, 0x2000 + PageDirs*0x1000}},
		{"cmdline", Region{Cmdline, CmdlineMax}},
		{"acpi", Region{ACPIStart, ACPISize}},
		{"mptable", Region{MPTable, MPTableMax}},
		{"kernel", Region{HighMemStart, 1}},
		{"mmio32", Region{MMIO32Start, MMIO32Size}},
		{"ecam", Region{ECAMStart, ECAMSize}},
		{"ioapic", Region{IOAPICBase, IOAPICSize}},
		{"lapic", Region{LAPICBase, LAPICSize}},
		{"mmio64", Region{MMIO64Start, MMIO64Size}},
		{"kvm ident map", Region{KVMIdentMap, 0x1000}},
		{"kvm tss", Region{KVMTSS, 0x3000}},
	}
	for i, a := range fixed {
		for _, b := range fixed[i+1:] {
			if a.r.Start < b.r.End() && b.r.Start < a.r.End() {
				t.Errorf("%s %#x+%#x overlaps %s %#x+%#x", a.name, a.r.Start, a.r.Size, b.name, b.r.Start, b.r.Size)
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
	ports := map[string]Region{
		"COM1": {PortCOM1, 8}, "CMOS": {PortCMOS, 2}, "POST": {PortPOST, 1}, "i8042": {PortI8042Cmd, 1}, "debug exit": {PortDebugExit, 1},
		"boot timer": {PortBootTimer, 1}, "pv64b": {PortPV64B, 1}, "pvpanic": {PortPVPanic, 1},
		"PM1a event": {PortPM1aEvent, 4}, "PM1a control": {PortPM1aCtrl, 2}, "reset": {PortResetCF9, 1},
		"PCI config": {PortPCIConfig, 8}, "PIC/PIT/ELCR (KVM)": {0x20, 0x4d2 - 0x20},
	}
	w := Region{PCIIOStart, PCIIOSize}
	for name, p := range ports {
		if p.Start < w.End() && w.Start < p.End() {
			t.Errorf("%s %#x+%d is inside the PCI I/O window %#x-%#x", name, p.Start, p.Size, w.Start, w.End()-1)
		}
	}
	if w.End() > 1<<16 || w.Start < 0x1000 || w.Start%w.Size != 0 {
		t.Errorf("PCI I/O window %#x+%#x", w.Start, w.Size)
	}
}
