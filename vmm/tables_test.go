package vmm

import (
	"bytes"
	"encoding/binary"
	"testing"

	"godvm/devices/pci"
	"godvm/vmm/layout"
)

// acpiTable follows RSDP -> XSDT (and FADT -> DSDT) to the table with
// signature sig, reading the blob as the guest does.
func acpiTable(t *testing.T, blob []byte, rsdp uint64, sig string) []byte {
	t.Helper()
	le := binary.LittleEndian
	at := func(addr uint64) []byte {
		if addr < layout.ACPIStart || addr+36 > layout.ACPIStart+uint64(len(blob)) {
			t.Fatalf("table pointer %#x outside the ACPI area", addr)
		}
		h := blob[addr-layout.ACPIStart:]
		return h[:le.Uint32(h[4:])]
	}
	r := blob[rsdp-layout.ACPIStart:]
	xsdt := at(le.Uint64(r[24:]))
	for i := 36; i+8 <= len(xsdt); i += 8 {
		tb := at(le.Uint64(xsdt[i:]))
		if string(tb[:4]) == sig {
			return tb
		}
		if sig == "DSDT" && string(tb[:4]) == "FACP" {
			return at(le.Uint64(tb[140:])) // X_DSDT
		}
	}
	t.Fatalf("no %s table", sig)
	return nil
}

