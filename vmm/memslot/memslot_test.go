package memslot

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"godvm/addr"
	"godvm/kvm"
)

// fakeVM keeps the slots KVM was given (a zero size deletes one).
type fakeVM struct {
	slots map[uint32]kvm.UserspaceMemoryRegion
	fail  error // the next call fails with it
}

func (f *fakeVM) SetUserMemoryRegion(r kvm.UserspaceMemoryRegion) error {
	if err := f.fail; err != nil {
		f.fail = nil
		return err
	}
	if r.MemorySize == 0 {
		delete(f.slots, r.Slot)
		return nil
	}
	f.slots[r.Slot] = r
	return nil
}

func newCtl(t *testing.T) (*Slots, *fakeVM) {
	f := &fakeVM{slots: map[uint32]kvm.UserspaceMemoryRegion{}}
	return New(f, Config{FirstSlot: 4, SlotLimit: 8}), f
}

func pageAligned(t *testing.T, n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

func TestMemSlots(t *testing.T) {
	c, f := newCtl(t)
	a := pageAligned(t, 0x2000)
	h, err := c.MapHostMemory(0xc000_0000, a, false)
	if err != nil {
		t.Fatal(err)
	}
	if h != 4 {
		t.Errorf("first slot %d, want FirstSlot 4", h)
	}
	r := f.slots[4]
	if r.GuestPhysAddr != 0xc0000000 || r.MemorySize != 0x2000 || r.UserspaceAddr != addr.Host(a) || r.Flags != 0 {
		t.Errorf("%+v", r)
	}
	b := pageAligned(t, 0x1000)
	h2, err := c.MapHostMemory(0xc000_4000, b, true)
	if err != nil || h2 != 5 || f.slots[5].Flags != kvm.MemReadonly {
		t.Errorf("second: %d %v %+v", h2, err, f.slots[5])
	}
	if _, err := c.MapHostMemory(0xc000_1000, b, false); err == nil || !strings.Contains(err.Error(), "overlaps slot 4") {
		t.Errorf("overlap: %v", err)
	}
	if _, err := c.MapHostMemory(0xc000_8000, a[1:0x1001], false); err == nil {
		t.Error("unaligned host accepted")
	}
	if _, err := c.MapHostMemory(0xc000_8800, b, false); err == nil {
		t.Error("unaligned gpa accepted")
	}
	if _, err := c.MapHostMemory(0xc000_8000, nil, false); err == nil {
		t.Error("empty mapping accepted")
	}
	if err := c.UnmapHostMemory(h); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.slots[4]; ok {
		t.Error("slot 4 not deleted in KVM")
	}
	if err := c.UnmapHostMemory(h); err == nil {
		t.Error("double unmap")
	}
	// Slot 4 is free again; limit 8 allows 4..7.
	for i := 0; i < 3; i++ {
		if _, err := c.MapHostMemory(0xd000_0000+uint64(i)*0x1000, b, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.MapHostMemory(0xd100_0000, b, false); err == nil || !strings.Contains(err.Error(), "no free memory slot") {
		t.Errorf("exhaustion: %v", err)
	}
	if err := c.UnmapHostMemory(5); err != nil {
		t.Fatal(err)
	}
	f.fail = &kvm.Error{Op: "KVM_SET_USER_MEMORY_REGION", Errno: unix.EEXIST}
	if _, err := c.MapHostMemory(0xd200_0000, b, false); err == nil || !strings.Contains(err.Error(), "KVM_SET_USER_MEMORY_REGION: file exists") {
		t.Errorf("kvm failure: %v", err)
	}
	if _, ok := f.slots[5]; ok {
		t.Error("failed map recorded")
	}
	if h, err := c.MapHostMemory(0xd200_0000, b, false); err != nil || h != 5 {
		t.Errorf("slot not free after a failed map: %d %v", h, err)
	}
}
