package dsabackend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"godvm/addr"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"godvm/devices/bus"
	"godvm/devices/dsa"
	"godvm/devices/pci"
	"godvm/devices/platform/fake"
	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/passthrough"
	"godvm/vfio/vfiouser"
)

// isolated runs the calling test again in a child process and reports its
// result, so that a crash the test provokes (SIGBUS) fails this test
// instead of killing the package's run. It returns true in the child, which
// then runs the test's body.
func isolated(t *testing.T) bool {
	t.Helper()
	if os.Getenv("GODVM_ISOLATED_TEST") == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "GODVM_ISOLATED_TEST="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a child process: %v\n%s", t.Name(), err, out)
	}
	return false
}

// memfdRegion is a region of size bytes at gpa whose fd is a memfd of
// fileSize bytes (the client claims more than its file holds when
// fileSize < size). The host mapping is anonymous: the test never touches
// the client's view of the file.
func memfdRegion(t *testing.T, gpa, size, fileSize uint64) (*guestmem.Region, int) {
	fd, err := unix.MemfdCreate("client-ram", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(fileSize)); err != nil {
		t.Fatal(err)
	}
	host, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(host) })
	r := guestmem.NewRegion(gpa, host, fd, 0)
	return &r, fd
}

// Defect 1, as the issue reproduces it: DMA_MAP a 4 KiB memfd with size
// 4 MiB, enable a dedicated WQ, submit a memmove into the unbacked part.
// The server used to die of SIGBUS in the DSA engine; now the map is
// refused and the memmove completes with a page fault.
func TestDMAMapPastEndOfFile(t *testing.T) {
	if !isolated(t) {
		return
	}
	r := newRig(t, false)
	const gpa = 1 << 32
	reg, _ := memfdRegion(t, gpa, 4<<20, 4096)
	var re *vfiouser.RemoteError
	if err := r.c.DMAMap(reg); !errors.As(err, &re) || re.Errno != uint32(unix.EINVAL) {
		t.Errorf("DMA_MAP of 4 MiB over a 4 KiB memfd: %v, want EINVAL", err)
	}
	r.enableDWQ()
	r.mem.WriteAt(bytes.Repeat([]byte{7}, 4096), 0x10000)
	d := memmove(0x10000, gpa+2<<20, 0x3000, 4096)
	if err := r.c.WriteRegion(2, dsa.PortalPage, d[:]); err != nil {
		t.Fatal(err)
	}
	if st := r.waitStatus(0x3000); st != dsa.StatusPageFault|dsa.StatusFaultWrite {
		t.Fatalf("memmove into unmapped memory: status %#x", st)
	}
	if v := r.r32(0, dsa.RegVersion); v != 0x100 {
		t.Fatalf("server after the memmove: VERSION %#x", v)
	}
}

