package vmm

import (
	"testing"

	"golang.org/x/sys/unix"

	"godvm/devices/bus"
	"godvm/devices/platform"
	"godvm/guestmem"
	"godvm/kvm"
)

// TestLivePlatform runs the platform newPlatform builds (vmm/irq,
// vmm/ioevent, vmm/memslot) against a real VM when /dev/kvm exists.
func TestLivePlatform(t *testing.T) {
	requireKVM(t)
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
	mem, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	p, err := newPlatform(&Machine{vm: vm, mem: mem, pio: &bus.Bus{}, mmio: &bus.Bus{}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := p.IRQ.NewMSIVector()
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
	if err := p.IRQ.SetIRQLine(4, true); err != nil {
		t.Fatal(err)
	}
	ev, err := platform.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	if err := p.IOEv.AddIOEvent(platform.MMIO, 0xc000_0000, 4, nil, ev); err != nil {
		t.Fatal(err)
	}
	if err := p.IOEv.RemoveIOEvent(platform.MMIO, 0xc000_0000, 4, nil, ev); err != nil {
		t.Fatal(err)
	}
	host, err := unix.Mmap(-1, 0, 0x2000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(host)
	h, err := p.Slots.MapHostMemory(0xc000_0000, host, false)
	if err != nil {
		t.Fatal(err)
	}
	if h != len(mem.Regions()) {
		t.Errorf("first host slot %d, want %d (after RAM's)", h, len(mem.Regions()))
	}
	if err := p.Slots.UnmapHostMemory(h); err != nil {
		t.Fatal(err)
	}
}
