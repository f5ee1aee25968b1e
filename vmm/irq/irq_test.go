package irq

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"godvm/devices/platform"
	"godvm/kvm"
)

// fakeVM models the KVM state the controller drives and checks KVM's
// rules: an irqfd is (de)assigned once per (fd, gsi).
type fakeVM struct {
	table   []kvm.IRQRoutingEntry
	submits int
	irqfds  map[[2]int]bool // {fd, gsi}
	lines   map[uint32]bool
	log     []string
	fail    map[string]error // next call of that name fails
}

func newFakeVM() *fakeVM {
	return &fakeVM{irqfds: map[[2]int]bool{}, lines: map[uint32]bool{}, fail: map[string]error{}}
}

func (f *fakeVM) failing(name string) error {
	if err, ok := f.fail[name]; ok {
		delete(f.fail, name)
		return err
	}
	return nil
}

func (f *fakeVM) SetGSIRouting(e []kvm.IRQRoutingEntry) error {
	if err := f.failing("routing"); err != nil {
		return err
	}
	f.table = append([]kvm.IRQRoutingEntry(nil), e...)
	f.submits++
	f.log = append(f.log, "routing")
	return nil
}

func (f *fakeVM) routed(gsi uint32) bool {
	for _, e := range f.table {
		if e.GSI == gsi {
			return true
		}
	}
	return false
}

func (f *fakeVM) AssignIRQFD(fd int, gsi uint32) error {
	if err := f.failing("assign"); err != nil {
		return err
	}
	k := [2]int{fd, int(gsi)}
	if f.irqfds[k] {
		return &kvm.Error{Op: "KVM_IRQFD", Errno: unix.EBUSY}
	}
	f.irqfds[k] = true
	f.log = append(f.log, "assign")
	return nil
}

func (f *fakeVM) DeassignIRQFD(fd int, gsi uint32) error {
	if err := f.failing("deassign"); err != nil {
		return err
	}
	k := [2]int{fd, int(gsi)}
	if !f.irqfds[k] {
		return &kvm.Error{Op: "KVM_IRQFD", Errno: unix.ENOENT}
	}
	delete(f.irqfds, k)
	f.log = append(f.log, "deassign")
	return nil
}

func (f *fakeVM) IRQLine(gsi uint32, level bool) error {
	if err := f.failing("line"); err != nil {
		return err
	}
	f.lines[gsi] = level
	return nil
}

func newCtl(t *testing.T) (*Controller, *fakeVM) {
	f := newFakeVM()
	return New(f, Config{}), f
}

func TestDefaultRoutes(t *testing.T) {
	r := KVMDefaultRoutes()
	if len(r) != 40 { // 24 IOAPIC + 16 PIC
		t.Fatalf("%d routes", len(r))
	}
	count := map[[2]uint32]bool{}
	for _, e := range r {
		chip, pin := e.IRQChip()
		if e.Type != kvm.IRQRoutingIRQChip {
			t.Errorf("gsi %d type %d", e.GSI, e.Type)
		}
		switch chip {
		case kvm.IRQChipIOAPIC:
			if pin != e.GSI {
				t.Errorf("gsi %d -> ioapic pin %d", e.GSI, pin)
			}
		case kvm.IRQChipPICMaster:
			if e.GSI >= 8 || pin != e.GSI {
				t.Errorf("gsi %d -> pic master %d", e.GSI, pin)
			}
		case kvm.IRQChipPICSlave:
			if e.GSI < 8 || e.GSI >= 16 || pin != e.GSI-8 {
				t.Errorf("gsi %d -> pic slave %d", e.GSI, pin)
			}
		}
		count[[2]uint32{e.GSI, chip}] = true
	}
	if len(count) != 40 {
		t.Error("duplicate routes")
	}
	o := ISAOverrideRoutes()
	for _, e := range o {
		chip, pin := e.IRQChip()
		if e.GSI == 2 {
			t.Errorf("GSI 2 routed in the override table: chip %d pin %d", chip, pin)
		}
		if e.GSI == 0 && chip == kvm.IRQChipIOAPIC && pin != 2 {
			t.Errorf("GSI 0 -> IOAPIC pin %d, want 2", pin)
		}
	}
	if len(o) != 38 {
		t.Errorf("override table has %d routes, want 38", len(o))
	}
}

