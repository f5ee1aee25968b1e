package vmm

import (
	"errors"
	"unsafe"

	"godvm/devices/platform"
	"godvm/kvm"
)

// hostAddr is the VMM address of a mapping, for KVM memory slots.
func hostAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// errNoIRQPlatform is returned by the minimal platform for services that
// need vmm/irq.
var errNoIRQPlatform = errors.New("vmm: MSI vectors, ioeventfds and extra memory slots need vmm/irq, which is not in this build")

// lineIRQ drives legacy lines with KVM_IRQ_LINE. It is the fallback used
// when vmm/irq is not available.
type lineIRQ struct{ vm *kvm.VM }

func (l lineIRQ) NewMSIVector() (platform.MSIVector, error) { return nil, errNoIRQPlatform }
func (l lineIRQ) SetIRQLine(gsi uint32, level bool) error   { return l.vm.IRQLine(gsi, level) }

type noIOEvents struct{}

func (noIOEvents) AddIOEvent(platform.AddrSpace, uint64, uint32, *uint64, *platform.EventFD) error {
	return errNoIRQPlatform
}
func (noIOEvents) RemoveIOEvent(platform.AddrSpace, uint64, uint32, *uint64, *platform.EventFD) error {
	return errNoIRQPlatform
}

type noSlots struct{}

func (noSlots) MapHostMemory(uint64, []byte, bool) (int, error) { return 0, errNoIRQPlatform }
func (noSlots) UnmapHostMemory(int) error                       { return errNoIRQPlatform }

// newPlatform builds the device platform over the machine's VM.
func newPlatform(m *Machine) (*platform.Platform, error) {
	return &platform.Platform{
		Mem:   m.mem,
		PIO:   m.pio,
		MMIO:  m.mmio,
		IRQ:   lineIRQ{m.vm},
		IOEv:  noIOEvents{},
		Slots: noSlots{},
	}, nil
}
