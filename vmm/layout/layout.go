// Package layout is godvm's guest-physical address map: every fixed address,
// port and interrupt line the VMM, the boot code, the ACPI/MP tables and the
// device windows use is defined here and nowhere else. Packages outside vmm
// (devices/acpi, devices/pci) hold none of their own: vmm passes these in
// (vmm/tables.go), and vmm/tables_test.go checks that the generated tables
// and the PCI root's ports equal them.
//
//	0x0000_0000  ┌──────────────────────────────┐
//	             │ real-mode IVT / BDA (unused)  │
//	0x0000_0500  │ boot GDT        (BootGDT)     │
//	0x0000_0540  │ boot IDT        (BootIDT)     │
//	0x0000_6000  │ setup_data: RNG seed          │
//	0x0000_7000  │ boot_params "zero page"       │
//	0x0000_8ff0  │ boot stack top  (BootStack)   │
//	0x0000_9000  │ PML4, PDPT, 4 PDs (identity)  │
//	0x0002_0000  │ kernel command line           │
//	0x0009_fc00  ├──────── reserved (e820) ──────┤ EBDA, VGA, option ROMs
//	0x000e_0000  │ ACPI tables (RSDP first)      │
//	0x000f_0000  │ MP floating pointer + table   │
//	0x0010_0000  ├──────── RAM ──────────────────┤
//	             │ kernel (bzImage at 1 MiB or   │
//	             │ pref_address, vmlinux at its  │
//	             │ PT_LOAD paddrs), initrd high  │
//	0xc000_0000  ├──────── MMIO32 window ────────┤ PCI BARs
//	0xe000_0000  │ PCI ECAM (bus 0: 1 MiB)       │
//	0xfec0_0000  │ IOAPIC                        │
//	0xfee0_0000  │ LAPIC                         │
//	0x1_0000_0000├──────── RAM above 4 GiB ──────┤ whatever did not fit below
//	0x10_0000_0000 MMIO64 window (64 GiB)        │ 64-bit PCI BARs
//
// Ports: godvm's own devices sit below 0xd00 (Port* constants); the PCI
// I/O window (I/O BARs) is 0xc000-0xffff.
package layout

import (
	"fmt"

	"godvm/addr"
)

const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
)

// Boot structures in low memory (all inside the first RAM region).
const (
	BootGDT      = 0x500  // GDT used at the 64-bit entry
	BootGDTSize  = 0x30   // null, null, code 0x10, data 0x18, TSS 0x20 (16 bytes); see vmm/x86
	BootIDT      = 0x540  // empty IDT
	SetupData    = 0x6000 // SETUP_RNG_SEED setup_data node (one page)
	ZeroPage     = 0x7000 // struct boot_params (4 KiB)
	BootStack    = 0x8ff0 // initial RSP/RBP
	PML4         = 0x9000 // identity-map page tables: PML4
	PDPT         = 0xa000 // one PDPT
	PDBase       = 0xb000 // PageDirs PDs of 512 x 2 MiB, consecutive pages
	PageDirs     = 4      // 4 PDs cover 4 GiB
	Cmdline      = 0x20000
	CmdlineMax   = 2048 // x86 COMMAND_LINE_SIZE, including the NUL
	HighMemStart = 1 * MiB
)

// The legacy BIOS area, reserved in the e820 map. ACPI tables and the MP
// table live in guest RAM here so that the guest's scans find them.
const (
	EBDAStart  = 0x9fc00
	BIOSEnd    = 0x100000
	ACPIStart  = 0xe0000 // RSDP first (the guest scans 0xE0000-0xFFFFF)
	ACPISize   = 0x10000
	MPTable    = 0xf0000 // MP floating pointer, then the config table
	MPTableMax = 0x10000
)

// The 32-bit hole and what lives in it.
const (
	LowRAMEnd   = 0xc000_0000 // RAM below 4 GiB stops here (3 GiB)
	MMIO32Start = 0xc000_0000
	MMIO32Size  = 0x2000_0000 // up to the ECAM
	ECAMStart   = 0xe000_0000
	// ECAMSize covers bus 0 only: godvm's PCI has one root bus and no
	// bridges. Declaring 256 buses (MCFG, _CRS) made Linux probe buses
	// 1-255 for peer bridges through port 0xcf8/0xcfc at boot: 16,000 port
	// exits, measured on kvm_pvm (38,166 -> 21,930 per boot).
	ECAMSize    = 0x10_0000
	IOAPICBase  = 0xfec0_0000
	IOAPICSize  = 0x1000
	LAPICBase   = 0xfee0_0000
	LAPICSize   = 0x1000
	KVMIdentMap = 0xfffb_c000   // KVM_SET_IDENTITY_MAP_ADDR (one page, Intel real mode)
	KVMTSS      = 0xfffb_d000   // KVM_SET_TSS_ADDR (three pages)
	HighRAM     = 0x1_0000_0000 // RAM above the hole starts at 4 GiB
	MMIO64Start = 0x10_0000_0000
	MMIO64Size  = 0x10_0000_0000
)

// Memory limits that godvm accepts.
const (
	MinMemory = 32 * MiB
	MaxMemory = LowRAMEnd + (MMIO64Start - HighRAM) // RAM must end below the MMIO64 window
)

