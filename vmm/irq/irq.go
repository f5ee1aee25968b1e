// Package irq implements platform.Interrupts over KVM: MSI vectors (GSI
// routes + irqfds) and legacy IRQ lines. It holds interrupts only: ioeventfds
// are vmm/ioevent's, the memory slots for host memory vmm/memslot's.
//
// KVM_SET_GSI_ROUTING replaces the whole routing table on every call, so the
// Controller keeps the full table (the in-kernel irqchip routes for GSIs
// 0-23 plus one MSI route per unmasked vector) and resubmits it after every
// change. The order of operations follows cloud-hypervisor's
// MsiInterruptGroup: on mask, deassign the irqfd first and then drop the
// route; on unmask, install the route first and then assign the irqfd.
// While a vector is masked its eventfd is detached, so signals accumulate in
// the eventfd counter; KVM delivers a pending count when the irqfd is
// assigned again.
//
// All KVM calls go through the small VM interface, which *kvm.VM
// implements; the bookkeeping is tested against a fake.
package irq

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"godvm/devices/platform"
	"godvm/kvm"
	"godvm/vmm/layout"
)

// VM is the part of a KVM VM fd the controller uses.
type VM interface {
	SetGSIRouting(entries []kvm.IRQRoutingEntry) error
	AssignIRQFD(fd int, gsi uint32) error
	DeassignIRQFD(fd int, gsi uint32) error
	IRQLine(gsi uint32, level bool) error
}

// Config sets the controller's number spaces.
type Config struct {
	// FirstMSIGSI is the first GSI handed to MSI vectors (default
	// layout.FirstMSIGSI, after the IOAPIC pins).
	FirstMSIGSI uint32
	// GSILimit bounds GSIs and the routing table's length (default 4096,
	// KVM_MAX_IRQ_ROUTES; KVM_CHECK_EXTENSION(KVM_CAP_IRQ_ROUTING) reports it).
	GSILimit uint32
	// BaseRoutes are the legacy routes kept in every table. nil means
	// KVMDefaultRoutes(), the table KVM_CREATE_IRQCHIP installs, so that
	// submitting a table never changes legacy interrupt delivery.
	BaseRoutes []kvm.IRQRoutingEntry
}

// KVMDefaultRoutes is the routing table KVM_CREATE_IRQCHIP sets up on x86
// (arch/x86/kvm/irq_comm.c default_routing): GSI n goes to IOAPIC pin n for
// n < 24, and GSIs 0-15 also to the PIC (master pins 0-7, slave pins 0-7).
func KVMDefaultRoutes() []kvm.IRQRoutingEntry {
	var r []kvm.IRQRoutingEntry
	for gsi := uint32(0); gsi < layout.IOAPICPins; gsi++ {
		r = append(r, kvm.IRQChipRoute(gsi, kvm.IRQChipIOAPIC, gsi))
		if gsi < 8 {
			r = append(r, kvm.IRQChipRoute(gsi, kvm.IRQChipPICMaster, gsi))
		} else if gsi < 16 {
			r = append(r, kvm.IRQChipRoute(gsi, kvm.IRQChipPICSlave, gsi-8))
		}
	}
	return r
}

// ISAOverrideRoutes is the table for firmware tables that connect ISA IRQ0
// (the PIT) to IOAPIC pin 2, as an MP table with "IRQ0 on pin 2" or an ACPI
// MADT interrupt-source override 0 -> 2 says (QEMU's pc routing): GSI 0 goes
// to IOAPIC pin 2, GSI 2 (the PIC cascade) has no route, and the others are
// as in KVMDefaultRoutes.
func ISAOverrideRoutes() []kvm.IRQRoutingEntry {
	var r []kvm.IRQRoutingEntry
	for gsi := uint32(0); gsi < layout.IOAPICPins; gsi++ {
		switch {
		case gsi == 0:
			r = append(r, kvm.IRQChipRoute(0, kvm.IRQChipIOAPIC, layout.PITGSI))
		case gsi != layout.PITGSI:
			r = append(r, kvm.IRQChipRoute(gsi, kvm.IRQChipIOAPIC, gsi))
		}
		switch {
		case gsi == 2:
		case gsi < 8:
			r = append(r, kvm.IRQChipRoute(gsi, kvm.IRQChipPICMaster, gsi))
		case gsi < 16:
			r = append(r, kvm.IRQChipRoute(gsi, kvm.IRQChipPICSlave, gsi-8))
		}
	}
	return r
}

// Controller implements platform.Interrupts over one VM. Safe for
// concurrent use.
type Controller struct {
	vm  VM
	cfg Config

	mu      sync.Mutex
	gsiUsed map[uint32]bool
	routes  map[uint32]platform.MSIMessage // GSI -> MSI route in the table
}

var (
	_ VM                  = (*kvm.VM)(nil)
	_ platform.Interrupts = (*Controller)(nil)
)

// New makes a controller. Nothing is sent to KVM until the first change
// (or Sync).
func New(vm VM, cfg Config) *Controller {
	if cfg.FirstMSIGSI == 0 {
		cfg.FirstMSIGSI = layout.FirstMSIGSI
	}
	if cfg.GSILimit == 0 {
		cfg.GSILimit = 4096
	}
	if cfg.BaseRoutes == nil {
		cfg.BaseRoutes = KVMDefaultRoutes()
	}
	return &Controller{
		vm: vm, cfg: cfg,
		gsiUsed: map[uint32]bool{},
		routes:  map[uint32]platform.MSIMessage{},
	}
}

