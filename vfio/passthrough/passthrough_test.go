package passthrough

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"testing"
	"time"

	"godvm/addr"
	"godvm/devices/dsa"
	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/devices/platform/fake"
	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/dsabackend"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type rig struct {
	t    *testing.T
	f    *fake.Platform
	p    *platform.Platform
	root *pci.Root
	mem  *guestmem.Memory
	slot uint32
	d    *Device
	srv  chan error
	c    *vfiouser.Client
}

// newRig serves a software DSA over vfio-user and plugs the client into a
// fake machine through the passthrough device.
func newRig(t *testing.T, mapped bool) *rig {
	cfg := dsa.Config{WQs: 2, WQSize: 32, Groups: 1, Engines: 1, Version: 0x100}
	be, err := dsabackend.New(cfg, mapped, quiet)
	if err != nil {
		t.Fatal(err)
	}
	a, s, _ := vfiouser.Socketpair()
	srv := make(chan error, 1)
	go func() { srv <- vfiouser.NewServer(be, quiet).ServeConn(s) }()
	c, err := vfiouser.NewClient(a, "dsa.sock", vfiouser.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	f, p := fake.New(mem)
	root, err := pci.NewRoot(p, pci.RootConfig{ECAM: addr.Range{Base: 0xE000_0000, Size: 1 << 20},
		Mem32: addr.Range{Base: 0xC000_0000, Size: 0x2000_0000}, Mem64: addr.Range{Base: 0x10_0000_0000, Size: 0x10_0000_0000}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(p, c, "dsa-vfio-user")
	if err != nil {
		t.Fatal(err)
	}
	n, err := root.Add("dsa-vfio-user", d)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, f: f, p: p, root: root, mem: mem, slot: uint32(n), d: d, srv: srv, c: c}
	t.Cleanup(func() {
		d.Close()
		<-srv
		be.Close()
		mem.Close()
	})
	return r
}

func (r *rig) cfg32(off uint32) uint32 {
	var b [4]byte
	r.root.ConfigRead(0, r.slot, 0, off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (r *rig) cfgW(off uint32, v uint32, n int) {
	r.root.ConfigWrite(0, r.slot, 0, off, binary.LittleEndian.AppendUint32(nil, v)[:n])
}

func (r *rig) bar(i int) uint64 {
	lo := uint64(r.cfg32(pci.RegBAR0 + 4*uint32(i)))
	hi := uint64(r.cfg32(pci.RegBAR0 + 4*uint32(i) + 4))
	return hi<<32 | lo&^0xf
}

func (r *rig) mmio32(addr uint64) uint32 {
	var b [4]byte
	if !r.p.MMIO.Read(addr, b[:]) {
		r.t.Fatalf("nothing at %#x", addr)
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (r *rig) mmioW(addr uint64, v uint64, n int) {
	if !r.p.MMIO.Write(addr, binary.LittleEndian.AppendUint64(nil, v)[:n]) {
		r.t.Fatalf("nothing at %#x", addr)
	}
}

func TestPassthroughDSA(t *testing.T) {
	r := newRig(t, true)
	if id := r.cfg32(0); id != dsa.DeviceDSA<<16|dsa.VendorIntel {
		t.Fatalf("ID %#x", id)
	}
	// BARs are virtual: placed in godvm's windows, sized like the regions.
	bar0, bar2 := r.bar(0), r.bar(2)
	if bar0 < 0x10_0000_0000 || bar2 < 0x10_0000_0000 || r.cfg32(pci.RegBAR0)&6 != 4 {
		t.Fatalf("BAR0 %#x BAR2 %#x (reg %#x)", bar0, bar2, r.cfg32(pci.RegBAR0))
	}
	r.cfgW(pci.RegBAR0+8, 0xffffffff, 4) // sizing BAR2 (low half)
	if got := r.cfg32(pci.RegBAR0 + 8); got&^0xf != 0xffff8000 {
		t.Fatalf("BAR2 sizing read %#x", got)
	}
	r.cfgW(pci.RegBAR0+8, uint32(bar2), 4)
	// The portal BAR is a memory slot where the guest put it.
	if r.d.MappedSlots() != 1 {
		t.Fatalf("%d memory slots", r.d.MappedSlots())
	}
	found := false
	for _, gpa := range r.f.Slots {
		found = found || gpa == bar2
	}
	if !found {
		t.Fatalf("slots %v, want one at BAR2 %#x", r.f.Slots, bar2)
	}
	// Registers through the trapped BAR0.
	if v := r.mmio32(bar0 + dsa.RegVersion); v != 0x100 {
		t.Fatalf("VERSION %#x", v)
	}
	// MSI-X: the guest programs the emulated table and enables MSI-X; the
	// vectors' eventfds then go to the server.
	cap := uint32(r.d.msixDev)
	if cap == 0 || r.cfg32(cap)&0xff != pci.CapMSIX {
		t.Fatalf("MSI-X capability at %#x", cap)
	}
	r.mmioW(bar0+dsa.MSIXTableOffset, 0xfee00000, 4)
	r.mmioW(bar0+dsa.MSIXTableOffset+8, 0x41, 4)
	r.mmioW(bar0+dsa.MSIXTableOffset+12, 0, 4) // unmask vector 0
	r.cfgW(cap+2, pci.MSIXEnable, 2)
	if msg, masked := r.f.Vectors[0].State(); masked || msg.Addr != 0xfee00000 || msg.Data != 0x41 {
		t.Fatalf("vector 0 route %+v masked=%v", msg, masked)
	}
	if r.mmio32(bar0+dsa.MSIXTableOffset+8) != 0x41 {
		t.Fatal("table read back")
	}
	// Bus master + a dedicated WQ, as idxd does it.
	r.cfgW(pci.RegCommand, pci.CmdMemory|pci.CmdBusMaster, 2)
	shadow := [8]uint32{16, 0, 1 | 10<<4 | 1<<29, 21 | 5<<5}
	for i, v := range shadow {
		off := bar0 + dsa.WQCFGOffset + uint64(4*i)
		r.mmioW(off, uint64(v|r.mmio32(off)), 4)
	}
	r.mmioW(bar0+dsa.GRPCFGOffset, 1, 8)
	r.mmioW(bar0+dsa.GRPCFGOffset+32, 1, 8)
	r.mmioW(bar0+dsa.GRPCFGOffset+40, 1|1<<3|64<<20, 8)
	for _, c := range []uint64{dsa.CmdEnableDevice, dsa.CmdEnableWQ} {
		r.mmioW(bar0+dsa.RegCmd, 1<<31|c<<20, 4)
		// The interrupt comes from the server straight into the vector's
		// eventfd (an irqfd in the VMM).
		if n, err := r.f.Vectors[0].EventFD().Wait(5000); n == 0 || err != nil {
			t.Fatalf("command %d: no interrupt on the guest vector (%v)", c, err)
		}
		if st := r.mmio32(bar0 + dsa.RegCmdSts); st != 0 {
			t.Fatalf("command %d: CMDSTS %#x", c, st)
		}
	}
	// A descriptor through a trapped portal write (what an exit delivers).
	r.mem.WriteAt(bytes.Repeat([]byte{0xa5}, 4096), 0x10000)
	var desc [64]byte
	binary.LittleEndian.PutUint32(desc[4:], dsa.FlagCRAV|dsa.FlagRCR|uint32(dsa.OpMemMove)<<24)
	binary.LittleEndian.PutUint64(desc[8:], 0x3000)
	binary.LittleEndian.PutUint64(desc[16:], 0x10000)
	binary.LittleEndian.PutUint64(desc[24:], 0x20000)
	binary.LittleEndian.PutUint32(desc[32:], 4096)
	if found, ok := r.p.MMIO.Write64B(bar2+dsa.PortalPage, &desc, 0); !found || !ok {
		t.Fatalf("portal write found=%v accepted=%v", found, ok)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st, _ := r.mem.ReadU8(0x3000); st == 0 && time.Now().Before(deadline); st, _ = r.mem.ReadU8(0x3000) {
		time.Sleep(100 * time.Microsecond)
	}
	if st, _ := r.mem.ReadU8(0x3000); st != dsa.StatusSuccess {
		t.Fatalf("completion status %#x", st)
	}
	got := make([]byte, 4096)
	r.mem.ReadAt(got, 0x20000)
	if !bytes.Equal(got, bytes.Repeat([]byte{0xa5}, 4096)) {
		t.Fatal("DMA through the server's mapping of guest RAM did not copy")
	}
	// Moving the BAR moves the slot; disabling decode removes it.
	r.cfgW(pci.RegCommand, pci.CmdBusMaster, 2)
	if r.d.MappedSlots() != 0 || len(r.f.Slots) != 0 {
		t.Fatalf("slots after decode off: %v", r.f.Slots)
	}
	// Disabling MSI-X takes the eventfds back.
	r.cfgW(cap+2, 0, 2)
	if r.d.irqOn {
		t.Fatal("MSI-X still on at the device")
	}
}

func TestPassthroughServerDeath(t *testing.T) {
	r := newRig(t, false)
	bar0 := r.bar(0)
	if v := r.mmio32(bar0 + dsa.RegVersion); v != 0x100 {
		t.Fatalf("VERSION %#x", v)
	}
	r.c.Close() // as if the peer went away: every access now fails
	if v := r.mmio32(bar0 + dsa.RegVersion); v != 0xffffffff {
		t.Fatalf("read after the device went away: %#x", v)
	}
	if id := r.cfg32(0); id != 0xffffffff {
		t.Fatalf("config read after the device went away: %#x", id)
	}
	r.mmioW(bar0+dsa.RegCmd, 1, 4) // dropped, no panic
}

var _ vfio.Device = (*vfiouser.Client)(nil)

// fakeDev is a vfio.Device whose BAR2 is wholly mappable but holds the MSI-X
// table and PBA in its second page (what vfio-pci reports with MSIX_MAPPABLE).
type fakeDev struct {
	cfg    [256]byte
	mapped [][2]uint64
	irqs   [][]int
}

func newFakeDev() *fakeDev {
	f := &fakeDev{}
	le := binary.LittleEndian
	le.PutUint32(f.cfg[0:], 0x12348086)
	le.PutUint16(f.cfg[6:], 0x10) // capability list
	le.PutUint32(f.cfg[0x10:], 0) // BAR0: 32-bit memory
	le.PutUint32(f.cfg[0x18:], 0xc)
	f.cfg[0x34] = 0x40
	f.cfg[0x40], f.cfg[0x41] = pci.CapMSIX, 0x50
	f.cfg[0x50], f.cfg[0x51] = pci.CapMSI, 0x60 // hidden from the guest
	f.cfg[0x60], f.cfg[0x61] = 0x09, 0          // vendor-specific, stays
	le.PutUint16(f.cfg[0x42:], 3)               // 4 vectors
	le.PutUint32(f.cfg[0x44:], 0x1002)          // table: BAR2 + 0x1000
	le.PutUint32(f.cfg[0x48:], 0x1802)          // PBA: BAR2 + 0x1800
	return f
}

func (f *fakeDev) Info() vfio.DeviceInfo {
	return vfio.DeviceInfo{Flags: vfio.DeviceFlagPCI, NumRegions: 9, NumIRQs: 5}
}

func (f *fakeDev) RegionInfo(i uint32) (vfio.RegionInfo, error) {
	switch i {
	case 0:
		return vfio.RegionInfo{Index: 0, Flags: 3, Size: 0x1000}, nil
	case 2:
		return vfio.RegionInfo{Index: 2, Flags: 7, Size: 0x4000, Areas: []vfio.Area{{Offset: 0, Size: 0x4000}}, MSIXMappable: true}, nil
	case 7:
		return vfio.RegionInfo{Index: 7, Flags: 3, Size: 256}, nil
	}
	return vfio.RegionInfo{Index: i}, nil
}

func (f *fakeDev) ReadRegion(i uint32, off uint64, p []byte) error {
	if i == 7 {
		copy(p, f.cfg[off:])
	}
	return nil
}
func (f *fakeDev) WriteRegion(i uint32, off uint64, p []byte) error { return nil }
func (f *fakeDev) MapRegion(i uint32, off, size uint64) ([]byte, error) {
	f.mapped = append(f.mapped, [2]uint64{off, size})
	return make([]byte, size), nil
}
func (f *fakeDev) UnmapRegion([]byte) error { return nil }
func (f *fakeDev) IRQInfo(i uint32) (vfio.IRQInfo, error) {
	if i == vfio.PCIMSIXIRQIndex {
		return vfio.IRQInfo{Index: i, Flags: vfio.IRQFlagEventFD, Count: 4}, nil
	}
	return vfio.IRQInfo{Index: i}, nil
}
func (f *fakeDev) SetIRQs(i, start uint32, fds []int) error {
	f.irqs = append(f.irqs, fds)
	return nil
}
func (f *fakeDev) Reset() error                      { return nil }
func (f *fakeDev) DMAMap(r *guestmem.Region) error   { return nil }
func (f *fakeDev) DMAUnmap(r *guestmem.Region) error { return nil }
func (f *fakeDev) Failed() error                     { return nil }
func (f *fakeDev) Close() error                      { return nil }

func TestMSIXPagesStayTrapped(t *testing.T) {
	mem, _ := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 1 << 20}})
	defer mem.Close()
	fp, p := fake.New(mem)
	root, _ := pci.NewRoot(p, pci.RootConfig{ECAM: addr.Range{Base: 0xE000_0000, Size: 1 << 20},
		Mem32: addr.Range{Base: 0xC000_0000, Size: 0x2000_0000}, Mem64: addr.Range{Base: 0x10_0000_0000, Size: 0x10_0000_0000}})
	fd := newFakeDev()
	d, err := New(p, fd, "vfio")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Add("vfio", d); err != nil {
		t.Fatal(err)
	}
	// Page 1 (table and PBA) is left out: two runs around it.
	if len(fd.mapped) != 2 || fd.mapped[0] != [2]uint64{0, 0x1000} || fd.mapped[1] != [2]uint64{0x2000, 0x2000} {
		t.Fatalf("mapped %#x", fd.mapped)
	}
	if len(fp.Slots) != 2 {
		t.Fatalf("slots %v", fp.Slots)
	}
	var bar2 uint64
	for _, gpa := range fp.Slots {
		if bar2 == 0 || gpa < bar2 {
			bar2 = gpa
		}
	}
	// The table traps to the emulated model.
	p.MMIO.Write(bar2+0x1000+8, []byte{0x55, 0, 0, 0})
	var b [4]byte
	p.MMIO.Read(bar2+0x1000+8, b[:])
	if b[0] != 0x55 {
		t.Fatalf("table data %x", b)
	}
	// The guest's capability walk: MSI-X, then vendor-specific; MSI skipped.
	var caps []byte
	for off := uint32(root.Device(1).(*Device).cfgByte(0x34)); off != 0; {
		caps = append(caps, root.Device(1).(*Device).cfgByte(off))
		off = uint32(root.Device(1).(*Device).cfgByte(off + 1))
	}
	if string(caps) != string([]byte{pci.CapMSIX, 0x09}) {
		t.Fatalf("capability IDs seen by the guest: % x", caps)
	}
	// Enabling MSI-X hands the 4 vectors' eventfds to the device.
	root.ConfigWrite(0, 1, 0, 0x42, []byte{0, 0x80})
	if len(fd.irqs) != 1 || len(fd.irqs[0]) != 4 || fd.irqs[0][0] != fp.Vectors[0].EventFD().Fd() {
		t.Fatalf("SetIRQs calls %v", fd.irqs)
	}
	root.ConfigWrite(0, 1, 0, 0x42, []byte{0, 0})
	if len(fd.irqs) != 2 || fd.irqs[1] != nil {
		t.Fatalf("disable: SetIRQs calls %v", fd.irqs)
	}
}

func (d *Device) cfgByte(off uint32) byte {
	var b [1]byte
	d.ConfigRead(off, b[:])
	return b[0]
}
