// Package fake is an in-process Platform for device tests: vectors are real
// eventfds whose signals the test reads, ioevents are recorded, lines are
// remembered. Nothing touches KVM.
package fake

import (
	"errors"
	"sync"

	"godvm/devices/bus"
	"godvm/devices/platform"
	"godvm/guestmem"
)

// Vector is a fake MSI vector.
type Vector struct {
	mu     sync.Mutex
	ev     *platform.EventFD
	Msg    platform.MSIMessage
	Masked bool
	Closed bool
}

func (v *Vector) EventFD() *platform.EventFD { return v.ev }

func (v *Vector) Update(msg platform.MSIMessage, masked bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.Closed {
		return errors.New("fake: vector closed")
	}
	v.Msg, v.Masked = msg, masked
	return nil
}

func (v *Vector) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.Closed = true
	return v.ev.Close()
}

// State returns the vector's route and mask.
func (v *Vector) State() (platform.MSIMessage, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.Msg, v.Masked
}

// Count reads and clears how often the vector fired.
func (v *Vector) Count() uint64 {
	n, _ := v.ev.Read()
	return n
}

// IOEvent is a recorded ioeventfd registration.
type IOEvent struct {
	Space     platform.AddrSpace
	Addr      uint64
	Size      uint32
	DataMatch *uint64
	Ev        *platform.EventFD
}

// Platform is a fake machine.
type Platform struct {
	mu       sync.Mutex
	Vectors  []*Vector
	Lines    map[uint32]bool
	IOEvents []IOEvent
	Slots    map[int]uint64 // handle -> gpa
	next     int
}

// New returns a fake platform with the given guest memory and fresh buses.
func New(mem *guestmem.Memory) (*Platform, *platform.Platform) {
	f := &Platform{Lines: map[uint32]bool{}, Slots: map[int]uint64{}}
	return f, &platform.Platform{Mem: mem, PIO: &bus.Bus{}, MMIO: &bus.Bus{}, IRQ: f, IOEv: f, Slots: f}
}

func (f *Platform) NewMSIVector() (platform.MSIVector, error) {
	ev, err := platform.NewEventFD()
	if err != nil {
		return nil, err
	}
	v := &Vector{ev: ev, Masked: true}
	f.mu.Lock()
	f.Vectors = append(f.Vectors, v)
	f.mu.Unlock()
	return v, nil
}

func (f *Platform) SetIRQLine(gsi uint32, level bool) error {
	f.mu.Lock()
	f.Lines[gsi] = level
	f.mu.Unlock()
	return nil
}

func (f *Platform) AddIOEvent(s platform.AddrSpace, addr uint64, size uint32, dm *uint64, ev *platform.EventFD) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.IOEvents = append(f.IOEvents, IOEvent{s, addr, size, dm, ev})
	return nil
}

func (f *Platform) RemoveIOEvent(s platform.AddrSpace, addr uint64, size uint32, dm *uint64, ev *platform.EventFD) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range f.IOEvents {
		if e.Space == s && e.Addr == addr && e.Ev == ev {
			f.IOEvents = append(f.IOEvents[:i], f.IOEvents[i+1:]...)
			return nil
		}
	}
	return errors.New("fake: no such ioevent")
}

func (f *Platform) MapHostMemory(gpa uint64, host []byte, ro bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.Slots[f.next] = gpa
	return f.next, nil
}

func (f *Platform) UnmapHostMemory(h int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.Slots[h]; !ok {
		return errors.New("fake: no such slot")
	}
	delete(f.Slots, h)
	return nil
}
