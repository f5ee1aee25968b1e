package irq

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"godvm/devices/platform"
	"godvm/kvm"
)

// TestLiveKVM runs the controller against a real VM when /dev/kvm exists.
func TestLiveKVM(t *testing.T) {
	if _, err := os.Stat(kvm.DevicePath); errors.Is(err, os.ErrNotExist) {
		t.Skip("/dev/kvm absent on this host: skipping the live irq test")
	}
	sys, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	c := New(vm, Config{FirstSlot: 1, SlotLimit: 32})
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	v, err := c.NewMSIVector()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Update(platform.MSIMessage{Addr: 0xfee00000, Data: 0x31}, false); err != nil {
		t.Fatal(err)
	}
	if err := v.EventFD().Signal(); err != nil {
		t.Fatal(err)
	}
	if err := v.Update(platform.MSIMessage{Addr: 0xfee00000, Data: 0x31}, true); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	ev, _ := platform.NewEventFD()
	defer ev.Close()
	if err := c.AddIOEvent(platform.MMIO, 0xc000_0000, 4, nil, ev); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveIOEvent(platform.MMIO, 0xc000_0000, 4, nil, ev); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(-1, 0, 0x2000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	h, err := c.MapHostMemory(0xc000_0000, mem, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UnmapHostMemory(h); err != nil {
		t.Fatal(err)
	}
	if err := c.SetIRQLine(4, true); err != nil {
		t.Fatal(err)
	}
}
