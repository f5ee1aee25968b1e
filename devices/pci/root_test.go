package pci

import (
	"encoding/binary"
	"testing"

	"godvm/addr"
	"godvm/devices/bus"
)

// The PC's configuration mechanism #1 ports, as the VMM passes them in.
const (
	cfgAddrPort = 0xcf8
	cfgDataPort = cfgAddrPort + ConfigDataOff
	resetPort   = cfgAddrPort + ResetOff
)

func testRootConfig() RootConfig {
	return RootConfig{
		ECAM:       addr.Range{Base: 0xe000_0000, Size: 0x1000_0000},
		Mem32:      addr.Range{Base: 0xc000_0000, Size: 0x2000_0000},
		Mem64:      addr.Range{Base: 0x10_0000_0000, Size: 0x10_0000_0000},
		IO:         addr.Range{Base: 0xc000, Size: 0x4000},
		ConfigPort: cfgAddrPort,
	}
}

func cf8Read(t *testing.T, r *Root, pio interface {
	Read(uint64, []byte) bool
	Write(uint64, []byte) bool
}, dev, reg uint32, n int) []byte {
	t.Helper()
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], 1<<31|dev<<11|reg&^3)
	pio.Write(cfgAddrPort, a[:])
	b := make([]byte, n)
	if !pio.Read(uint64(cfgDataPort)+uint64(reg&3), b) {
		t.Fatal("0xCFC not decoded")
	}
	return b
}