func TestMSIVectorLifecycle(t *testing.T) {
	c, f := newCtl(t)
	v, err := c.NewMSIVector()
	if err != nil {
		t.Fatal(err)
	}
	vec := v.(*Vector)
	if vec.GSI() != 24 {
		t.Errorf("first GSI %d, want 24", vec.GSI())
	}
	if f.submits != 0 || len(f.irqfds) != 0 {
		t.Error("a new (masked) vector touched KVM")
	}
	// Masked update: nothing to detach, no route; nothing submitted.
	if err := v.Update(platform.MSIMessage{Addr: 0xfee00000, Data: 0x41}, true); err != nil {
		t.Fatal(err)
	}
	if f.submits != 0 {
		t.Error("masked update submitted a table")
	}
	// Unmask: route first, then irqfd.
	msg := platform.MSIMessage{Addr: 0xfee01000, Data: 0x42}
	if err := v.Update(msg, false); err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.log, ",") != "routing,assign" {
		t.Errorf("order %v, want routing then assign", f.log)
	}
	if len(f.table) != 41 {
		t.Fatalf("table has %d entries, want 40 legacy + 1", len(f.table))
	}
	last := f.table[40]
	if a, d, _ := last.MSI(); last.GSI != 24 || last.Type != kvm.IRQRoutingMSI || a != 0xfee01000 || d != 0x42 {
		t.Errorf("msi route %+v", last)
	}
	if !f.irqfds[[2]int{v.EventFD().Fd(), 24}] {
		t.Error("irqfd not assigned")
	}
	// Same message again: no resubmission, no second assign.
	f.log = nil
	if err := v.Update(msg, false); err != nil || len(f.log) != 0 {
		t.Errorf("idempotent update: %v %v", err, f.log)
	}
	// New data while unmasked: table resubmitted, irqfd kept.
	if err := v.Update(platform.MSIMessage{Addr: 0xfee01000, Data: 0x43}, false); err != nil || strings.Join(f.log, ",") != "routing" {
		t.Errorf("retarget: %v %v", err, f.log)
	}
	// Mask: irqfd first, then route.
	f.log = nil
	if err := v.Update(msg, true); err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.log, ",") != "deassign,routing" || len(f.table) != 40 || f.routed(24) {
		t.Errorf("mask: log %v, %d routes", f.log, len(f.table))
	}
	// Close frees the GSI for reuse.
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Update(msg, false); err == nil {
		t.Error("update after close succeeded")
	}
	if err := v.Close(); err != nil {
		t.Error("second close:", err)
	}
	v2, _ := c.NewMSIVector()
	if v2.(*Vector).GSI() != 24 {
		t.Errorf("GSI not reused: %d", v2.(*Vector).GSI())
	}
	v2.Close()
}

