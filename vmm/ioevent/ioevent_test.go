package ioevent

import (
	"testing"

	"golang.org/x/sys/unix"

	"godvm/devices/platform"
	"godvm/kvm"
)

// fakeVM checks KVM's rule that an ioeventfd is removed with the arguments
// it was added with.
type fakeVM struct {
	ioev []kvm.IOEventFD
}

func (f *fakeVM) SetIOEventFD(e kvm.IOEventFD) error {
	if e.Flags&kvm.IOEventFDFlagDeassign != 0 {
		e.Flags &^= kvm.IOEventFDFlagDeassign
		for i, x := range f.ioev {
			if x == e {
				f.ioev = append(f.ioev[:i], f.ioev[i+1:]...)
				return nil
			}
		}
		return &kvm.Error{Op: "KVM_IOEVENTFD", Errno: unix.ENOENT}
	}
	f.ioev = append(f.ioev, e)
	return nil
}

func newCtl(t *testing.T) (*Registry, *fakeVM) {
	f := &fakeVM{}
	return New(f), f
}

func TestIOEvents(t *testing.T) {
	c, f := newCtl(t)
	ev, err := platform.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	dm := uint64(3)
	if err := c.AddIOEvent(platform.MMIO, 0xc000_1000, 4, &dm, ev); err != nil {
		t.Fatal(err)
	}
	if err := c.AddIOEvent(platform.PIO, 0x510, 2, nil, ev); err != nil {
		t.Fatal(err)
	}
	if len(f.ioev) != 2 {
		t.Fatalf("%d ioeventfds", len(f.ioev))
	}
	m := f.ioev[0]
	if m.Addr != 0xc0001000 || m.Len != 4 || m.FD != int32(ev.Fd()) || m.DataMatch != 3 || m.Flags != kvm.IOEventFDFlagDataMatch {
		t.Errorf("mmio %+v", m)
	}
	if p := f.ioev[1]; p.Flags != kvm.IOEventFDFlagPIO || p.Addr != 0x510 {
		t.Errorf("pio %+v", p)
	}
	dm = 99 // the controller copied the value
	if err := c.AddIOEvent(platform.MMIO, 0, 3, nil, ev); err == nil {
		t.Error("size 3 accepted")
	}
	if err := c.RemoveIOEvent(platform.MMIO, 0xc000_1000, 4, nil, ev); err == nil {
		t.Error("removed with the wrong datamatch")
	}
	three := uint64(3)
	if err := c.RemoveIOEvent(platform.MMIO, 0xc000_1000, 4, &three, ev); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveIOEvent(platform.PIO, 0x510, 2, nil, ev); err != nil {
		t.Fatal(err)
	}
	if len(f.ioev) != 0 {
		t.Errorf("left %+v", f.ioev)
	}
	if err := c.RemoveIOEvent(platform.PIO, 0x510, 2, nil, ev); err == nil {
		t.Error("double remove")
	}
}