// TestTablesAndRootMatchLayout: every address and port the guest learns
// from the FADT, MCFG and DSDT, and every port the PCI root decodes, is the
// one vmm/layout defines. The expected encodings are written out here from
// the ACPI specification, not taken from devices/acpi.
func TestTablesAndRootMatchLayout(t *testing.T) {
	blob, rsdp, err := buildACPI(2)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian

	f := acpiTable(t, blob, rsdp, "FACP")
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"SCI_INT", uint64(le.Uint16(f[46:])), layout.SCIIRQ},
		{"PM1a_EVT_BLK", uint64(le.Uint32(f[56:])), layout.PortPM1aEvent},
		{"PM1a_CNT_BLK", uint64(le.Uint32(f[64:])), layout.PortPM1aCtrl},
		{"RESET_REG address", le.Uint64(f[120:]), layout.PortResetCF9},
		{"RESET_VALUE", uint64(f[128]), pci.ResetValue},
		{"X_PM1a_EVT_BLK", le.Uint64(f[152:]), layout.PortPM1aEvent},
		{"X_PM1a_CNT_BLK", le.Uint64(f[176:]), layout.PortPM1aCtrl},
	} {
		if c.got != c.want {
			t.Errorf("FADT %s = %#x, layout says %#x", c.name, c.got, c.want)
		}
	}

	m := acpiTable(t, blob, rsdp, "APIC")
	if le.Uint32(m[36:]) != layout.LAPICBase {
		t.Errorf("MADT LAPIC %#x, layout says %#x", le.Uint32(m[36:]), layout.LAPICBase)
	}
	if !bytes.Contains(m, le.AppendUint32(nil, layout.IOAPICBase)) {
		t.Errorf("MADT has no IOAPIC at %#x", layout.IOAPICBase)
	}
	// Interrupt-source override for ISA IRQ0: type 2, length 10, bus 0,
	// source 0, then the GSI.
	if !bytes.Contains(m, le.AppendUint32([]byte{2, 10, 0, 0}, layout.PITGSI)) {
		t.Errorf("MADT has no override IRQ0 -> GSI %d", layout.PITGSI)
	}

	mc := acpiTable(t, blob, rsdp, "MCFG")
	if base, end := le.Uint64(mc[44:]), mc[55]; base != layout.ECAMStart || uint64(end+1)<<20 != layout.ECAMSize || mc[54] != 0 {
		t.Errorf("MCFG ECAM %#x buses %d-%d; layout says %#x+%#x", base, mc[54], end, uint64(layout.ECAMStart), uint64(layout.ECAMSize))
	}

	d := acpiTable(t, blob, rsdp, "DSDT")
	ioPort := func(port uint16, n byte) []byte { // IO(Decode16, port, port, 1, n)
		return []byte{0x47, 0x01, byte(port), byte(port >> 8), byte(port), byte(port >> 8), 1, n}
	}
	u16 := func(v uint64) []byte { return le.AppendUint16(nil, uint16(v)) }
	u32 := func(v uint64) []byte { return le.AppendUint32(nil, uint32(v)) }
	u64 := func(v uint64) []byte { return le.AppendUint64(nil, v) }
	cat := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	for _, w := range []struct {
		name string
		enc  []byte
	}{
		{"PCI0 configuration ports", ioPort(layout.PortPCIConfig, 8)},
		{"COM1 ports", ioPort(layout.PortCOM1, 8)},
		{"COM1 IRQ", []byte{0x22, byte(1 << layout.IRQCOM1), byte(1 << layout.IRQCOM1 >> 8)}},
		{"pvpanic port", ioPort(layout.PortPVPanic, 1)},
		// WordIO: min, max, translation 0, length.
		{"PCI I/O window", cat(u16(layout.PCIIOStart), u16(layout.PCIIOStart+layout.PCIIOSize-1), u16(0), u16(layout.PCIIOSize))},
		// DWordMemory and QWordMemory: min, max, translation 0, length.
		{"PCI MMIO32 window", cat(u32(layout.MMIO32Start), u32(layout.MMIO32Start+layout.MMIO32Size-1), u32(0), u32(layout.MMIO32Size))},
		{"PCI MMIO64 window", cat(u64(layout.MMIO64Start), u64(layout.MMIO64Start+layout.MMIO64Size-1), u64(0), u64(layout.MMIO64Size))},
		// Memory32Fixed(ReadWrite) reserving the ECAM.
		{"ECAM reservation", cat([]byte{0x86, 0x09, 0x00, 0x01}, u32(layout.ECAMStart), u32(layout.ECAMSize))},
	} {
		if !bytes.Contains(d, w.enc) {
			t.Errorf("DSDT lacks the %s from layout (% x)", w.name, w.enc)
		}
	}

	// The root decodes its configuration ports, the reset register among
	// them, at layout.PortPCIConfig and nowhere else.
	var resets int
	m0 := newTestMachine(t, &bytes.Buffer{}, &irqRec{})
	if got := m0.pci.Config(); got.ConfigPort != layout.PortPCIConfig ||
		got.ECAM.Base != layout.ECAMStart || got.ECAM.Size != layout.ECAMSize ||
		got.Mem32.Base != layout.MMIO32Start || got.Mem32.Size != layout.MMIO32Size ||
		got.Mem64.Base != layout.MMIO64Start || got.Mem64.Size != layout.MMIO64Size ||
		got.IO.Base != layout.PCIIOStart || got.IO.Size != layout.PCIIOSize {
		t.Errorf("PCI root config %+v does not match the layout", got)
	}
	d0, off, ok := m0.pio.Find(layout.PortPCIConfig, pci.ConfigPorts)
	if !ok || off != 0 {
		t.Fatalf("no device decodes %#x+%d", layout.PortPCIConfig, pci.ConfigPorts)
	}
	if d1, _, ok := m0.pio.Find(layout.PortResetCF9, 1); !ok || d1 != d0 {
		t.Errorf("reset register %#x is not the root's", layout.PortResetCF9)
	}
	if _, _, ok := m0.pio.Find(layout.PortPCIConfig-1, 1); ok {
		t.Errorf("a port below the configuration ports is decoded")
	}
	if _, _, ok := m0.pio.Find(layout.PortPCIConfig+pci.ConfigPorts, 1); ok {
		t.Errorf("a port after the configuration ports is decoded")
	}
	m0.pioAccess(layout.PortResetCF9, []byte{pci.ResetValue}, true)
	if m0.result.Reason == ReasonReset {
		resets++
	}
	if resets != 1 {
		t.Errorf("writing %#x to %#x did not reset the machine", pci.ResetValue, layout.PortResetCF9)
	}
}