func TestRootEnumeration(t *testing.T) {
	p := newPlat()
	r, err := NewRoot(p, testRootConfig())
	must(t, err)
	// Host bridge via 0xCF8/0xCFC.
	id := binary.LittleEndian.Uint32(cf8Read(t, r, p.PIO, 0, 0, 4))
	if id != HostBridgeDevice<<16|HostBridgeVendor {
		t.Fatalf("00:00.0 id = %#x", id)
	}
	if cls := binary.LittleEndian.Uint32(cf8Read(t, r, p.PIO, 0, 8, 4)) >> 8; cls != 0x060000 {
		t.Fatalf("host bridge class %#x", cls)
	}
	// Empty slot reads all-ones.
	if v := binary.LittleEndian.Uint32(cf8Read(t, r, p.PIO, 5, 0, 4)); v != 0xffffffff {
		t.Fatalf("empty slot = %#x", v)
	}
	// Address latch reads back; enable bit off -> data reads all-ones.
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], 0x7f00_0803)
	p.PIO.Write(cfgAddrPort, a[:])
	p.PIO.Read(cfgAddrPort, a[:])
	if binary.LittleEndian.Uint32(a[:]) != 0x800 {
		t.Fatalf("latch = %#x", binary.LittleEndian.Uint32(a[:]))
	}
	var d [4]byte
	p.PIO.Read(cfgDataPort, d[:])
	if d != [4]byte{0xff, 0xff, 0xff, 0xff} {
		t.Fatal("data with enable bit clear")
	}

	// A device with three kinds of BAR.
	cs := NewConfigSpace(p, "dev", Header{VendorID: 0x8086, DeviceID: 0x0b25, Class: 0x088000})
	must(t, cs.SetBAR(0, BAR{Type: BARMem64, Size: 0x10000, Dev: &regDev{fillB: 0x5a}}))
	must(t, cs.SetBAR(2, BAR{Type: BARMem64, Size: 0x20000, Prefetchable: true, Dev: &regDev{}}))
	must(t, cs.SetBAR(4, BAR{Type: BARMem32, Size: 0x100, Dev: &regDev{}}))
	must(t, cs.SetBAR(5, BAR{Type: BARIO, Size: 0x40, Dev: &regDev{}}))
	_, err = cs.AddPCIeCapability(PCIeRCiEP, 0)
	must(t, err)
	_, err = cs.AddPASIDCapability(20, 0)
	must(t, err)
	slot, err := r.Add("dsa", cs)
	must(t, err)
	if slot != 1 {
		t.Fatalf("slot %d", slot)
	}
	// BARs: naturally aligned, inside their windows, decode enabled.
	want := map[int]uint64{0: 0x10_0002_0000, 2: 0x10_0000_0000, 4: 0xc000_0000, 5: 0xc000}
	for i, w := range want {
		a, mapped := cs.BARAddress(i)
		if a != w || !mapped {
			t.Errorf("BAR%d at %#x (mapped %v), want %#x", i, a, mapped, w)
		}
	}
	if cs.Command()&(CmdMemory|CmdIO) != CmdMemory|CmdIO {
		t.Fatal("decode not enabled")
	}
	var b [4]byte
	if !p.MMIO.Read(0x10_0002_0004, b[:]) || b[0] != 0x5a {
		t.Fatal("BAR0 not decoding")
	}

	// ECAM reaches the same device, including extended space (PASID at 0x100).
	base := uint64(0xe000_0000) + 1<<15
	if !p.MMIO.Read(base, b[:]) || binary.LittleEndian.Uint32(b[:]) != 0x0b258086 {
		t.Fatalf("ECAM id = %x", b)
	}
	p.MMIO.Read(base+0x100, b[:])
	if binary.LittleEndian.Uint16(b[:]) != ExtPASID {
		t.Fatalf("ECAM 0x100 = %x", b)
	}
	// Relocate BAR4 through ECAM; the bus follows.
	binary.LittleEndian.PutUint32(b[:], 0xc010_0000)
	p.MMIO.Write(base+RegBAR0+16, b[:])
	if a, _ := cs.BARAddress(4); a != 0xc010_0000 {
		t.Fatalf("BAR4 after ECAM write: %#x", a)
	}
	if _, _, ok := p.MMIO.Find(0xc010_0000, 4); !ok {
		t.Fatal("relocated BAR4 not on the bus")
	}
	// Other buses and functions: all-ones.
	p.MMIO.Read(0xe000_0000+1<<20, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 0xffffffff {
		t.Fatal("bus 1 not empty")
	}
	p.MMIO.Read(base+1<<12, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 0xffffffff {
		t.Fatal("function 1 not empty")
	}
	// Legacy INTx not wired: pin 0, line 0xff.
	if v := cf8Read(t, r, p.PIO, 1, RegInterruptLine, 2); v[0] != 0xff || v[1] != 0 {
		t.Fatalf("line/pin = %x", v)
	}
	if r.Device(1) != Device(cs) || r.Slots()[1] != "dsa" {
		t.Fatal("Device/Slots")
	}
	// Slot rules.
	if err := r.AddAt(1, "again", NewConfigSpace(p, "x", Header{})); err == nil {
		t.Fatal("slot taken accepted")
	}
	if err := r.AddAt(32, "x", NewConfigSpace(p, "x", Header{})); err == nil {
		t.Fatal("slot 32 accepted")
	}
}

func TestRootWindowsExhausted(t *testing.T) {
	cfg := testRootConfig()
	cfg.Mem32 = addr.Range{Base: 0xc000_0000, Size: 0x2000}
	cfg.IO = addr.Range{}
	r, err := NewRoot(newPlat(), cfg)
	must(t, err)
	big := NewConfigSpace(nil, "big", Header{})
	must(t, big.SetBAR(0, BAR{Type: BARMem32, Size: 0x4000}))
	if _, err := r.Add("big", big); err == nil {
		t.Fatal("BAR larger than window accepted")
	}
	io := NewConfigSpace(nil, "io", Header{})
	must(t, io.SetBAR(0, BAR{Type: BARIO, Size: 0x10}))
	if _, err := r.Add("io", io); err == nil {
		t.Fatal("I/O BAR without I/O window accepted")
	}
	// A failed Add leaves the allocator untouched.
	ok := NewConfigSpace(nil, "ok", Header{})
	must(t, ok.SetBAR(0, BAR{Type: BARMem32, Size: 0x2000}))
	if _, err := r.Add("ok", ok); err != nil {
		t.Fatal(err)
	}
	if a, _ := ok.BARAddress(0); a != 0xc000_0000 {
		t.Fatalf("BAR at %#x", a)
	}
	// Bad configurations.
	bad := testRootConfig()
	bad.ECAM.Size = 12345
	if _, err := NewRoot(newPlat(), bad); err == nil {
		t.Fatal("bad ECAM accepted")
	}
	bad = testRootConfig()
	bad.Mem32 = addr.Range{Base: 0xffff_0000, Size: 0x10_0000}
	if _, err := NewRoot(newPlat(), bad); err == nil {
		t.Fatal("32-bit window above 4 GiB accepted")
	}
}

func TestRootResetPort(t *testing.T) {
	cfg := testRootConfig()
	var resets int
	cfg.Reset = func() { resets++ }
	p := newPlat()
	_, err := NewRoot(p, cfg)
	must(t, err)
	p.PIO.Write(resetPort, []byte{0x2})
	p.PIO.Write(resetPort, []byte{0x6})
	if resets != 1 {
		t.Fatalf("resets = %d", resets)
	}
	// Odd-sized accesses to the address latch are harmless.
	p.PIO.Write(cfgAddrPort, []byte{1, 2})
	var b [2]byte
	p.PIO.Read(cfgAddrPort+2, b[:])
}

// The root decodes its configuration ports where the config puts them, and
// none with ConfigPort 0.
func TestRootConfigPortFromConfig(t *testing.T) {
	cfg := testRootConfig()
	cfg.ConfigPort = 0x1cf8
	p := newPlat()
	_, err := NewRoot(p, cfg)
	must(t, err)
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], 1<<31)
	if !p.PIO.Write(0x1cf8, a[:]) || p.PIO.Write(cfgAddrPort, a[:]) {
		t.Fatal("address latch not at the configured port (or still at 0xcf8)")
	}
	var d [4]byte
	p.PIO.Read(0x1cf8+ConfigDataOff, d[:])
	if binary.LittleEndian.Uint32(d[:]) != HostBridgeDevice<<16|HostBridgeVendor {
		t.Fatalf("host bridge id through port %#x: %x", 0x1cf8+ConfigDataOff, d)
	}

	cfg.ConfigPort = 0
	p = newPlat()
	_, err = NewRoot(p, cfg)
	must(t, err)
	if p.PIO.Write(cfgAddrPort, a[:]) || p.PIO.Write(0x1cf8, a[:]) {
		t.Fatal("ConfigPort 0 registered configuration ports")
	}
}

