package emulate

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"testing"
	"time"

	"godvm/addr"
	"godvm/devices/bus"
	"godvm/devices/dsa"
	"godvm/devices/pci"
	"godvm/devices/platform/fake"
	"godvm/guestmem"
	"godvm/vfio/passthrough"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/dsabackend"
)

// A paravirtual MOVDIR64B reaches a DSA served over vfio-user whose portal
// page is mapped into the guest (a KVM memory slot, so a native store would
// not exit) the way an emulated MOVDIR64B does: the passthrough device keeps
// the whole BAR on the MMIO bus, and bus.Write64B forwards the 64 bytes to
// the server. The descriptor must run: its completion record and the copy
// appear in guest RAM.
func TestPVReachesVFIOUserMappedPortal(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	be, err := dsabackend.New(dsa.Config{WQs: 1, WQSize: 32, Groups: 1, Engines: 1, Version: 0x100}, true, quiet)
	if err != nil {
		t.Fatal(err)
	}
	a, s, err := vfiouser.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	srv := make(chan error, 1)
	go func() { srv <- vfiouser.NewServer(be, quiet).ServeConn(s) }()
	cl, err := vfiouser.NewClient(a, "dsa.sock", vfiouser.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	f, p := fake.New(mem)
	root, err := pci.NewRoot(p, pci.RootConfig{ECAM: addr.Range{Base: 0xe000_0000, Size: 1 << 20},
		Mem32: addr.Range{Base: 0xc000_0000, Size: 0x2000_0000}, Mem64: addr.Range{Base: 0x10_0000_0000, Size: 0x10_0000_0000}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := passthrough.New(p, cl, "dsa-vfio-user")
	if err != nil {
		t.Fatal(err)
	}
	slot, err := root.Add("dsa-vfio-user", d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Close()
		<-srv
		be.Close()
		mem.Close()
	})
	cfg32 := func(off uint32) uint32 {
		var b [4]byte
		root.ConfigRead(0, uint32(slot), 0, off, b[:])
		return binary.LittleEndian.Uint32(b[:])
	}
	bar := func(i uint32) uint64 {
		return uint64(cfg32(pci.RegBAR0+4*i+4))<<32 | uint64(cfg32(pci.RegBAR0+4*i)&^0xf)
	}
	w32 := func(addr uint64, v uint32) {
		if !p.MMIO.Write(addr, binary.LittleEndian.AppendUint32(nil, v)) {
			t.Fatalf("nothing at %#x", addr)
		}
	}
	root.ConfigWrite(0, uint32(slot), 0, pci.RegCommand, []byte{byte(pci.CmdMemory | pci.CmdBusMaster), 0})
	bar0, bar2 := bar(0), bar(2)
	mapped := false
	for _, gpa := range f.Slots {
		mapped = mapped || gpa == bar2
	}
	if !mapped {
		t.Fatalf("BAR2 %#x is not a memory slot (slots %v): this test is about a mapped portal", bar2, f.Slots)
	}
	// One dedicated WQ in group 0 with engine 0, as accel-config sets it up.
	w32(bar0+dsa.WQCFGOffset, 16)
	w32(bar0+dsa.WQCFGOffset+8, 1|10<<4|1<<29)
	w32(bar0+dsa.WQCFGOffset+12, 21|5<<5)
	w32(bar0+dsa.GRPCFGOffset, 1)
	w32(bar0+dsa.GRPCFGOffset+32, 1)
	for _, c := range []uint32{dsa.CmdEnableDevice, dsa.CmdEnableWQ} {
		w32(bar0+dsa.RegCmd, c<<20)
		var st [4]byte
		p.MMIO.Read(bar0+dsa.RegCmdSts, st[:])
		if v := binary.LittleEndian.Uint32(st[:]); v != 0 {
			t.Fatalf("command %d: CMDSTS %#x", c, v)
		}
	}
	// The descriptor (a 4 KiB memmove) in guest RAM, as the guest's idxd
	// builds it, then the guest side's inl with its guest-physical address.
	mem.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), 0x10000)
	var desc [64]byte
	binary.LittleEndian.PutUint32(desc[4:], dsa.FlagCRAV|dsa.FlagRCR|uint32(dsa.OpMemMove)<<24)
	binary.LittleEndian.PutUint64(desc[8:], 0x3000)
	binary.LittleEndian.PutUint64(desc[16:], 0x10000)
	binary.LittleEndian.PutUint64(desc[24:], 0x20000)
	binary.LittleEndian.PutUint32(desc[32:], 4096)
	mem.WriteAt(desc[:], 0x1fc0)
	e := New(mem, p.MMIO)
	e.Log = quiet
	data := make([]byte, 4)
	st, err := e.PV64B(pvCPU(PVKindMOVDIR64B, 0x1fc0, bar2), true, 4, data)
	if err != nil || st != PVStored || !bytes.Equal(data, []byte{0, 0, 0, 0}) {
		t.Fatalf("status %v data % x err %v", st, data, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for cs, _ := mem.ReadU8(0x3000); cs == 0 && time.Now().Before(deadline); cs, _ = mem.ReadU8(0x3000) {
		time.Sleep(100 * time.Microsecond)
	}
	if cs, _ := mem.ReadU8(0x3000); cs != dsa.StatusSuccess {
		t.Fatalf("completion status %#x: the descriptor did not reach the server's DSA", cs)
	}
	got := make([]byte, 4096)
	mem.ReadAt(got, 0x20000)
	if !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, 4096)) {
		t.Fatal("the memmove did not copy")
	}
	if e.Stats.PVStores(bus.MOVDIR64B) != 1 {
		t.Errorf("stats %v", e.Stats.Snapshot())
	}
}