// Legacy port I/O and interrupt lines.
const (
	PortCOM1      = 0x3f8 // eight ports
	IRQCOM1       = 4
	PortCMOS      = 0x70 // index, data at 0x71
	PortPOST      = 0x80 // POST code (written, ignored)
	PortI8042Cmd  = 0x64 // i8042 command/status (0x60, its data port, is not decoded)
	PortDebugExit = 0xf4
	PortBootTimer = 0xf5
	PortPV64B     = 0xf6 // paravirtual 64-byte store (MOVDIR64B/ENQCMDS): protocol in vmm/emulate's package doc
	PortPVPanic   = 0x505
	PortPM1aEvent = 0x600 // 4 bytes
	PortPM1aCtrl  = 0x604 // 2 bytes
	PortPCIConfig = 0xcf8 // PCI configuration mechanism #1: 0xcf8 address, 0xcf9 reset, 0xcfc-0xcff data
	PortResetCF9  = PortPCIConfig + 1
	IOAPICPins    = 24 // GSIs 0-23 are IOAPIC pins (KVM's IOAPIC)
	SCIIRQ        = 9
	PITGSI        = 2          // ISA IRQ0 (KVM's PIT) is wired to IOAPIC pin 2; GSI 2 (the PIC cascade) has no route
	FirstMSIGSI   = IOAPICPins // GSIs from here on are MSI routes
	MaxVCPUs      = 254        // APIC IDs 0..N-1; the IOAPIC takes ID N
	DefaultMemory = 512 * MiB
	DefaultVCPUs  = 1
)

// The PCI host bridge's I/O window: I/O-space BARs are placed here, and
// the DSDT's _CRS of PCI0 declares it, the only port range the bridge
// forwards. It is above every port godvm decodes itself (all below 0xd00:
// the Port* constants, and the PIC, PIT and speaker ports KVM emulates) and
// above the ISA range Linux keeps for legacy devices (PCIBIOS_MIN_IO,
// 0x1000); SeaBIOS places I/O BARs from 0xc000 too. 16 KiB: 64 BARs of 256
// ports.
const (
	PCIIOStart = 0xc000
	PCIIOSize  = 0x4000
)

// RAM splits size bytes of guest RAM around the 32-bit hole: up to LowRAMEnd
// from 0, the rest from 4 GiB.
func RAM(size uint64) ([]addr.Range, error) {
	if size < MinMemory {
		if size < MiB {
			return nil, fmt.Errorf("memory size %d bytes is too small (minimum %d MiB)", size, MinMemory/MiB)
		}
		return nil, fmt.Errorf("memory size %d MiB is too small (minimum %d MiB)", size/MiB, MinMemory/MiB)
	}
	if size > MaxMemory {
		return nil, fmt.Errorf("memory size %d MiB is too large (maximum %d MiB)", size/MiB, uint64(MaxMemory)/MiB)
	}
	if !addr.PageAligned(size) {
		return nil, fmt.Errorf("memory size %d is not a multiple of 4 KiB", size)
	}
	if size <= LowRAMEnd {
		return []addr.Range{{Base: 0, Size: size}}, nil
	}
	return []addr.Range{{Base: 0, Size: LowRAMEnd}, {Base: HighRAM, Size: size - LowRAMEnd}}, nil
}

// E820Type is the kind of an e820 entry.
type E820Type uint32

const (
	E820RAM      E820Type = 1
	E820Reserved E820Type = 2
	E820ACPI     E820Type = 3
)

// E820Entry is one line of the guest's memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       E820Type
}

// E820 is the guest's memory map for the given RAM: usable RAM below the
// EBDA, the reserved BIOS area (ACPI and MP tables), RAM from 1 MiB to the
// hole, RAM above 4 GiB, and the ECAM window reserved (Linux wants MMCONFIG
// reserved in e820 before it trusts MCFG).
func E820(ram []addr.Range) []E820Entry {
	var out []E820Entry
	for _, r := range ram {
		if r.Base == 0 {
			out = append(out,
				E820Entry{0, EBDAStart, E820RAM},
				E820Entry{EBDAStart, BIOSEnd - EBDAStart, E820Reserved})
			if r.End() > BIOSEnd {
				out = append(out, E820Entry{BIOSEnd, r.End() - BIOSEnd, E820RAM})
			}
			continue
		}
		out = append(out, E820Entry{r.Base, r.Size, E820RAM})
	}
	// The ECAM sits between RAM below 4 GiB and the IOAPIC.
	out = append(out, E820Entry{ECAMStart, ECAMSize, E820Reserved})
	sortE820(out)
	return out
}

func sortE820(e []E820Entry) {
	for i := 1; i < len(e); i++ {
		for j := i; j > 0 && e[j].Addr < e[j-1].Addr; j-- {
			e[j], e[j-1] = e[j-1], e[j]
		}
	}
}

// LowRAMTop returns the end of the RAM region that starts at 0.
func LowRAMTop(ram []addr.Range) uint64 {
	for _, r := range ram {
		if r.Base == 0 {
			return r.End()
		}
	}
	return 0
}
