// Package acpi generates godvm's ACPI tables: RSDP (v2), XSDT (and RSDT),
// FADT (full, not hardware-reduced: PM1a blocks, reset register), FACS,
// MADT, MCFG and a DSDT written with a small AML encoder (the PCI host
// bridge with its bus range, I/O and MMIO windows, \_S5, COM1 and the
// pvpanic device).
//
// Build lays the tables out for one guest-physical base address (the VMM
// copies the result to 0xE0000, where the guest's RSDP scan finds it).
package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"

	"godvm/addr"
)

// Config describes the machine the tables describe. Every address and port
// comes from the caller (godvm: vmm/layout); the package holds none of its
// own.
type Config struct {
	Base uint64 // guest-physical address the tables are copied to (16-byte aligned, below 4 GiB)
	CPUs int    // local APICs with IDs 0..CPUs-1 (1..255)

	LAPIC    uint32 // local APIC base (required)
	IOAPIC   uint32 // I/O APIC base (required)
	IOAPICID uint8  // I/O APIC ID (0: CPUs, i.e. after the CPUs' IDs)

	ECAM       uint64     // PCI ECAM base
	ECAMBusEnd uint8      // last bus in the ECAM window (0 for bus 0 only, 255 for 256 MiB)
	Mem32      addr.Range // PCI 32-bit MMIO window
	Mem64      addr.Range // PCI 64-bit MMIO window (Size 0: none)
	// IO is the PCI I/O window (I/O BARs), the one port range the host
	// bridge forwards. Size 0: none (the bridge forwards no ports but its
	// configuration ports, which are always declared).
	IO addr.Range
	// PCIConfigPort is the first of the host bridge's eight configuration
	// mechanism #1 ports (address, reset control, data) (required).
	PCIConfigPort uint16

	PM1aEvent   uint16 // PM1a event block, 4 ports (required)
	PM1aControl uint16 // PM1a control block, 2 ports (required)
	PMTimer     uint16 // PM timer port; 0: no PM timer
	SCI         uint8  // SCI interrupt (required)
	PITGSI      uint32 // the GSI ISA IRQ0 (the PIT) is wired to: an interrupt-source override 0 -> PITGSI
	ResetPort   uint16 // FADT reset register (required)
	ResetValue  uint8  // value written to ResetPort (required)
	COM1Port    uint16 // COM1's eight ports; 0: no COM1 device
	COM1IRQ     uint8  // COM1's ISA IRQ (with COM1Port)
	PVPanicPort uint16 // QEMU0001 pvpanic device port; 0: no pvpanic device

	OEMID      string // 6 characters (default "GODVM ")
	OEMTableID string // 8 characters (default "GODVMACP")
}

// SLPTypS5 is the sleep type of \_S5 {5, 5}: the guest writes it with
// SLP_EN (bit 13) to PM1a control to power off.
const SLPTypS5 = 5

// FADT flags.
const (
	fadtWBINVD      = 1 << 0
	fadtProcC1      = 1 << 2
	fadtPwrButton   = 1 << 4
	fadtSlpButton   = 1 << 5
	fadtTmrValExt   = 1 << 8
	fadtResetRegSup = 1 << 10
	bootArchLegacy  = 1 << 0
	bootArchNoVGA   = 1 << 2
)

// Table sizes.
const (
	rsdpLen   = 36
	headerLen = 36
	fadtLen   = 276
	facsLen   = 64
)

