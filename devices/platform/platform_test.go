package platform_test

import (
	"testing"

	"godvm/devices/platform"
	"godvm/devices/platform/fake"
)

func TestEventFD(t *testing.T) {
	e, err := platform.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if n, _ := e.Read(); n != 0 {
		t.Fatalf("fresh eventfd reads %d", n)
	}
	e.Signal()
	e.Signal()
	if n, _ := e.Wait(1000); n != 2 {
		t.Fatalf("got %d, want 2", n)
	}
	if n, _ := e.Wait(10); n != 0 {
		t.Fatalf("timeout read %d", n)
	}
}

func TestFake(t *testing.T) {
	f, p := fake.New(nil)
	v, err := p.IRQ.NewMSIVector()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Update(platform.MSIMessage{Addr: 0xfee00000, Data: 0x41}, false); err != nil {
		t.Fatal(err)
	}
	v.EventFD().Signal()
	if c := f.Vectors[0].Count(); c != 1 {
		t.Fatalf("count %d", c)
	}
	if m, masked := f.Vectors[0].State(); masked || m.Data != 0x41 {
		t.Fatal("state", m, masked)
	}
}
