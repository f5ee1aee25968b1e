package passthrough

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/abi/linux"

	"godvm/addr"
	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/devices/platform/fake"
	"godvm/guestmem"
	"godvm/vfio"
	vfiokernel "godvm/vfio/kernel"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/testdev"
)

// The I/O window the tests give the root (vmm/layout's).
var ioWindow = addr.Range{Base: 0xc000, Size: 0x4000}

// ioRig is a fake machine with a root that has an I/O window and one
// passthrough device whose BAR0 is in I/O space.
type ioRig struct {
	t    *testing.T
	p    *platform.Platform
	root *pci.Root
	slot uint32
	d    *Device
}

func newIORig(t *testing.T, dev vfio.Device) *ioRig {
	t.Helper()
	mem, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	_, p := fake.New(mem)
	root, err := pci.NewRoot(p, pci.RootConfig{ECAM: addr.Range{Base: 0xE000_0000, Size: 1 << 20},
		Mem32: addr.Range{Base: 0xC000_0000, Size: 0x2000_0000}, IO: ioWindow})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(p, dev, "iobar")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	n, err := root.Add("iobar", d)
	if err != nil {
		t.Fatal(err)
	}
	return &ioRig{t: t, p: p, root: root, slot: uint32(n), d: d}
}

func (r *ioRig) cfg32(off uint32) uint32 {
	var b [4]byte
	r.root.ConfigRead(0, r.slot, 0, off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (r *ioRig) in(port uint64, n int) uint32 {
	r.t.Helper()
	b := make([]byte, 4)
	if !r.p.PIO.Read(port, b[:n]) {
		r.t.Fatalf("nothing at port %#x", port)
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *ioRig) out(port uint64, v uint32, n int) {
	r.t.Helper()
	if !r.p.PIO.Write(port, binary.LittleEndian.AppendUint32(nil, v)[:n]) {
		r.t.Fatalf("nothing at port %#x", port)
	}
}

// placed checks that BAR0 is an I/O BAR in the window with I/O decode on,
// as firmware leaves it, and returns its port.
func (r *ioRig) placed(size uint64) uint64 {
	r.t.Helper()
	reg := r.cfg32(pci.RegBAR0)
	port := uint64(reg &^ 3)
	if reg&1 == 0 || port < ioWindow.Base || port+size > ioWindow.End() || port%size != 0 {
		r.t.Fatalf("BAR0 register %#x: want an I/O BAR inside %#x-%#x, aligned", reg, ioWindow.Base, ioWindow.End()-1)
	}
	if r.cfg32(pci.RegCommand)&pci.CmdIO == 0 {
		r.t.Fatalf("command %#x: I/O decode off", r.cfg32(pci.RegCommand)&0xffff)
	}
	// Sizing reads back the size mask with the I/O flag.
	r.root.ConfigWrite(0, r.slot, 0, pci.RegBAR0, []byte{0xff, 0xff, 0xff, 0xff})
	if got, want := r.cfg32(pci.RegBAR0), ^uint32(size-1)|1; got != want {
		r.t.Fatalf("BAR0 sizing read %#x, want %#x", got, want)
	}
	r.root.ConfigWrite(0, r.slot, 0, pci.RegBAR0, binary.LittleEndian.AppendUint32(nil, uint32(port)))
	return port
}

// moveAndDisable moves BAR0 within the window, checks that the ports
// followed, then turns I/O decode off and checks that they are gone.
func (r *ioRig) moveAndDisable(port, size uint64, probe func(port uint64) bool) {
	r.t.Helper()
	moved := port + size
	if moved+size > ioWindow.End() {
		moved = port - size
	}
	r.root.ConfigWrite(0, r.slot, 0, pci.RegBAR0, binary.LittleEndian.AppendUint32(nil, uint32(moved)))
	if _, _, ok := r.p.PIO.Find(port, 1); ok {
		r.t.Errorf("port %#x still decoded after BAR0 moved to %#x", port, moved)
	}
	if !probe(moved) {
		r.t.Errorf("the device does not answer at %#x after the move", moved)
	}
	cmd := r.cfg32(pci.RegCommand) & 0xffff &^ pci.CmdIO
	r.root.ConfigWrite(0, r.slot, 0, pci.RegCommand, binary.LittleEndian.AppendUint16(nil, uint16(cmd)))
	if _, _, ok := r.p.PIO.Find(moved, 1); ok {
		r.t.Errorf("port %#x still decoded with I/O decode off", moved)
	}
}

// TestIOBarVfioUser: a vfio-user device whose BAR0 is in I/O space (the
// test device testdev.IOBar) attaches, its BAR lands in the I/O window,
// and port accesses of every width reach the device as REGION_READ and
// REGION_WRITE of region 0 at the offset in the BAR.
func TestIOBarVfioUser(t *testing.T) {
	be := testdev.NewIOBar()
	a, s, err := vfiouser.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	srv := make(chan error, 1)
	go func() { srv <- vfiouser.NewServer(be, quiet).ServeConn(s) }()
	c, err := vfiouser.NewClient(a, "iobar.sock", vfiouser.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	r := newIORig(t, c)
	t.Cleanup(func() { r.d.Close(); <-srv })
	if id := r.cfg32(0); id != testdev.IOBarDeviceID<<16|testdev.IOBarVendor {
		t.Fatalf("ID %#x", id)
	}
	port := r.placed(testdev.IOBarSize)

	if v := r.in(port+testdev.IORegMagic, 4); v != testdev.IOMagic {
		t.Errorf("magic %#x, want %#x", v, testdev.IOMagic)
	}
	r.out(port+testdev.IORegScratch, 0x12345678, 4)
	r.out(port+testdev.IORegScratch+1, 0xab, 1)
	r.out(port+testdev.IORegScratch+2, 0xcdef, 2)
	if got := be.Scratch(); got != 0xcdefab78 {
		t.Errorf("the device's scratch register is %#x after outl/outb/outw, want 0xcdefab78", got)
	}
	if v := r.in(port+testdev.IORegScratch, 4); v != 0xcdefab78 {
		t.Errorf("inl scratch %#x", v)
	}
	if v := r.in(port+testdev.IORegInvert, 4); v != ^uint32(0xcdefab78) {
		t.Errorf("inl invert %#x", v)
	}
	if v := r.in(port+testdev.IORegScratch+3, 1); v != 0xcd {
		t.Errorf("inb scratch+3 %#x", v)
	}
	if v := r.in(port+testdev.IORegInvert+2, 2); v != 0x3210 {
		t.Errorf("inw invert+2 %#x", v)
	}
	if v := r.in(port+testdev.IORegWrites, 4); v != 3 {
		t.Errorf("the device counted %d writes, want 3", v)
	}
	if reads, writes := be.Accesses(); reads != 6 || writes != 3 {
		t.Errorf("device served %d reads, %d writes; want 6, 3", reads, writes)
	}
	r.moveAndDisable(port, testdev.IOBarSize, func(p uint64) bool { return r.in(p, 4) == testdev.IOMagic })
}

// TestIOBarKernelVFIO: the same through kernel VFIO (an iommufd device
// cdev over a fake kernel): the I/O BAR becomes preads and pwrites of the
// device fd at region 0's offset plus the offset in the BAR, of the
// access's width.
func TestIOBarKernelVFIO(t *testing.T) {
	k := newFakeKernel(t)
	dev, err := vfiokernel.Open("/dev/vfio/devices/vfio0", vfiokernel.WithSys(k), vfiokernel.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	r := newIORig(t, dev)
	port := r.placed(0x20)
	k.mu.Lock()
	k.ops = nil
	k.mu.Unlock()

	r.out(port+4, 0xdeadbeef, 4)
	r.out(port+9, 0x5a, 1)
	r.out(port+0x1e, 0x1234, 2)
	if v := r.in(port+4, 4); v != 0xdeadbeef {
		t.Errorf("inl %#x", v)
	}
	if v := r.in(port+9, 1); v != 0x5a {
		t.Errorf("inb %#x", v)
	}
	if v := r.in(port+0x1e, 2); v != 0x1234 {
		t.Errorf("inw %#x", v)
	}
	k.mu.Lock()
	got := strings.Join(k.ops, " ")
	k.mu.Unlock()
	want := "pwrite 0+4=efbeadde pwrite 0+9=5a pwrite 0+1e=3412 pread 0+4 pread 0+9 pread 0+1e"
	if got != want {
		t.Errorf("device fd accesses:\n  %s\nwant\n  %s", got, want)
	}
	r.moveAndDisable(port, 0x20, func(p uint64) bool { return r.in(p+4, 4) == 0xdeadbeef })
}

// fakeKernel is a kernel with one VFIO PCI function behind an iommufd
// device cdev: config space (region 7) whose BAR0 is I/O, region 0 a
// 32-port I/O BAR backed by a byte array, no interrupts.
type fakeKernel struct {
	t      *testing.T
	mu     sync.Mutex
	config [256]byte
	ports  [0x20]byte
	ops    []string
	nextFd int
}

// Region offsets in the device fd, as vfio-pci lays them out.
func regionOffset(index uint32) uint64 { return uint64(index) << 40 }

func newFakeKernel(t *testing.T) *fakeKernel {
	k := &fakeKernel{t: t, nextFd: 10}
	le := binary.LittleEndian
	le.PutUint32(k.config[0:], 0x1234<<16|0x1af4)
	le.PutUint32(k.config[0x10:], 1) // BAR0: I/O
	return k
}

func (k *fakeKernel) Open(path string, flags int) (int, error) {
	switch path {
	case "/dev/iommu", "/dev/vfio/devices/vfio0":
		k.nextFd++
		return k.nextFd, nil
	}
	return -1, unix.ENOENT
}

func (k *fakeKernel) Close(int) error { return nil }

func (k *fakeKernel) Ioctl(fd int, req uint32, arg []byte) (int, error) {
	ne := binary.NativeEndian
	switch req {
	case linux.VFIO_DEVICE_GET_INFO: // argsz, flags, num_regions, num_irqs
		ne.PutUint32(arg[4:], vfio.DeviceFlagPCI)
		ne.PutUint32(arg[8:], vfio.PCINumRegions)
		ne.PutUint32(arg[12:], vfio.PCINumIRQs)
	case linux.VFIO_DEVICE_GET_REGION_INFO:
		idx := ne.Uint32(arg[8:])
		ri := vfio.RegionInfo{Index: idx}
		switch idx {
		case 0:
			ri.Flags, ri.Size = vfio.RegionFlagRead|vfio.RegionFlagWrite, uint64(len(k.ports))
		case vfio.PCIConfigRegionIndex:
			ri.Flags, ri.Size = vfio.RegionFlagRead|vfio.RegionFlagWrite, uint64(len(k.config))
		}
		copy(arg, vfio.EncodeRegionInfo(ri, regionOffset(idx)))
	case linux.VFIO_DEVICE_GET_IRQ_INFO: // argsz, flags, index, count: none
		ne.PutUint32(arg[4:], 0)
		ne.PutUint32(arg[12:], 0)
	}
	return 0, nil // iommufd bind/alloc/attach/map, reset: accepted
}

func (k *fakeKernel) IoctlInt(int, uint32, uintptr) (int, error) { return 0, nil }

// at resolves a device-fd offset to the backing bytes.
func (k *fakeKernel) at(off int64, n int) (buf []byte, region string, ok bool) {
	idx, o := uint32(uint64(off)>>40), uint64(off)&(1<<40-1)
	switch idx {
	case 0:
		if o+uint64(n) <= uint64(len(k.ports)) {
			return k.ports[o : o+uint64(n)], fmt.Sprintf("0+%x", o), true
		}
	case vfio.PCIConfigRegionIndex:
		if o+uint64(n) <= uint64(len(k.config)) {
			return k.config[o : o+uint64(n)], "", true
		}
	}
	return nil, "", false
}

func (k *fakeKernel) Pread(fd int, p []byte, off int64) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, name, ok := k.at(off, len(p))
	if !ok {
		return 0, unix.EINVAL
	}
	copy(p, b)
	if name != "" {
		k.ops = append(k.ops, "pread "+name)
	}
	return len(p), nil
}

func (k *fakeKernel) Pwrite(fd int, p []byte, off int64) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, name, ok := k.at(off, len(p))
	if !ok {
		return 0, unix.EINVAL
	}
	if name == "" { // config space: the command register only
		if uint64(off)&0xfff == pci.RegCommand {
			copy(b, p)
		}
		return len(p), nil
	}
	copy(b, p)
	k.ops = append(k.ops, fmt.Sprintf("pwrite %s=%x", name, p))
	return len(p), nil
}

func (k *fakeKernel) Mmap(int, int64, int) ([]byte, error) { return nil, unix.ENODEV }
func (k *fakeKernel) Munmap([]byte) error                  { return nil }
func (k *fakeKernel) Readlink(string) (string, error)      { return "", unix.ENOENT }
func (k *fakeKernel) ReadDir(string) ([]string, error)     { return nil, unix.ENOENT }
func (k *fakeKernel) Exists(path string) bool              { return path == "/dev/vfio" }

var _ vfiokernel.Sys = (*fakeKernel)(nil)