func (c *Config) defaults() error {
	if c.CPUs < 1 || c.CPUs > 255 {
		return fmt.Errorf("acpi: %d CPUs (1..255)", c.CPUs)
	}
	if c.Base%16 != 0 || c.Base >= 1<<32 {
		return fmt.Errorf("acpi: base %#x must be 16-byte aligned and below 4 GiB", c.Base)
	}
	if c.ECAM == 0 || c.ECAM%(1<<20) != 0 {
		return fmt.Errorf("acpi: bad ECAM base %#x", c.ECAM)
	}
	if c.Mem32.Size == 0 || c.Mem32.Base+c.Mem32.Size > 1<<32 {
		return fmt.Errorf("acpi: bad 32-bit window %#x+%#x", c.Mem32.Base, c.Mem32.Size)
	}
	if c.Mem64.Size != 0 && c.Mem64.Base+c.Mem64.Size < c.Mem64.Base {
		return errors.New("acpi: 64-bit window wraps")
	}
	if c.IO.Size != 0 && c.IO.Base+c.IO.Size > 1<<16 {
		return fmt.Errorf("acpi: bad I/O window %#x+%#x", c.IO.Base, c.IO.Size)
	}
	for _, r := range []struct {
		name string
		v    uint32
	}{
		{"LAPIC", c.LAPIC}, {"IOAPIC", c.IOAPIC}, {"PCIConfigPort", uint32(c.PCIConfigPort)},
		{"PM1aEvent", uint32(c.PM1aEvent)}, {"PM1aControl", uint32(c.PM1aControl)},
		{"SCI", uint32(c.SCI)}, {"ResetPort", uint32(c.ResetPort)}, {"ResetValue", uint32(c.ResetValue)},
	} {
		if r.v == 0 {
			return fmt.Errorf("acpi: no %s given", r.name)
		}
	}
	if c.COM1Port != 0 && (c.COM1IRQ == 0 || c.COM1IRQ > 15) {
		return fmt.Errorf("acpi: COM1 IRQ %d (1..15)", c.COM1IRQ)
	}
	if c.IOAPICID == 0 {
		c.IOAPICID = uint8(c.CPUs)
	}
	if c.OEMID == "" {
		c.OEMID = "GODVM "
	}
	if c.OEMTableID == "" {
		c.OEMTableID = "GODVMACP"
	}
	if len(c.OEMID) > 6 || len(c.OEMTableID) > 8 {
		return errors.New("acpi: OEM ID longer than 6 or OEM table ID longer than 8 characters")
	}
	return nil
}

// Checksum returns the byte that makes b sum to zero.
func Checksum(b []byte) byte {
	var s byte
	for _, x := range b {
		s += x
	}
	return -s
}

type builder struct {
	cfg  *Config
	blob []byte
}

// place appends t at the next multiple of align and returns its address.
func (b *builder) place(t []byte, align int) uint64 {
	for len(b.blob)%align != 0 {
		b.blob = append(b.blob, 0)
	}
	off := len(b.blob)
	b.blob = append(b.blob, t...)
	return b.cfg.Base + uint64(off)
}

// header builds a table with the standard header around body and sets its
// checksum.
func (b *builder) table(sig string, rev byte, body []byte) []byte {
	t := make([]byte, headerLen, headerLen+len(body))
	copy(t[0:4], sig)
	binary.LittleEndian.PutUint32(t[4:], uint32(headerLen+len(body)))
	t[8] = rev
	copy(t[10:16], fmt.Sprintf("%-6s", b.cfg.OEMID))
	copy(t[16:24], fmt.Sprintf("%-8s", b.cfg.OEMTableID))
	binary.LittleEndian.PutUint32(t[24:], 1)
	copy(t[28:32], "GDVM")
	binary.LittleEndian.PutUint32(t[32:], 1)
	t = append(t, body...)
	t[9] = Checksum(t)
	return t
}

// Build lays out every table for cfg.Base and returns the blob (to be
// copied to cfg.Base) and the RSDP's address (cfg.Base: the RSDP comes
// first).
func Build(cfg Config) (tables []byte, rsdpAddr uint64, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, 0, err
	}
	b := &builder{cfg: &cfg}
	rsdp := b.place(make([]byte, rsdpLen), 16)

	facs := b.place(b.facs(), 64)
	dsdt := b.place(b.table("DSDT", 2, b.dsdt()), 8)
	fadt := b.place(b.table("FACP", 6, b.fadt(facs, dsdt)), 8)
	madt := b.place(b.table("APIC", 5, b.madt()), 8)
	mcfg := b.place(b.table("MCFG", 1, b.mcfg()), 8)
	ptrs := []uint64{fadt, madt, mcfg}

	var x, r []byte
	for _, p := range ptrs {
		x = binary.LittleEndian.AppendUint64(x, p)
		r = binary.LittleEndian.AppendUint32(r, uint32(p))
	}
	xsdt := b.place(b.table("XSDT", 1, x), 8)
	rsdt := b.place(b.table("RSDT", 1, r), 8)

	p := b.blob[rsdp-cfg.Base:][:rsdpLen]
	copy(p[0:8], "RSD PTR ")
	copy(p[9:15], fmt.Sprintf("%-6s", cfg.OEMID))
	p[15] = 2
	binary.LittleEndian.PutUint32(p[16:], uint32(rsdt))
	binary.LittleEndian.PutUint32(p[20:], rsdpLen)
	binary.LittleEndian.PutUint64(p[24:], xsdt)
	p[8] = Checksum(p[:20])
	p[32] = Checksum(p)
	return b.blob, rsdp, nil
}

