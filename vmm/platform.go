package vmm

import (
	"fmt"
	"unsafe"

	"godvm/devices/platform"
	"godvm/kvm"
	"godvm/vmm/irq"
	"godvm/vmm/layout"
)

// hostAddr is the VMM address of a mapping, for KVM memory slots.
func hostAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// newPlatform builds the device platform over the machine's VM with
// vmm/irq. The routing table connects ISA IRQ 0 (KVM's PIT) to IOAPIC pin 2,
// as the MP table and the MADT say; RAM keeps the memory slots below
// FirstSlot.
func newPlatform(m *Machine) (*platform.Platform, error) {
	cfg := irq.Config{
		FirstMSIGSI: layout.FirstMSIGSI,
		BaseRoutes:  irq.ISAOverrideRoutes(),
		FirstSlot:   uint32(len(m.mem.Regions())),
	}
	if n, err := m.vm.CheckExtension(kvm.CapIRQRouting); err == nil && n > 0 {
		cfg.GSILimit = uint32(n)
	}
	if n, err := m.vm.CheckExtension(kvm.CapNRMemSlots); err == nil && n > 0 {
		cfg.SlotLimit = uint32(n)
	}
	c := irq.New(m.vm, cfg)
	if err := c.Sync(); err != nil {
		return nil, fmt.Errorf("install the interrupt routing table: %w", err)
	}
	return &platform.Platform{
		Mem:   m.mem,
		PIO:   m.pio,
		MMIO:  m.mmio,
		IRQ:   c,
		IOEv:  c,
		Slots: c,
	}, nil
}
