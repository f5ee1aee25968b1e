// Package platform is the seam between device models and the VMM: what a
// device may ask of the machine it sits in. Devices import this package, the
// VMM (vmm/) implements it over KVM, and tests use the in-process fake in
// platform/fake. Devices never call KVM themselves.
package platform

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"godvm/devices/bus"
	"godvm/guestmem"
)

// EventFD is a Linux eventfd: the currency of irqfd, ioeventfd, VFIO and
// vfio-user interrupts.
type EventFD struct{ fd int }

// NewEventFD makes a non-blocking, close-on-exec eventfd.
func NewEventFD() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &EventFD{fd}, nil
}

// EventFDFrom adopts an eventfd received from elsewhere (a vfio-user peer).
func EventFDFrom(fd int) *EventFD { return &EventFD{fd} }

func (e *EventFD) Fd() int { return e.fd }

// Signal adds 1 to the counter.
func (e *EventFD) Signal() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	_, err := unix.Write(e.fd, b[:])
	if errors.Is(err, unix.EAGAIN) { // counter saturated: already pending
		return nil
	}
	return err
}

// Read returns and clears the counter; 0 with no error when nothing is pending.
func (e *EventFD) Read() (uint64, error) {
	var b [8]byte
	_, err := unix.Read(e.fd, b[:])
	if errors.Is(err, unix.EAGAIN) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// Wait blocks until the counter is non-zero or timeoutMs passes (-1: forever),
// then reads it.
func (e *EventFD) Wait(timeoutMs int) (uint64, error) {
	fds := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, timeoutMs)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			return 0, err
		}
		return e.Read()
	}
}

func (e *EventFD) Close() error {
	if e.fd < 0 {
		return nil
	}
	err := unix.Close(e.fd)
	e.fd = -1
	return err
}

// MSIMessage is what a guest programs into an MSI or MSI-X entry.
type MSIMessage struct {
	Addr uint64
	Data uint32
}

// MSIVector is one interrupt vector: an eventfd bound (by irqfd) to a guest
// route. Signalling the eventfd interrupts the guest without a VMM exit. Its
// eventfd may be handed to a VFIO device or a vfio-user server, which then
// interrupts the guest directly.
type MSIVector interface {
	// EventFD is the vector's trigger.
	EventFD() *EventFD
	// Update points the vector at msg. masked=true detaches the eventfd from
	// the guest (signals stay pending in the eventfd counter).
	Update(msg MSIMessage, masked bool) error
	// Close frees the route and the eventfd.
	Close() error
}

// Interrupts hands out MSI vectors and drives legacy (IOAPIC/PIC) lines.
type Interrupts interface {
	NewMSIVector() (MSIVector, error)
	// SetIRQLine sets a GSI line level (edge devices pulse it).
	SetIRQLine(gsi uint32, level bool) error
}

// AddrSpace names the bus an ioeventfd watches.
type AddrSpace int

const (
	PIO AddrSpace = iota
	MMIO
)

// IOEvents turns guest writes (doorbells) into eventfd signals without a
// vCPU exit (KVM_IOEVENTFD).
type IOEvents interface {
	// AddIOEvent signals ev on writes of size bytes to addr; with datamatch
	// set, only writes of that value.
	AddIOEvent(space AddrSpace, addr uint64, size uint32, datamatch *uint64, ev *EventFD) error
	RemoveIOEvent(space AddrSpace, addr uint64, size uint32, datamatch *uint64, ev *EventFD) error
}

// MemSlots maps host memory (a passthrough device's BAR pages) into guest
// physical address space, so guest accesses never exit.
type MemSlots interface {
	MapHostMemory(gpa uint64, host []byte, readonly bool) (handle int, err error)
	UnmapHostMemory(handle int) error
}

// Platform is everything a device may use.
type Platform struct {
	Mem   *guestmem.Memory
	PIO   *bus.Bus
	MMIO  *bus.Bus
	IRQ   Interrupts
	IOEv  IOEvents
	Slots MemSlots
}
