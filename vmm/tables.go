package vmm

import (
	"fmt"

	"godvm/addr"
	"godvm/devices/acpi"
	"godvm/devices/pci"
	"godvm/vmm/layout"
	"godvm/vmm/legacy"
)

// addPCIRoot creates the PCI root complex: config mechanism #1 at
// layout.PortPCIConfig (with the reset register), ECAM and the BAR windows
// (32- and 64-bit MMIO, I/O), all from vmm/layout.
func (m *Machine) addPCIRoot() error {
	r, err := pci.NewRoot(m.plat, pciRootConfig(func() { m.guestStop(legacy.StopReset, 0) }))
	if err != nil {
		return fmt.Errorf("PCI root: %w", err)
	}
	m.pci = r
	return nil
}

func pciRootConfig(reset func()) pci.RootConfig {
	return pci.RootConfig{
		ECAM:       addr.Range{Base: layout.ECAMStart, Size: layout.ECAMSize},
		Mem32:      addr.Range{Base: layout.MMIO32Start, Size: layout.MMIO32Size},
		Mem64:      addr.Range{Base: layout.MMIO64Start, Size: layout.MMIO64Size},
		IO:         addr.Range{Base: layout.PCIIOStart, Size: layout.PCIIOSize},
		ConfigPort: layout.PortPCIConfig,
		Reset:      reset,
	}
}

// acpiConfig describes this machine to devices/acpi.
func acpiConfig(cpus int) acpi.Config {
	return acpi.Config{
		Base:          layout.ACPIStart,
		CPUs:          cpus,
		LAPIC:         layout.LAPICBase,
		IOAPIC:        layout.IOAPICBase,
		ECAM:          layout.ECAMStart,
		ECAMBusEnd:    uint8(layout.ECAMSize>>20 - 1),
		Mem32:         addr.Range{Base: layout.MMIO32Start, Size: layout.MMIO32Size},
		Mem64:         addr.Range{Base: layout.MMIO64Start, Size: layout.MMIO64Size},
		IO:            addr.Range{Base: layout.PCIIOStart, Size: layout.PCIIOSize},
		PCIConfigPort: layout.PortPCIConfig,
		PM1aEvent:     layout.PortPM1aEvent,
		PM1aControl:   layout.PortPM1aCtrl,
		SCI:           layout.SCIIRQ,
		PITGSI:        layout.PITGSI,
		ResetPort:     layout.PortResetCF9,
		ResetValue:    pci.ResetValue,
		COM1Port:      layout.PortCOM1,
		COM1IRQ:       layout.IRQCOM1,
		PVPanicPort:   layout.PortPVPanic,
	}
}

// buildACPI returns the tables and the RSDP address, checked against the
// area vmm/layout reserves for them.
func buildACPI(cpus int) ([]byte, uint64, error) {
	tables, rsdp, err := acpi.Build(acpiConfig(cpus))
	if err != nil {
		return nil, 0, fmt.Errorf("ACPI tables: %w", err)
	}
	if len(tables) > layout.ACPISize {
		return nil, 0, fmt.Errorf("ACPI tables are %d bytes; %d reserved at %#x", len(tables), layout.ACPISize, layout.ACPIStart)
	}
	return tables, rsdp, nil
}

// writeACPI puts the ACPI tables at layout.ACPIStart and points
// boot_params.acpi_rsdp_addr at the RSDP.
func (m *Machine) writeACPI() error {
	tables, rsdp, err := buildACPI(m.cfg.CPUs)
	if err != nil {
		return err
	}
	if err := m.mem.WriteAt(tables, layout.ACPIStart); err != nil {
		return err
	}
	m.rsdp = rsdp
	return nil
}
