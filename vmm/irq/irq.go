// Package irq implements the devices/platform seam over KVM: MSI vectors
// (GSI routes + irqfds), legacy IRQ lines, ioeventfds and extra memory slots
// for host memory (passthrough BAR pages).
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
	"unsafe"

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
	SetIOEventFD(e kvm.IOEventFD) error
	SetUserMemoryRegion(r kvm.UserspaceMemoryRegion) error
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
	// FirstSlot is the first memory slot MapHostMemory may use: the VMM
	// puts its RAM in slots below it.
	FirstSlot uint32
	// SlotLimit bounds slot numbers (default 509, the smallest
	// KVM_CAP_NR_MEMSLOTS of the kernels godvm meets; pass the real value).
	SlotLimit uint32
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
			r = append(r, kvm.IRQChipRoute(0, kvm.IRQChipIOAPIC, 2))
		case gsi != 2:
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

// Controller implements platform.Interrupts, platform.IOEvents and
// platform.MemSlots over one VM. Safe for concurrent use.
type Controller struct {
	vm  VM
	cfg Config

	mu      sync.Mutex
	gsiUsed map[uint32]bool
	routes  map[uint32]platform.MSIMessage // GSI -> MSI route in the table
	ioev    []ioevent
	slots   map[uint32]hostSlot
}

type ioevent struct {
	space     platform.AddrSpace
	addr      uint64
	size      uint32
	datamatch *uint64
	fd        int
}

type hostSlot struct {
	gpa  uint64
	host []byte // held so the mapping outlives the slot
}

var (
	_ VM                  = (*kvm.VM)(nil)
	_ platform.Interrupts = (*Controller)(nil)
	_ platform.IOEvents   = (*Controller)(nil)
	_ platform.MemSlots   = (*Controller)(nil)
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
	if cfg.SlotLimit == 0 {
		cfg.SlotLimit = 509
	}
	return &Controller{
		vm: vm, cfg: cfg,
		gsiUsed: map[uint32]bool{},
		routes:  map[uint32]platform.MSIMessage{},
		slots:   map[uint32]hostSlot{},
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

func validIOEventSize(size uint32) bool {
	return size == 0 || size == 1 || size == 2 || size == 4 || size == 8
}

func sameIOEvent(a ioevent, b ioevent) bool {
	if a.space != b.space || a.addr != b.addr || a.size != b.size || a.fd != b.fd {
		return false
	}
	if (a.datamatch == nil) != (b.datamatch == nil) {
		return false
	}
	return a.datamatch == nil || *a.datamatch == *b.datamatch
}

// AddIOEvent is KVM_IOEVENTFD (assign).
func (c *Controller) AddIOEvent(space platform.AddrSpace, addr uint64, size uint32, datamatch *uint64, ev *platform.EventFD) error {
	if !validIOEventSize(size) {
		return fmt.Errorf("irq: ioeventfd at %#x: size %d (want 0, 1, 2, 4 or 8)", addr, size)
	}
	if space != platform.PIO && space != platform.MMIO {
		return fmt.Errorf("irq: ioeventfd at %#x: unknown address space %d", addr, space)
	}
	e := ioevent{space: space, addr: addr, size: size, fd: ev.Fd()}
	if datamatch != nil {
		d := *datamatch
		e.datamatch = &d
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.vm.SetIOEventFD(kvm.NewIOEventFD(e.fd, addr, size, space == platform.PIO, e.datamatch, false)); err != nil {
		return fmt.Errorf("irq: ioeventfd at %#x: %w", addr, err)
	}
	c.ioev = append(c.ioev, e)
	return nil
}

// RemoveIOEvent is KVM_IOEVENTFD (deassign); the arguments must match an
// AddIOEvent.
func (c *Controller) RemoveIOEvent(space platform.AddrSpace, addr uint64, size uint32, datamatch *uint64, ev *platform.EventFD) error {
	e := ioevent{space: space, addr: addr, size: size, datamatch: datamatch, fd: ev.Fd()}
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.ioev, func(x ioevent) bool { return sameIOEvent(x, e) })
	if i < 0 {
		return fmt.Errorf("irq: no ioeventfd registered at %#x (size %d)", addr, size)
	}
	if err := c.vm.SetIOEventFD(kvm.NewIOEventFD(e.fd, addr, size, space == platform.PIO, datamatch, true)); err != nil {
		return fmt.Errorf("irq: ioeventfd at %#x: %w", addr, err)
	}
	c.ioev = slices.Delete(c.ioev, i, i+1)
	return nil
}

const pageSize = 4096

// MapHostMemory maps host (e.g. a VFIO BAR mmap) at gpa as a new memory
// slot; the handle is the slot number. gpa, the host address and the length
// must be page-aligned. The caller keeps host mapped until UnmapHostMemory.
func (c *Controller) MapHostMemory(gpa uint64, host []byte, readonly bool) (int, error) {
	n := uint64(len(host))
	if n == 0 || n%pageSize != 0 || gpa%pageSize != 0 || uintptr(unsafe.Pointer(&host[0]))%pageSize != 0 {
		return 0, fmt.Errorf("irq: map host memory at %#x (+%#x): address, size and host mapping must be page-aligned", gpa, n)
	}
	if gpa+n < gpa {
		return 0, fmt.Errorf("irq: map host memory at %#x (+%#x): range wraps", gpa, n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for s, h := range c.slots {
		if gpa < h.gpa+uint64(len(h.host)) && h.gpa < gpa+n {
			return 0, fmt.Errorf("irq: map host memory at %#x (+%#x): overlaps slot %d at %#x", gpa, n, s, h.gpa)
		}
	}
	slot := c.cfg.FirstSlot
	for ; slot < c.cfg.SlotLimit; slot++ {
		if _, used := c.slots[slot]; !used {
			break
		}
	}
	if slot >= c.cfg.SlotLimit {
		return 0, fmt.Errorf("irq: map host memory at %#x: no free memory slot (limit %d)", gpa, c.cfg.SlotLimit)
	}
	r := kvm.UserspaceMemoryRegion{Slot: slot, GuestPhysAddr: gpa, MemorySize: n, UserspaceAddr: uint64(uintptr(unsafe.Pointer(&host[0])))}
	if readonly {
		r.Flags = kvm.MemReadonly
	}
	if err := c.vm.SetUserMemoryRegion(r); err != nil {
		return 0, fmt.Errorf("irq: map host memory at %#x (+%#x) as slot %d: %w", gpa, n, slot, err)
	}
	c.slots[slot] = hostSlot{gpa: gpa, host: host}
	return int(slot), nil
}

// UnmapHostMemory deletes a slot made by MapHostMemory.
func (c *Controller) UnmapHostMemory(handle int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := uint32(handle)
	h, ok := c.slots[slot]
	if handle < 0 || !ok {
		return fmt.Errorf("irq: unmap host memory: no slot %d", handle)
	}
	if err := c.vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{Slot: slot, GuestPhysAddr: h.gpa}); err != nil {
		return fmt.Errorf("irq: unmap slot %d: %w", slot, err)
	}
	delete(c.slots, slot)
	return nil
}