// Defect 1, second half: the client shrinks its memfd after a good
// DMA_MAP. The server cannot prevent that (see vfiouser checkDMAFile); the
// DSA engine turns the SIGBUS into a page-fault completion.
func TestDMAFileShrunkAfterMap(t *testing.T) {
	if !isolated(t) {
		return
	}
	r := newRig(t, false)
	const gpa = 1 << 32
	reg, fd := memfdRegion(t, gpa, 4<<20, 4<<20)
	if err := r.c.DMAMap(reg); err != nil {
		t.Fatal(err)
	}
	r.enableDWQ()
	if err := unix.Ftruncate(fd, 4096); err != nil {
		t.Fatal(err)
	}
	d := memmove(0x10000, gpa+2<<20, 0x3000, 4096)
	if err := r.c.WriteRegion(2, dsa.PortalPage, d[:]); err != nil {
		t.Fatal(err)
	}
	if st := r.waitStatus(0x3000); st != dsa.StatusPageFault|dsa.StatusFaultWrite {
		t.Fatalf("memmove into the truncated part: status %#x", st)
	}
	if fa := binary.LittleEndian.Uint64(must(r.mem.Slice(0x3008, 8))); fa != gpa+2<<20 {
		t.Fatalf("fault address %#x, want %#x", fa, gpa+2<<20)
	}
	// The part still backed works.
	r.mem.WriteU8(0x3000, 0)
	d = memmove(0x10000, gpa+64, 0x3000, 64)
	r.c.WriteRegion(2, dsa.PortalPage, d[:])
	if st := r.waitStatus(0x3000); st != dsa.StatusSuccess {
		t.Fatalf("memmove into the backed part: status %#x", st)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// ENQCMD(S) through the vfio-user server: the passthrough device's trapped
// portal write used to become a REGION_WRITE, i.e. a posted write, which a
// shared WQ ignores, while the guest was told "accepted". Now DMWr goes
// through the DMWr region with the device's answer.
func TestENQCMDThroughVfioUser(t *testing.T) {
	cfg := dsa.Config{WQs: 2, WQSize: 32, Groups: 1, Engines: 1, Version: 0x100}
	be, err := New(cfg, false, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	a, s, _ := vfiouser.Socketpair()
	srvDone := make(chan error, 1)
	go func() { srvDone <- vfiouser.NewServer(be, quiet).ServeConn(s) }()
	c, err := vfiouser.NewClient(a, "dsa.sock", vfiouser.WithLogger(quiet), vfiouser.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	_, p := fake.New(mem)
	root, err := pci.NewRoot(p, pci.RootConfig{ECAM: addr.Range{Base: 0xE000_0000, Size: 1 << 20},
		Mem32: addr.Range{Base: 0xC000_0000, Size: 0x2000_0000}, Mem64: addr.Range{Base: 0x10_0000_0000, Size: 0x10_0000_0000}})
	if err != nil {
		t.Fatal(err)
	}
	pt, err := passthrough.New(p, c, "dsa")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { pt.Close(); <-srvDone }()
	slot, err := root.Add("dsa", pt)
	if err != nil {
		t.Fatal(err)
	}
	cfg32 := func(off uint32) uint32 {
		var b [4]byte
		root.ConfigRead(0, uint32(slot), 0, off, b[:])
		return binary.LittleEndian.Uint32(b[:])
	}
	root.ConfigWrite(0, uint32(slot), 0, pci.RegCommand, []byte{pci.CmdMemory | pci.CmdBusMaster, 0})
	bar := func(i uint32) uint64 {
		return uint64(cfg32(pci.RegBAR0+4*i+4))<<32 | uint64(cfg32(pci.RegBAR0+4*i)&^0xf)
	}
	bar0, bar2 := bar(0), bar(2)
	rd := func(off uint64) uint32 {
		var b [4]byte
		p.MMIO.Read(bar0+off, b[:])
		return binary.LittleEndian.Uint32(b[:])
	}
	wr := func(off uint64, v uint64, n int) {
		p.MMIO.Write(bar0+off, binary.LittleEndian.AppendUint64(nil, v)[:n])
	}
	cmd := func(c uint32, operand uint32) {
		wr(dsa.RegCmd, uint64(c<<20|operand), 4)
		deadline := time.Now().Add(5 * time.Second)
		for rd(dsa.RegCmdSts)&dsa.CmdStsActive != 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if st := rd(dsa.RegCmdSts); st != 0 {
			t.Fatalf("command %d: CMDSTS %#x", c, st)
		}
	}
	// This model's PCI function has no PASID capability; a shared WQ needs
	// PASID enabled, so turn it on behind the function's back.
	be.Device().SetPASIDEnabled(true)
	// WQ 0 shared (threshold 8, PASID enable), WQ 1 dedicated, both in group 0.
	wqcfg := func(wq int, dws [4]uint32) {
		for i, v := range dws {
			off := uint64(dsa.WQCFGOffset + 32*wq + 4*i)
			wr(off, uint64(v|rd(off)), 4)
		}
	}
	wqcfg(0, [4]uint32{16, 8, 10<<4 | 1<<28, 21 | 5<<5})
	wqcfg(1, [4]uint32{16, 0, 1 | 10<<4 | 1<<29, 21 | 5<<5})
	wr(dsa.GRPCFGOffset, 3, 8)
	wr(dsa.GRPCFGOffset+32, 1, 8)
	wr(dsa.GRPCFGOffset+40, 1|1<<3|64<<20, 8)
	cmd(dsa.CmdEnableDevice, 0)
	cmd(dsa.CmdEnableWQ, 0)
	cmd(dsa.CmdEnableWQ, 1)

	noop := func(cr uint64) *[64]byte {
		var d [64]byte
		binary.LittleEndian.PutUint32(d[4:], dsa.FlagCRAV|dsa.FlagRCR|uint32(dsa.OpNOOP)<<24)
		binary.LittleEndian.PutUint64(d[8:], cr)
		return &d
	}
	wait := func(cr uint64) byte {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if v, _ := mem.ReadU8(cr); v != 0 {
				return v
			}
			time.Sleep(100 * time.Microsecond)
		}
		return 0
	}
	swq := bar2 + dsa.PortalPage                    // WQ 0, limited MSI-X portal
	dwq := bar2 + dsa.PortalStride + dsa.PortalPage // WQ 1
	for _, k := range []bus.WideKind{bus.ENQCMDS, bus.ENQCMD} {
		cr := uint64(0x3000 + 0x40*uint64(k))
		found, accepted := p.MMIO.Write64B(swq, noop(cr), k)
		if !found || !accepted {
			t.Fatalf("%v to the shared WQ: found=%v accepted=%v", k, found, accepted)
		}
		if st := wait(cr); st != dsa.StatusSuccess {
			t.Fatalf("%v to the shared WQ reported accepted, completion status %#x", k, st)
		}
	}
	// A DMWr to a dedicated WQ is answered Retry (and not executed).
	if _, accepted := p.MMIO.Write64B(dwq, noop(0x3100), bus.ENQCMDS); accepted {
		t.Fatal("ENQCMDS to a dedicated WQ was accepted")
	}
	// MOVDIR64B keeps its posted-write path: fine on the dedicated WQ.
	p.MMIO.Write64B(dwq, noop(0x3140), bus.MOVDIR64B)
	if st := wait(0x3140); st != dsa.StatusSuccess {
		t.Fatalf("MOVDIR64B to the dedicated WQ: status %#x", st)
	}
	if st, _ := mem.ReadU8(0x3100); st != 0 {
		t.Fatalf("the refused ENQCMDS ran: status %#x", st)
	}
	// The DMWr region is not readable.
	ri, err := c.RegionInfo(vfio.PCINumRegions)
	if err != nil || !ri.HasType || ri.Type != vfio.DMWrRegionType || ri.Subtype != vfio.DMWrSubtypeBase|2 || ri.Readable() || ri.Size != 2*cfg.PortalBARSize() {
		t.Fatalf("DMWr region %+v %v", ri, err)
	}
}
