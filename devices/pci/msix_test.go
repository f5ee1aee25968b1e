package pci

import (
	"encoding/binary"
	"testing"

	"godvm/devices/platform"
	"godvm/devices/platform/fake"
)

type msixRig struct {
	f  *fake.Platform
	p  *platform.Platform
	cs *ConfigSpace
	m  *MSIX
}

func newMSIXRig(t *testing.T, n int, external bool) *msixRig {
	t.Helper()
	f, p := fake.New(nil)
	cs := NewConfigSpace(p, "msix", Header{VendorID: 1})
	m, err := NewMSIX(f, cs, MSIXConfig{Vectors: n, TableBAR: 0, TableOffset: 0x2000, PBABAR: 0, PBAOffset: 0x3000, External: external})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &msixRig{f, p, cs, m}
}

func (r *msixRig) ctl(v uint16) {
	w16(r.cs, uint32(r.m.CapOffset()+MSIXCtl), v)
}

func (r *msixRig) program(v int, addr uint64, data uint32, masked bool) {
	var e [16]byte
	binary.LittleEndian.PutUint64(e[0:], addr)
	binary.LittleEndian.PutUint32(e[8:], data)
	if masked {
		e[12] = 1
	}
	// 8-byte address write, then 4-byte data and control, like Linux.
	r.m.Table().Write(uint64(v*16), e[0:8])
	r.m.Table().Write(uint64(v*16+8), e[8:12])
	r.m.Table().Write(uint64(v*16+12), e[12:16])
}

func (r *msixRig) vec(v int) *fake.Vector { return r.f.Vectors[v] }

