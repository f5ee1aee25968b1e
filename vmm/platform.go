package vmm

import (
	"fmt"

	"godvm/devices/platform"
	"godvm/kvm"
	"godvm/vmm/ioevent"
	"godvm/vmm/irq"
	"godvm/vmm/layout"
	"godvm/vmm/memslot"
)

// newPlatform builds the device platform over the machine's VM: interrupts
// from vmm/irq, ioeventfds from vmm/ioevent, host-memory slots from
// vmm/memslot. The routing table connects ISA IRQ 0 (KVM's PIT) to IOAPIC
// pin 2, as the MP table and the MADT say; RAM keeps the memory slots below
// the first one memslot hands out.
func newPlatform(m *Machine) (*platform.Platform, error) {
	icfg := irq.Config{
		FirstMSIGSI: layout.FirstMSIGSI,
		BaseRoutes:  irq.ISAOverrideRoutes(),
	}
	scfg := memslot.Config{FirstSlot: uint32(len(m.mem.Regions()))}
	if n, err := m.vm.CheckExtension(kvm.CapIRQRouting); err == nil && n > 0 {
		icfg.GSILimit = uint32(n)
	}
	if n, err := m.vm.CheckExtension(kvm.CapNRMemSlots); err == nil && n > 0 {
		scfg.SlotLimit = uint32(n)
	}
	c := irq.New(m.vm, icfg)
	if err := c.Sync(); err != nil {
		return nil, fmt.Errorf("install the interrupt routing table: %w", err)
	}
	return &platform.Platform{
		Mem:   m.mem,
		PIO:   m.pio,
		MMIO:  m.mmio,
		IRQ:   c,
		IOEv:  ioevent.New(m.vm),
		Slots: memslot.New(m.vm, scfg),
	}, nil
}