func (b *builder) facs() []byte {
	t := make([]byte, facsLen)
	copy(t[0:4], "FACS")
	binary.LittleEndian.PutUint32(t[4:], facsLen)
	t[32] = 2 // version
	return t
}

// gas is a Generic Address Structure for a system I/O port.
func gas(port uint64, bits uint8, access uint8) []byte {
	if port == 0 {
		return make([]byte, 12)
	}
	b := []byte{1, bits, 0, access}
	return binary.LittleEndian.AppendUint64(b, port)
}

// FADT field offsets (from the start of the table).
const (
	fadtFirmwareCtrl = 36
	fadtDSDT         = 40
	fadtProfile      = 45
	fadtSCI          = 46
	fadtPM1aEvt      = 56
	fadtPM1aCnt      = 64
	fadtPMTmr        = 76
	fadtPM1EvtLen    = 88
	fadtPM1CntLen    = 89
	fadtPMTmrLen     = 91
	fadtPLvl2Lat     = 96
	fadtPLvl3Lat     = 98
	fadtBootArch     = 109
	fadtFlags        = 112
	fadtResetReg     = 116
	fadtResetValue   = 128
	fadtMinorVersion = 131
	fadtXFirmware    = 132
	fadtXDSDT        = 140
	fadtXPM1aEvt     = 148
	fadtXPM1aCnt     = 172
	fadtXPMTmr       = 208
)

func (b *builder) fadt(facs, dsdt uint64) []byte {
	c := b.cfg
	t := make([]byte, fadtLen)
	le := binary.LittleEndian
	put32 := func(off int, v uint32) { le.PutUint32(t[off:], v) }
	put32(fadtFirmwareCtrl, uint32(facs))
	put32(fadtDSDT, uint32(dsdt))
	t[fadtProfile] = 0 // unspecified
	le.PutUint16(t[fadtSCI:], uint16(c.SCI))
	put32(fadtPM1aEvt, uint32(c.PM1aEvent))
	put32(fadtPM1aCnt, uint32(c.PM1aControl))
	put32(fadtPMTmr, uint32(c.PMTimer))
	t[fadtPM1EvtLen] = 4
	t[fadtPM1CntLen] = 2
	flags := uint32(fadtWBINVD | fadtProcC1 | fadtPwrButton | fadtSlpButton | fadtResetRegSup)
	if c.PMTimer != 0 {
		t[fadtPMTmrLen] = 4
		flags |= fadtTmrValExt
	}
	le.PutUint16(t[fadtPLvl2Lat:], 101)  // C2 not supported
	le.PutUint16(t[fadtPLvl3Lat:], 1001) // C3 not supported
	le.PutUint16(t[fadtBootArch:], bootArchLegacy|bootArchNoVGA)
	put32(fadtFlags, flags)
	copy(t[fadtResetReg:], gas(uint64(c.ResetPort), 8, 1))
	t[fadtResetValue] = c.ResetValue
	t[fadtMinorVersion] = 0
	le.PutUint64(t[fadtXFirmware:], facs)
	le.PutUint64(t[fadtXDSDT:], dsdt)
	copy(t[fadtXPM1aEvt:], gas(uint64(c.PM1aEvent), 32, 2))
	copy(t[fadtXPM1aCnt:], gas(uint64(c.PM1aControl), 16, 2))
	if c.PMTimer != 0 {
		copy(t[fadtXPMTmr:], gas(uint64(c.PMTimer), 32, 3))
	}
	return t[headerLen:]
}

// MADT entry types.
const (
	madtLAPIC      = 0
	madtIOAPIC     = 1
	madtOverride   = 2
	madtLAPICNMI   = 4
	madtPCATCompat = 1
)