func (r *msixRig) pba() uint64 {
	var b [8]byte
	r.m.PBA().Read(0, b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func TestMSIXCapability(t *testing.T) {
	r := newMSIXRig(t, 3, false)
	off := r.m.CapOffset()
	if r.cs.FindCapability(CapMSIX) != off {
		t.Fatal("capability not in list")
	}
	if got := r.cs.U16(off + MSIXCtl); got != 2 {
		t.Fatalf("message control = %#x (want table size 3-1)", got)
	}
	if r.cs.U32(off+MSIXTableReg) != 0x2000 || r.cs.U32(off+MSIXPBAReg) != 0x3000 {
		t.Fatal("table/PBA offset registers")
	}
	// Table size field is read-only; enable and function mask are writable.
	r.ctl(0xffff)
	if got := r.cs.U16(off + MSIXCtl); got != 0xc002 {
		t.Fatalf("message control after all-ones = %#x", got)
	}
	if r.m.TableSize() != 48 || r.m.PBASize() != 8 {
		t.Fatal("sizes")
	}
	if _, err := NewMSIX(r.f, r.cs, MSIXConfig{Vectors: 0}); err == nil {
		t.Fatal("0 vectors accepted")
	}
	if _, err := NewMSIX(nil, r.cs, MSIXConfig{Vectors: 1}); err == nil {
		t.Fatal("nil interrupts accepted")
	}
	if _, err := NewMSIX(r.f, r.cs, MSIXConfig{Vectors: 1, TableOffset: 4}); err == nil {
		t.Fatal("misaligned table accepted")
	}
}

func TestMSIXTableLayout(t *testing.T) {
	r := newMSIXRig(t, 2, false)
	// Reset state: every vector masked.
	var b [16]byte
	r.m.Table().Read(16, b[:])
	if binary.LittleEndian.Uint32(b[12:]) != 1 {
		t.Fatalf("entry 1 control at reset = %x", b[12:])
	}
	r.program(1, 0xfee01000, 0x4041, false)
	var q [8]byte
	r.m.Table().Read(16, q[:])
	if binary.LittleEndian.Uint64(q[:]) != 0xfee01000 {
		t.Fatalf("8-byte address read = %x", q)
	}
	var d [4]byte
	r.m.Table().Read(24, d[:])
	if binary.LittleEndian.Uint32(d[:]) != 0x4041 {
		t.Fatal("data read")
	}
	r.m.Table().Read(20, d[:])
	if binary.LittleEndian.Uint32(d[:]) != 0 {
		t.Fatal("address high")
	}
	// Reserved vector-control bits read as zero.
	r.m.Table().Write(28, []byte{0xfe, 0xff, 0xff, 0xff})
	r.m.Table().Read(28, d[:])
	if binary.LittleEndian.Uint32(d[:]) != 0 {
		t.Fatalf("vector control = %x", d)
	}
	// Out-of-range accesses read all-ones and are ignored.
	r.m.Table().Read(32, d[:])
	if d != [4]byte{0xff, 0xff, 0xff, 0xff} {
		t.Fatal("read past table")
	}
	r.m.Table().Write(1<<63, d[:])
	if msg := r.m.Message(1); msg.Addr != 0xfee01000 || msg.Data != 0x4041 {
		t.Fatalf("Message = %+v", msg)
	}
}

func TestMSIXMaskAndPending(t *testing.T) {
	r := newMSIXRig(t, 2, false)
	r.program(0, 0xfee00000, 0x30, false)
	// Disabled: route stays detached, Notify is dropped.
	if _, masked := r.vec(0).State(); !masked {
		t.Fatal("vector attached while MSI-X disabled")
	}
	r.m.Notify(0)
	if r.vec(0).Count() != 0 || r.m.Pending(0) {
		t.Fatal("interrupt while disabled")
	}
	r.ctl(MSIXEnable)
	msg, masked := r.vec(0).State()
	if masked || msg.Addr != 0xfee00000 || msg.Data != 0x30 {
		t.Fatalf("vector 0 after enable: %+v masked=%v", msg, masked)
	}
	r.m.Notify(0)
	if r.vec(0).Count() != 1 {
		t.Fatal("unmasked Notify did not signal")
	}
	// Vector 1 is still masked: pending, no signal.
	r.program(1, 0xfee00000, 0x31, true)
	r.m.Notify(1)
	if r.vec(1).Count() != 0 || !r.m.Pending(1) || r.pba() != 2 {
		t.Fatalf("masked Notify: pending=%v pba=%#x", r.m.Pending(1), r.pba())
	}
	// Unmasking delivers and clears the pending bit.
	r.m.Table().Write(16+12, []byte{0, 0, 0, 0})
	if r.vec(1).Count() != 1 || r.m.Pending(1) || r.pba() != 0 {
		t.Fatal("unmask did not deliver the pending interrupt")
	}
	// Function mask: everything pends; the vectors' routes are detached.
	r.ctl(MSIXEnable | MSIXFuncMask)
	if _, masked := r.vec(0).State(); !masked {
		t.Fatal("function mask did not detach the route")
	}
	r.m.Notify(0)
	r.m.Notify(0)
	r.m.Notify(1)
	if r.vec(0).Count() != 0 || r.pba() != 3 || !r.m.Masked(0) {
		t.Fatal("function-masked Notify")
	}
	r.ctl(MSIXEnable)
	if r.vec(0).Count() != 1 || r.vec(1).Count() != 1 || r.pba() != 0 {
		t.Fatal("function unmask: pending interrupts not delivered once each")
	}
	// Out-of-range vector: ignored.
	r.m.Notify(7)
	r.m.Notify(-1)
	// PBA is read-only.
	r.m.PBA().Write(0, []byte{0xff})
	if r.pba() != 0 {
		t.Fatal("PBA writable")
	}
	// Reset: disabled, masked, nothing pending.
	r.m.Reset()
	if r.m.Enabled() || !r.m.Masked(0) || r.cs.U16(r.m.CapOffset()+MSIXCtl)&MSIXEnable != 0 {
		t.Fatal("reset")
	}
}

func TestMSIXManyVectorsPBA(t *testing.T) {
	r := newMSIXRig(t, 70, false)
	r.ctl(MSIXEnable)
	r.m.Notify(65)
	var b [16]byte
	r.m.PBA().Read(0, b[:])
	if binary.LittleEndian.Uint64(b[8:]) != 2 || r.m.PBASize() != 16 {
		t.Fatalf("PBA = %x", b)
	}
	var d [4]byte
	r.m.PBA().Read(8, d[:])
	if d[0] != 2 {
		t.Fatal("4-byte PBA read")
	}
}

func TestMSIXExternal(t *testing.T) {
	r := newMSIXRig(t, 1, true)
	r.ctl(MSIXEnable)
	r.program(0, 0xfee00000, 0x40, true)
	// The device signals the eventfd itself while the vector is masked.
	r.m.Vector(0).EventFD().Signal()
	if r.pba() != 1 {
		t.Fatal("external pending signal not reflected in PBA")
	}
	// Unmask: route attached first, then re-signalled once.
	r.m.Table().Write(12, []byte{0, 0, 0, 0})
	if _, masked := r.vec(0).State(); masked {
		t.Fatal("route still detached")
	}
	if r.vec(0).Count() != 1 || r.pba() != 0 {
		t.Fatal("pending external interrupt not re-delivered")
	}
}

type countingIRQ struct {
	f       *fake.Platform
	updates int
}

type countingVec struct {
	platform.MSIVector
	c *countingIRQ
}

func (v countingVec) Update(msg platform.MSIMessage, masked bool) error {
	v.c.updates++
	return v.MSIVector.Update(msg, masked)
}

func (c *countingIRQ) NewMSIVector() (platform.MSIVector, error) {
	v, err := c.f.NewMSIVector()
	return countingVec{v, c}, err
}

func (c *countingIRQ) SetIRQLine(gsi uint32, level bool) error { return nil }

// Route updates are expensive in the VMM (KVM_SET_GSI_ROUTING + irqfd):
// only real changes reach the platform.
func TestMSIXUpdatesOnlyOnChange(t *testing.T) {
	f, p := fake.New(nil)
	c := &countingIRQ{f: f}
	cs := NewConfigSpace(p, "t", Header{VendorID: 1})
	m, err := NewMSIX(c, cs, MSIXConfig{Vectors: 4, TableOffset: 0x1000, PBAOffset: 0x2000})
	if err != nil {
		t.Fatal(err)
	}
	r := &msixRig{f, p, cs, m}
	// Programming masked vectors while MSI-X is off changes nothing.
	for v := 0; v < 4; v++ {
		r.program(v, 0xfee00000, uint32(0x20+v), true)
	}
	if c.updates != 0 {
		t.Fatalf("%d updates for masked vectors", c.updates)
	}
	r.ctl(MSIXEnable)
	r.ctl(MSIXEnable) // same value again
	if c.updates != 0 {
		t.Fatalf("%d updates while every vector is masked", c.updates)
	}
	r.m.Table().Write(12, []byte{0, 0, 0, 0}) // unmask vector 0
	r.m.Table().Write(12, []byte{0, 0, 0, 0}) // again: no change
	if c.updates != 1 {
		t.Fatalf("%d updates after unmasking one vector", c.updates)
	}
	r.ctl(MSIXEnable | MSIXFuncMask)
	r.ctl(MSIXEnable)
	if c.updates != 3 {
		t.Fatalf("%d updates after a function mask round trip", c.updates)
	}
	if msg, masked := f.Vectors[0].State(); masked || msg.Data != 0x20 {
		t.Fatalf("vector 0: %+v masked=%v", msg, masked)
	}
}
