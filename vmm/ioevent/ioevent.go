// Package ioevent implements platform.IOEvents over KVM: ioeventfds
// (KVM_IOEVENTFD), through which a guest write to a doorbell signals an
// eventfd without leaving the kernel.
package ioevent

import (
	"fmt"
	"slices"
	"sync"

	"godvm/devices/platform"
	"godvm/kvm"
)

// VM is the part of a KVM VM fd the registry uses.
type VM interface {
	SetIOEventFD(e kvm.IOEventFD) error
}

// Registry keeps the ioeventfds registered on one VM, so that a removal must
// match an addition as KVM requires. Safe for concurrent use.
type Registry struct {
	vm   VM
	mu   sync.Mutex
	ioev []ioevent
}

type ioevent struct {
	space     platform.AddrSpace
	addr      uint64
	size      uint32
	datamatch *uint64
	fd        int
}

var (
	_ VM                = (*kvm.VM)(nil)
	_ platform.IOEvents = (*Registry)(nil)
)

// New makes a registry over vm.
func New(vm VM) *Registry { return &Registry{vm: vm} }

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
func (c *Registry) AddIOEvent(space platform.AddrSpace, addr uint64, size uint32, datamatch *uint64, ev *platform.EventFD) error {
	if !validIOEventSize(size) {
		return fmt.Errorf("ioeventfd at %#x: size %d (want 0, 1, 2, 4 or 8)", addr, size)
	}
	if space != platform.PIO && space != platform.MMIO {
		return fmt.Errorf("ioeventfd at %#x: unknown address space %d", addr, space)
	}
	e := ioevent{space: space, addr: addr, size: size, fd: ev.Fd()}
	if datamatch != nil {
		d := *datamatch
		e.datamatch = &d
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.vm.SetIOEventFD(kvm.NewIOEventFD(e.fd, addr, size, space == platform.PIO, e.datamatch, false)); err != nil {
		return fmt.Errorf("ioeventfd at %#x: %w", addr, err)
	}
	c.ioev = append(c.ioev, e)
	return nil
}

// RemoveIOEvent is KVM_IOEVENTFD (deassign); the arguments must match an
// AddIOEvent.
func (c *Registry) RemoveIOEvent(space platform.AddrSpace, addr uint64, size uint32, datamatch *uint64, ev *platform.EventFD) error {
	e := ioevent{space: space, addr: addr, size: size, datamatch: datamatch, fd: ev.Fd()}
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.ioev, func(x ioevent) bool { return sameIOEvent(x, e) })
	if i < 0 {
		return fmt.Errorf("ioeventfd: none registered at %#x (size %d)", addr, size)
	}
	if err := c.vm.SetIOEventFD(kvm.NewIOEventFD(e.fd, addr, size, space == platform.PIO, datamatch, true)); err != nil {
		return fmt.Errorf("ioeventfd at %#x: %w", addr, err)
	}
	c.ioev = slices.Delete(c.ioev, i, i+1)
	return nil
}