func (b *builder) madt() []byte {
	c := b.cfg
	le := binary.LittleEndian
	t := le.AppendUint32(nil, c.LAPIC)
	t = le.AppendUint32(t, madtPCATCompat)
	for i := 0; i < c.CPUs; i++ {
		t = append(t, madtLAPIC, 8, byte(i), byte(i))
		t = le.AppendUint32(t, 1) // enabled
	}
	t = append(t, madtIOAPIC, 12, c.IOAPICID, 0)
	t = le.AppendUint32(t, c.IOAPIC)
	t = le.AppendUint32(t, 0) // GSI base
	// IRQ0 (PIT) -> its GSI, bus-conforming.
	t = append(t, madtOverride, 10, 0, 0)
	t = le.AppendUint32(t, c.PITGSI)
	t = le.AppendUint16(t, 0)
	// SCI: level-triggered, active high.
	t = append(t, madtOverride, 10, 0, c.SCI)
	t = le.AppendUint32(t, uint32(c.SCI))
	t = le.AppendUint16(t, 0x000d)
	// LINT1 is NMI on every CPU.
	t = append(t, madtLAPICNMI, 6, 0xff, 0, 0, 1)
	return t
}

func (b *builder) mcfg() []byte {
	c := b.cfg
	t := make([]byte, 8) // reserved
	t = binary.LittleEndian.AppendUint64(t, c.ECAM)
	t = binary.LittleEndian.AppendUint16(t, 0) // segment
	t = append(t, 0, c.ECAMBusEnd)
	return binary.LittleEndian.AppendUint32(t, 0)
}

func (b *builder) dsdt() []byte {
	c := b.cfg
	crs := [][]byte{
		resWordAddr(resTypeBus, 0, 0, uint16(c.ECAMBusEnd)),
		resIO(c.PCIConfigPort, c.PCIConfigPort, 1, 8),
	}
	if c.IO.Size != 0 {
		// The bridge forwards only its I/O window: the guest sees no PCI
		// ports over godvm's own (COM1, CMOS, PM1a, pvpanic, ...).
		crs = append(crs, resWordAddr(resTypeIO, 3, uint16(c.IO.Base), uint16(c.IO.Base+c.IO.Size-1)))
	}
	crs = append(crs, resDWordMemory(uint32(c.Mem32.Base), uint32(c.Mem32.Base+c.Mem32.Size-1)))
	if c.Mem64.Size != 0 {
		crs = append(crs, resQWordMemory(c.Mem64.Base, c.Mem64.Base+c.Mem64.Size-1))
	}
	pci0 := amlDeviceObj("PCI0",
		amlNameObj("_HID", amlEISAID("PNP0A08")),
		amlNameObj("_CID", amlEISAID("PNP0A03")),
		amlNameObj("_SEG", amlInt(0)),
		amlNameObj("_BBN", amlInt(0)),
		amlNameObj("_UID", amlInt(0)),
		amlNameObj("_CRS", resourceTemplate(crs...)),
	)
	// The ECAM must be reserved by a motherboard resource, or Linux refuses
	// to use MMCONFIG.
	ecamLen := (uint64(c.ECAMBusEnd) + 1) << 20
	mres := amlDeviceObj("MRES",
		amlNameObj("_HID", amlEISAID("PNP0C02")),
		amlNameObj("_UID", amlInt(1)),
		amlNameObj("_CRS", resourceTemplate(resMemory32Fixed(uint32(c.ECAM), uint32(ecamLen)))),
	)
	sb := [][]byte{pci0, mres}
	if c.COM1Port != 0 {
		sb = append(sb, amlDeviceObj("COM1",
			amlNameObj("_HID", amlEISAID("PNP0501")),
			amlNameObj("_UID", amlInt(1)),
			amlNameObj("_CRS", resourceTemplate(resIO(c.COM1Port, c.COM1Port, 1, 8), resIRQNoFlags(c.COM1IRQ))),
		))
	}
	if c.PVPanicPort != 0 {
		sb = append(sb, amlDeviceObj("PEVT",
			amlNameObj("_HID", amlStr("QEMU0001")),
			amlNameObj("_CRS", resourceTemplate(resIO(c.PVPanicPort, c.PVPanicPort, 1, 1))),
		))
	}
	return cat(
		amlScopeObj("\\_SB", sb...),
		amlNameObj("\\_S5", amlPackageObj(amlInt(SLPTypS5), amlInt(SLPTypS5))),
	)
}