func TestTableKeepsEveryVector(t *testing.T) {
	c, f := newCtl(t)
	var vs []platform.MSIVector
	for i := 0; i < 5; i++ {
		v, err := c.NewMSIVector()
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
		defer v.Close()
	}
	// Unmask in reverse order; the table stays sorted and complete.
	for i := len(vs) - 1; i >= 0; i-- {
		if err := vs[i].Update(platform.MSIMessage{Addr: 0xfee00000, Data: uint32(0x30 + i)}, false); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.table) != 45 {
		t.Fatalf("%d entries", len(f.table))
	}
	for i := 0; i < 5; i++ {
		e := f.table[40+i]
		if _, d, _ := e.MSI(); e.GSI != uint32(24+i) || d != uint32(0x30+i) {
			t.Errorf("entry %d: gsi %d data %#x", i, e.GSI, d)
		}
	}
	// Legacy routes are all still there.
	for gsi := uint32(0); gsi < 24; gsi++ {
		if !f.routed(gsi) {
			t.Errorf("legacy GSI %d dropped", gsi)
		}
	}
	// Closing one unmasked vector removes exactly its route.
	vs[2].Close()
	if len(f.table) != 44 || f.routed(26) || len(f.irqfds) != 4 {
		t.Errorf("after close: %d routes, routed(26)=%v, %d irqfds", len(f.table), f.routed(26), len(f.irqfds))
	}
	if got := c.Table(); len(got) != 44 {
		t.Errorf("Table() has %d", len(got))
	}
}

func TestRoutingFailureRollsBack(t *testing.T) {
	c, f := newCtl(t)
	v, _ := c.NewMSIVector()
	defer v.Close()
	f.fail["routing"] = &kvm.Error{Op: "KVM_SET_GSI_ROUTING", Errno: unix.ENOMEM}
	err := v.Update(platform.MSIMessage{Addr: 0xfee00000, Data: 1}, false)
	if err == nil || !strings.Contains(err.Error(), "KVM_SET_GSI_ROUTING: cannot allocate memory") || !strings.Contains(err.Error(), "GSI 24") {
		t.Fatalf("err %v", err)
	}
	if len(c.Table()) != 40 || len(f.irqfds) != 0 {
		t.Error("failed update left a route or an irqfd")
	}
	// It works on retry.
	if err := v.Update(platform.MSIMessage{Addr: 0xfee00000, Data: 1}, false); err != nil {
		t.Fatal(err)
	}
	// A failing irqfd assignment is reported.
	v2, _ := c.NewMSIVector()
	defer v2.Close()
	f.fail["assign"] = &kvm.Error{Op: "KVM_IRQFD", Errno: unix.EINVAL}
	if err := v2.Update(platform.MSIMessage{Addr: 0xfee00000, Data: 2}, false); err == nil || !errors.Is(err, unix.EINVAL) {
		t.Errorf("err %v", err)
	}
	if err := v2.Update(platform.MSIMessage{Addr: 0xfee00000, Data: 2}, false); err != nil {
		t.Errorf("retry after failed assign: %v", err)
	}
}

func TestGSIExhaustion(t *testing.T) {
	f := newFakeVM()
	c := New(f, Config{FirstMSIGSI: 24, GSILimit: 26})
	a, err1 := c.NewMSIVector()
	b, err2 := c.NewMSIVector()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := c.NewMSIVector(); err == nil || !strings.Contains(err.Error(), "all 2 MSI GSIs in use") {
		t.Errorf("err %v", err)
	}
	a.Close()
	if v, err := c.NewMSIVector(); err != nil || v.(*Vector).GSI() != 24 {
		t.Errorf("after free: %v", err)
	}
	b.Close()
}

func TestPendingSignalsSurviveMask(t *testing.T) {
	// The eventfd is real: a signal while masked stays in the counter.
	c, _ := newCtl(t)
	v, _ := c.NewMSIVector()
	defer v.Close()
	v.EventFD().Signal()
	v.EventFD().Signal()
	if n, _ := v.EventFD().Read(); n != 2 {
		t.Errorf("counter %d", n)
	}
}

func TestIRQLine(t *testing.T) {
	c, f := newCtl(t)
	if err := c.SetIRQLine(4, true); err != nil || !f.lines[4] {
		t.Error(err)
	}
	f.fail["line"] = &kvm.Error{Op: "KVM_IRQ_LINE", Errno: unix.ENXIO}
	if err := c.SetIRQLine(4, false); err == nil || !strings.Contains(err.Error(), "line 4: KVM_IRQ_LINE") {
		t.Errorf("err %v", err)
	}
}