// Sync submits the current routing table.
func (c *Controller) Sync() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vm.SetGSIRouting(c.tableLocked())
}

// Table returns the routing table as last built (base routes, then MSI
// routes in GSI order).
func (c *Controller) Table() []kvm.IRQRoutingEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tableLocked()
}

func (c *Controller) tableLocked() []kvm.IRQRoutingEntry {
	t := append([]kvm.IRQRoutingEntry(nil), c.cfg.BaseRoutes...)
	gsis := make([]uint32, 0, len(c.routes))
	for g := range c.routes {
		gsis = append(gsis, g)
	}
	slices.Sort(gsis)
	for _, g := range gsis {
		m := c.routes[g]
		t = append(t, kvm.MSIRoute(g, m.Addr, m.Data))
	}
	return t
}

// setRouteLocked changes one MSI route (nil removes it) and resubmits the
// table; on failure the bookkeeping is restored.
func (c *Controller) setRouteLocked(gsi uint32, msg *platform.MSIMessage) error {
	old, had := c.routes[gsi]
	if msg == nil {
		if !had {
			return nil
		}
		delete(c.routes, gsi)
	} else {
		if had && old == *msg {
			return nil
		}
		c.routes[gsi] = *msg
	}
	if err := c.vm.SetGSIRouting(c.tableLocked()); err != nil {
		if had {
			c.routes[gsi] = old
		} else {
			delete(c.routes, gsi)
		}
		return fmt.Errorf("irq: GSI %d: %w", gsi, err)
	}
	return nil
}

func (c *Controller) allocGSILocked() (uint32, error) {
	for g := c.cfg.FirstMSIGSI; g < c.cfg.GSILimit; g++ {
		if !c.gsiUsed[g] {
			c.gsiUsed[g] = true
			return g, nil
		}
	}
	return 0, fmt.Errorf("irq: all %d MSI GSIs in use", c.cfg.GSILimit-c.cfg.FirstMSIGSI)
}

// NewMSIVector allocates a GSI and an eventfd. The vector starts masked:
// the guest gets nothing until Update unmasks it.
func (c *Controller) NewMSIVector() (platform.MSIVector, error) {
	c.mu.Lock()
	gsi, err := c.allocGSILocked()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	ev, err := platform.NewEventFD()
	if err != nil {
		c.mu.Lock()
		delete(c.gsiUsed, gsi)
		c.mu.Unlock()
		return nil, err
	}
	return &Vector{c: c, gsi: gsi, ev: ev, masked: true}, nil
}

// SetIRQLine is KVM_IRQ_LINE.
func (c *Controller) SetIRQLine(gsi uint32, level bool) error {
	if err := c.vm.IRQLine(gsi, level); err != nil {
		return fmt.Errorf("irq: line %d: %w", gsi, err)
	}
	return nil
}

// Vector is one MSI vector: a GSI, its route and an irqfd.
type Vector struct {
	c        *Controller
	gsi      uint32
	ev       *platform.EventFD
	msg      platform.MSIMessage
	masked   bool
	assigned bool // irqfd attached
	closed   bool
}

// GSI is the vector's GSI (for diagnostics and tests).
func (v *Vector) GSI() uint32 { return v.gsi }

// EventFD is the vector's trigger.
func (v *Vector) EventFD() *platform.EventFD { return v.ev }

// Update points the vector at msg; masked detaches it.
func (v *Vector) Update(msg platform.MSIMessage, masked bool) error {
	c := v.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if v.closed {
		return errors.New("irq: MSI vector used after Close")
	}
	if masked {
		if v.assigned {
			if err := c.vm.DeassignIRQFD(v.ev.Fd(), v.gsi); err != nil {
				return fmt.Errorf("irq: GSI %d: %w", v.gsi, err)
			}
			v.assigned = false
		}
		if err := c.setRouteLocked(v.gsi, nil); err != nil {
			return err
		}
		v.msg, v.masked = msg, true
		return nil
	}
	if err := c.setRouteLocked(v.gsi, &msg); err != nil {
		return err
	}
	v.msg, v.masked = msg, false
	if !v.assigned {
		if err := c.vm.AssignIRQFD(v.ev.Fd(), v.gsi); err != nil {
			return fmt.Errorf("irq: GSI %d: %w", v.gsi, err)
		}
		v.assigned = true
	}
	return nil
}

// Close detaches the vector, drops its route, frees the GSI and closes the
// eventfd. It reports the first failure but always releases everything.
func (v *Vector) Close() error {
	c := v.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	var errs []error
	if v.assigned {
		if err := c.vm.DeassignIRQFD(v.ev.Fd(), v.gsi); err != nil {
			errs = append(errs, fmt.Errorf("irq: GSI %d: %w", v.gsi, err))
		}
		v.assigned = false
	}
	if err := c.setRouteLocked(v.gsi, nil); err != nil {
		delete(c.routes, v.gsi) // never route a freed GSI
		errs = append(errs, err)
	}
	delete(c.gsiUsed, v.gsi)
	if err := v.ev.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
