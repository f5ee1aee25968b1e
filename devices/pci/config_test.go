package pci

import (
	"encoding/binary"
	"testing"

	"godvm/devices/bus"
	"godvm/devices/platform"
)

// regDev is a BAR device that remembers the last write and answers reads
// with a fixed byte.
type regDev struct {
	lastOff uint64
	last    []byte
	fillB   byte
}

func (d *regDev) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = d.fillB
	}
}
func (d *regDev) Write(off uint64, data []byte) {
	d.lastOff, d.last = off, append([]byte(nil), data...)
}

func w32(c interface{ ConfigWrite(uint32, []byte) }, off uint32, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	c.ConfigWrite(off, b[:])
}

func w16(c interface{ ConfigWrite(uint32, []byte) }, off uint32, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	c.ConfigWrite(off, b[:])
}

func r32(c interface{ ConfigRead(uint32, []byte) }, off uint32) uint32 {
	var b [4]byte
	c.ConfigRead(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func newPlat() *platform.Platform {
	return &platform.Platform{PIO: &bus.Bus{}, MMIO: &bus.Bus{}}
}

func TestHeaderReadOnly(t *testing.T) {
	c := NewConfigSpace(nil, "t", Header{VendorID: 0x1af4, DeviceID: 0x1042, Revision: 1, Class: 0x018000, SubsysVendor: 0x1af4, SubsysID: 2})
	if got := r32(c, 0); got != 0x10421af4 {
		t.Fatalf("id = %#x", got)
	}
	if got := r32(c, 8); got != 0x01800001 {
		t.Fatalf("class/rev = %#x", got)
	}
	if got := r32(c, RegSubsysVendor); got != 0x00021af4 {
		t.Fatalf("subsys = %#x", got)
	}
	w32(c, 0, 0xffffffff)
	w32(c, 8, 0)
	w32(c, RegSubsysVendor, 0)
	if r32(c, 0) != 0x10421af4 || r32(c, 8) != 0x01800001 || r32(c, RegSubsysVendor) != 0x00021af4 {
		t.Fatal("read-only identity fields changed")
	}
	// No INTx pin; line reads 0xff and is writable.
	if c.U8(RegInterruptPin) != 0 || c.U8(RegInterruptLine) != 0xff {
		t.Fatalf("pin/line = %d/%#x", c.U8(RegInterruptPin), c.U8(RegInterruptLine))
	}
	c.ConfigWrite(RegInterruptLine, []byte{11})
	c.ConfigWrite(RegInterruptPin, []byte{1})
	if c.U8(RegInterruptLine) != 11 || c.U8(RegInterruptPin) != 0 {
		t.Fatal("interrupt line not writable or pin writable")
	}
	// Command: only defined bits stick.
	w16(c, RegCommand, 0xffff)
	if got := c.Command(); got != CmdIO|CmdMemory|CmdBusMaster|CmdParity|CmdSERR|CmdIntxDisable {
		t.Fatalf("command = %#x", got)
	}
	// Status: W1C bits clear on 1, other bits read-only.
	c.SetU16(RegStatus, 0x8000|StatusCapList)
	w16(c, RegStatus, 0x8000)
	if got := c.U16(RegStatus); got != StatusCapList {
		t.Fatalf("status = %#x", got)
	}
	w16(c, RegStatus, 0xffff&^0xf900)
	if got := c.U16(RegStatus); got != StatusCapList {
		t.Fatalf("status after write of RO bits = %#x", got)
	}
	// Beyond 4 KiB: all-ones; no panic on writes.
	var b [4]byte
	c.ConfigRead(4094, b[:])
	if b[2] != 0xff || b[3] != 0xff {
		t.Fatalf("past-end read = %x", b)
	}
	c.ConfigWrite(4094, b[:])
	c.ConfigWrite(0, nil)
}

func TestBARSizing(t *testing.T) {
	c := NewConfigSpace(nil, "t", Header{VendorID: 1})
	must(t, c.SetBAR(0, BAR{Type: BARMem32, Size: 0x4000}))
	must(t, c.SetBAR(1, BAR{Type: BARIO, Size: 0x20}))
	must(t, c.SetBAR(2, BAR{Type: BARMem64, Size: 1 << 33, Prefetchable: true}))
	if err := c.SetBAR(3, BAR{Type: BARMem32, Size: 0x1000}); err == nil {
		t.Fatal("BAR3 (upper half of 64-bit BAR2) accepted")
	}
	if err := c.SetBAR(4, BAR{Type: BARMem32, Size: 0x3000}); err == nil {
		t.Fatal("non-power-of-two size accepted")
	}
	if err := c.SetBAR(5, BAR{Type: BARMem64, Size: 0x1000}); err == nil {
		t.Fatal("64-bit BAR in register 5 accepted")
	}
	for i := 0; i < 6; i++ {
		w32(c, uint32(RegBAR0+4*i), 0xffffffff)
	}
	want := []uint32{0xffffc000, 0xffffffe1, 0x0000000c, 0xfffffffe, 0, 0}
	for i, w := range want {
		if got := r32(c, uint32(RegBAR0+4*i)); got != w {
			t.Errorf("BAR%d sizing read = %#x, want %#x", i, got, w)
		}
	}
	// Linux's size computation for the 64-bit pair.
	lo, hi := uint64(r32(c, RegBAR0+8)&^0xf), uint64(r32(c, RegBAR0+12))
	if size := ^(hi<<32 | lo) + 1; size != 1<<33 {
		t.Errorf("64-bit size = %#x", size)
	}
	// Expansion ROM is not implemented: reads 0 after all-ones.
	w32(c, RegROM, 0xffffffff)
	if r32(c, RegROM) != 0 {
		t.Error("ROM BAR writable")
	}
}

func TestBARRelocation(t *testing.T) {
	p := newPlat()
	c := NewConfigSpace(p, "t", Header{VendorID: 1})
	d0, d2, dio := &regDev{fillB: 0xa0}, &regDev{fillB: 0xa2}, &regDev{fillB: 0x10}
	must(t, c.SetBAR(0, BAR{Type: BARMem32, Size: 0x1000, Dev: d0}))
	must(t, c.SetBAR(1, BAR{Type: BARIO, Size: 0x10, Dev: dio}))
	must(t, c.SetBAR(2, BAR{Type: BARMem64, Size: 0x2000, Dev: d2}))
	var events []BARChange
	c.OnBARChange = func(ch BARChange) { events = append(events, ch) }

	w32(c, RegBAR0, 0xc0000000)
	w32(c, RegBAR0+4, 0xc000)
	w32(c, RegBAR0+8, 0x0)
	w32(c, RegBAR0+12, 0x10)
	if len(p.MMIO.Ranges())+len(p.PIO.Ranges()) != 0 || len(events) != 0 {
		t.Fatal("BARs mapped with decode off")
	}
	w16(c, RegCommand, CmdMemory|CmdIO)
	if len(events) != 3 {
		t.Fatalf("events = %+v", events)
	}
	var b [4]byte
	if !p.MMIO.Read(0xc0000010, b[:]) || b[0] != 0xa0 {
		t.Fatal("BAR0 not at 0xc0000000")
	}
	if !p.MMIO.Read(0x10_0000_1ff8, b[:]) || b[0] != 0xa2 {
		t.Fatal("64-bit BAR2 not at 0x1000000000")
	}
	if !p.PIO.Read(0xc004, b[:1]) || b[0] != 0x10 {
		t.Fatal("I/O BAR1 not at 0xc000")
	}
	p.MMIO.Write(0xc0000ffc, []byte{1, 2, 3, 4})
	if d0.lastOff != 0xffc {
		t.Fatalf("write reached BAR0 at offset %#x", d0.lastOff)
	}
	if a, m := c.BARAddress(2); a != 0x10_0000_0000 || !m {
		t.Fatalf("BARAddress(2) = %#x %v", a, m)
	}

	// Move BAR0: unmap event at the old address, map at the new one.
	events = nil
	w32(c, RegBAR0, 0xc0100000)
	if len(events) != 2 || events[0].Mapped || events[0].Addr != 0xc0000000 || !events[1].Mapped || events[1].Addr != 0xc0100000 {
		t.Fatalf("move events = %+v", events)
	}
	if p.MMIO.Read(0xc0000010, b[:]) {
		t.Fatal("old BAR0 address still decodes")
	}
	if !p.MMIO.Read(0xc0100010, b[:]) {
		t.Fatal("new BAR0 address does not decode")
	}
	// Sizing with decode on: all-ones is not a valid placement; nothing is
	// mapped there and restoring the address maps it again.
	events = nil
	w32(c, RegBAR0, 0xffffffff)
	if len(events) != 1 || events[0].Mapped {
		t.Fatalf("sizing events = %+v", events)
	}
	w32(c, RegBAR0, 0xc0100000)
	if !p.MMIO.Read(0xc0100010, b[:]) {
		t.Fatal("BAR0 not remapped after sizing")
	}
	// Memory decode off unmaps memory BARs only.
	events = nil
	w16(c, RegCommand, CmdIO)
	if len(events) != 2 || len(p.MMIO.Ranges()) != 0 || len(p.PIO.Ranges()) != 1 {
		t.Fatalf("decode off: events %+v, mmio %v, pio %v", events, p.MMIO.Ranges(), p.PIO.Ranges())
	}
	c.Unmap()
	if len(p.PIO.Ranges()) != 0 {
		t.Fatal("Unmap left the I/O BAR")
	}
}

func TestCapabilities(t *testing.T) {
	c := NewConfigSpace(nil, "t", Header{VendorID: 1})
	if c.FindCapability(CapPCIe) != 0 {
		t.Fatal("capability found in empty list")
	}
	pcie, err := c.AddPCIeCapability(PCIeRCiEP, DevCapFLR)
	must(t, err)
	vnd, err := c.AddCapability(CapVndr, []byte{5, 0xaa, 0xbb}, []byte{0, 0xff, 0})
	must(t, err)
	pasid, err := c.AddPASIDCapability(20, PASIDPriv)
	must(t, err)
	ext2, err := c.AddExtCapability(0x0b, 1, []byte{1, 2, 3, 4}, nil)
	must(t, err)
	if c.U16(RegStatus)&StatusCapList == 0 || c.U8(RegCapPtr) != byte(pcie) || pcie != 0x40 {
		t.Fatalf("cap list head: status %#x ptr %#x pcie %#x", c.U16(RegStatus), c.U8(RegCapPtr), pcie)
	}
	if c.U8(pcie+1) != byte(vnd) || c.U8(vnd+1) != 0 || vnd != 0x40+0x3c {
		t.Fatalf("chain: pcie next %#x vnd at %#x next %#x", c.U8(pcie+1), vnd, c.U8(vnd+1))
	}
	if got := c.U16(pcie + PCIeCapReg); got != 0x92 {
		t.Fatalf("PCIe cap reg = %#x (want version 2, RCiEP)", got)
	}
	if c.U32(pcie+PCIeDevCap)&(DevCapFLR|DevCapRBER) != DevCapFLR|DevCapRBER {
		t.Fatal("devcap bits")
	}
	w16(c, uint32(pcie+PCIeDevCap), 0) // RO
	if c.U32(pcie+PCIeDevCap) == 0 {
		t.Fatal("devcap writable")
	}
	w16(c, uint32(pcie+PCIeDevCtl), 0x2810)
	if c.U16(pcie+PCIeDevCtl) != 0x2810 {
		t.Fatal("devctl not writable")
	}
	c.ConfigWrite(uint32(vnd+3), []byte{0x11, 0x22})
	if c.U8(vnd+3) != 0x11 || c.U8(vnd+4) != 0xbb {
		t.Fatal("vendor cap mask not applied")
	}
	if pasid != 0x100 || c.FindExtCapability(ExtPASID) != 0x100 || c.FindExtCapability(0x0b) != ext2 {
		t.Fatalf("ext caps at %#x, %#x", pasid, ext2)
	}
	if h := c.U32(0x100); h != uint32(ExtPASID)|1<<16|uint32(ext2)<<20 {
		t.Fatalf("PASID header = %#x", h)
	}
	if got := c.U16(pasid + PASIDCap); got != 20<<8|PASIDPriv {
		t.Fatalf("PASID cap = %#x", got)
	}
	w16(c, uint32(pasid+PASIDCtl), 0xffff)
	if got := c.U16(pasid + PASIDCtl); got != PASIDEnable|PASIDPriv {
		t.Fatalf("PASID ctl = %#x", got)
	}
	if c.FindCapability(CapVndr) != vnd || c.FindCapability(CapMSIX) != 0 {
		t.Fatal("FindCapability")
	}
	// Filling the standard area fails cleanly.
	for {
		if _, err := c.AddCapability(CapVndr, make([]byte, 30), nil); err != nil {
			break
		}
	}
	if _, err := c.AddCapability(CapVndr, []byte{1}, []byte{1, 2}); err == nil {
		t.Fatal("mask length mismatch accepted")
	}
}

func TestWriteHook(t *testing.T) {
	c := NewConfigSpace(nil, "t", Header{VendorID: 1})
	off, err := c.AddCapability(CapVndr, []byte{4, 0, 0}, []byte{0, 0xff, 0xff})
	must(t, err)
	var calls int
	c.OnWrite(off+3, 2, func(o uint16, d []byte) { calls++ })
	w32(c, uint32(off), 0x12345678)
	c.ConfigWrite(RegCommand, []byte{0})
	if calls != 1 {
		t.Fatalf("hook called %d times", calls)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadHook(t *testing.T) {
	c := NewConfigSpace(nil, "t", Header{VendorID: 1})
	off, err := c.AddCapability(CapVndr, []byte{8, 0, 0, 0, 0, 0}, nil)
	must(t, err)
	n := uint32(0)
	c.OnRead(off+4, 4, func(uint16, []byte) { n++; c.SetU32(off+4, n) })
	if got := r32(c, uint32(off+4)); got != 1 {
		t.Fatalf("first read %d", got)
	}
	if got := r32(c, uint32(off+4)); got != 2 {
		t.Fatalf("second read %d", got)
	}
	r32(c, 0) // elsewhere: no hook
	if n != 2 {
		t.Fatalf("hook ran %d times", n)
	}
}