func TestMux(t *testing.T) {
	var m Mux
	d := &regDev{fillB: 7}
	must(t, m.Add(0x1000, 0x100, "regs", d))
	var b [4]byte
	m.Read(0x1004, b[:])
	if b[0] != 7 {
		t.Fatal("mux read")
	}
	b = [4]byte{9, 9, 9, 9}
	m.Read(0, b[:])
	if b != [4]byte{} {
		t.Fatal("hole not zero")
	}
	m.Write(0x10f0, []byte{1})
	if d.lastOff != 0xf0 {
		t.Fatal("mux write offset")
	}
	var wide [64]byte
	if m.Write64B(0, &wide, 0) {
		t.Fatal("wide write to hole accepted")
	}
	// Only a sub-device that implements bus.Wide64 takes 64-byte writes
	// itself; regDev would get them as a plain Write.
	must(t, m.Add(0x2000, 0x1000, "portal", wideDev{}))
	if m.Wide64At(0x1000) || m.Wide64At(0) || !m.Wide64At(0x2fc0) || m.Wide64At(0x2fc1) {
		t.Fatal("Wide64At")
	}
	var b2 bus.Bus
	must(t, b2.Register(0x10000, 0x4000, "bar", &m))
	if !b2.Wide64At(0x12000) || b2.Wide64At(0x11000) {
		t.Fatal("bus.Wide64At does not look through the mux")
	}
}

type wideDev struct{}

func (wideDev) Read(uint64, []byte)                                {}
func (wideDev) Write(uint64, []byte)                               {}
func (wideDev) Write64B(uint64, *[64]byte, bus.WideKind) (ok bool) { return true }
