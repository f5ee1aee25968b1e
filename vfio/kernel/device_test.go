package kernel

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"godvm/guestmem"
	"godvm/internal/abi"
	"godvm/vfio"
)

// fakeSys is a kernel with VFIO, as far as the flow logic can tell.
type fakeSys struct {
	t       *testing.T
	exists  map[string]bool
	links   map[string]string
	dirs    map[string][]string
	openErr map[string]error
	ioctlEr map[uint32]error

	viable   bool
	type1v2  bool
	devName  string
	regions  map[uint32][]byte // encoded region info (with caps)
	nextFd   int
	fds      map[int]string // open fd -> path
	log      []string
	groupSet bool
	maps     []dmaMap
	ioasMaps []ioasMap
	irqSets  [][]byte
	mmaps    []string
	preads   []int64
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newFakeSys(t *testing.T) *fakeSys {
	f := &fakeSys{t: t, exists: map[string]bool{}, links: map[string]string{}, dirs: map[string][]string{},
		openErr: map[string]error{}, ioctlEr: map[uint32]error{}, viable: true, type1v2: true,
		regions: map[uint32][]byte{}, nextFd: 10, fds: map[int]string{}}
	for _, p := range []string{"/dev/vfio", "/dev/vfio/vfio", "/dev/vfio/0", "/dev/iommu", "/dev/vfio/devices/vfio3"} {
		f.exists[p] = true
	}
	// An mdev and a PCI function, both in group 0 (one at a time).
	mdev := "/sys/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
	pci := "/sys/bus/pci/devices/0000:06:0d.0"
	f.exists[mdev], f.exists[pci] = true, true
	f.links[mdev+"/iommu_group"] = "../../../kernel/iommu_groups/0"
	f.links[pci+"/iommu_group"] = "../../../kernel/iommu_groups/0"
	f.dirs[pci+"/vfio-dev"] = []string{"vfio3"}
	f.devName = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
	// Region 2: the portal BAR, two sparse pages (the vdcm layout).
	f.regions[2] = vfio.EncodeRegionInfo(vfio.RegionInfo{Index: 2, Flags: 7, Size: 0x20000, Areas: []vfio.Area{{Offset: 0, Size: 0x1000}, {Offset: 0x1000, Size: 0x1000}}}, 2<<40)
	f.regions[0] = vfio.EncodeRegionInfo(vfio.RegionInfo{Index: 0, Flags: 3, Size: 0x10000}, 0)
	f.regions[7] = vfio.EncodeRegionInfo(vfio.RegionInfo{Index: 7, Flags: 3, Size: 0x1000}, 7<<40)
	return f
}

func (f *fakeSys) rec(s string, a ...any) { f.log = append(f.log, fmt.Sprintf(s, a...)) }

func (f *fakeSys) Open(p string, flags int) (int, error) {
	if err := f.openErr[p]; err != nil {
		f.rec("open %s: %v", p, err)
		return -1, err
	}
	if !f.exists[p] {
		return -1, unix.ENOENT
	}
	fd := f.nextFd
	f.nextFd++
	f.fds[fd] = p
	f.rec("open %s", p)
	return fd, nil
}

func (f *fakeSys) Close(fd int) error {
	if _, ok := f.fds[fd]; !ok {
		f.t.Errorf("close of fd %d that is not open", fd)
		return unix.EBADF
	}
	delete(f.fds, fd)
	return nil
}

func (f *fakeSys) kind(fd int) string { return path.Base(f.fds[fd]) }

var ioctlNames = map[uint32]string{
	ioctlGetAPIVersion: "GET_API_VERSION", ioctlCheckExtension: "CHECK_EXTENSION", ioctlSetIOMMU: "SET_IOMMU",
	ioctlGroupGetStatus: "GROUP_GET_STATUS", ioctlGroupSetCont: "GROUP_SET_CONTAINER", ioctlGroupUnsetCont: "GROUP_UNSET_CONTAINER",
	ioctlGroupGetDevFD: "GROUP_GET_DEVICE_FD", ioctlDeviceGetInfo: "DEVICE_GET_INFO", ioctlDeviceRegion: "DEVICE_GET_REGION_INFO",
	ioctlDeviceIRQInfo: "DEVICE_GET_IRQ_INFO", ioctlDeviceSetIRQs: "DEVICE_SET_IRQS", ioctlDeviceReset: "DEVICE_RESET",
	ioctlIOMMUMapDMA: "IOMMU_MAP_DMA", ioctlIOMMUUnmapDMA: "IOMMU_UNMAP_DMA", ioctlBindIOMMUFD: "BIND_IOMMUFD",
	ioctlAttachIOMMUFDPT: "ATTACH_IOMMUFD_PT", iommuIOASAlloc: "IOAS_ALLOC", iommuIOASMap: "IOAS_MAP", iommuIOASUnmap: "IOAS_UNMAP",
}

func (f *fakeSys) IoctlInt(fd int, req uint32, val uintptr) (int, error) {
	f.rec("%s %s(%d)", f.kind(fd), ioctlNames[req], val)
	if err := f.ioctlEr[req]; err != nil {
		return -1, err
	}
	switch req {
	case ioctlGetAPIVersion:
		return 0, nil
	case ioctlCheckExtension:
		if val == typeIOMMU1v2 && f.type1v2 {
			return 1, nil
		}
		return 0, nil
	case ioctlSetIOMMU:
		if !f.groupSet {
			return -1, unix.EINVAL
		}
		return 0, nil
	}
	return 0, nil
}

func (f *fakeSys) Ioctl(fd int, req uint32, arg []byte) (int, error) {
	name := ioctlNames[req]
	if err := f.ioctlEr[req]; err != nil {
		f.rec("%s %s: %v", f.kind(fd), name, err)
		return -1, err
	}
	switch req {
	case ioctlGroupGetStatus:
		st := groupStatus{Argsz: 8}
		if f.viable {
			st.Flags = groupFlagsViable
		}
		copy(arg, abi.Bytes(&st))
	case ioctlGroupSetCont:
		cfd := int(int32(binary.NativeEndian.Uint32(arg)))
		if f.fds[cfd] != "/dev/vfio/vfio" {
			return -1, unix.EBADF
		}
		f.groupSet = true
	case ioctlGroupGetDevFD:
		n := string(arg[:len(arg)-1])
		f.rec("%s %s(%s)", f.kind(fd), name, n)
		if n != f.devName || arg[len(arg)-1] != 0 {
			return -1, unix.ENODEV
		}
		dfd := f.nextFd
		f.nextFd++
		f.fds[dfd] = "device"
		return dfd, nil
	case ioctlDeviceGetInfo:
		di := deviceInfo{Argsz: 16, Flags: vfio.DeviceFlagReset | vfio.DeviceFlagPCI, NumRegions: 9, NumIrqs: 5}
		copy(arg, abi.Bytes(&di))
	case ioctlDeviceRegion:
		argsz := binary.NativeEndian.Uint32(arg)
		idx := binary.NativeEndian.Uint32(arg[8:])
		f.rec("%s %s(%d, argsz %d)", f.kind(fd), name, idx, argsz)
		full, ok := f.regions[idx]
		if !ok {
			full = vfio.EncodeRegionInfo(vfio.RegionInfo{Index: idx}, uint64(idx)<<40)
		}
		if int(argsz) < len(full) {
			// As the kernel: report the size needed, no caps copied.
			out := append([]byte(nil), full[:32]...)
			binary.NativeEndian.PutUint32(out[12:], 0)
			copy(arg, out)
			return 0, nil
		}
		copy(arg, full)
		return 0, nil
	case ioctlDeviceIRQInfo:
		ii := abi.From[irqInfo](arg)
		if ii.Index == vfio.PCIMSIXIRQIndex {
			ii.Flags, ii.Count = vfio.IRQFlagEventFD|vfio.IRQFlagNoResize, 9
		}
		copy(arg, abi.Bytes(&ii))
	case ioctlDeviceSetIRQs:
		f.irqSets = append(f.irqSets, append([]byte(nil), arg...))
	case ioctlIOMMUMapDMA:
		f.maps = append(f.maps, abi.From[dmaMap](arg))
	case ioctlIOMMUUnmapDMA:
		// size is in/out: report everything unmapped
	case ioctlBindIOMMUFD:
		b := abi.From[bindIOMMUFD](arg)
		if f.fds[int(b.IOMMUFD)] != "/dev/iommu" || b.Argsz != 16 {
			return -1, unix.EINVAL
		}
		b.OutDevID = 1
		copy(arg, abi.Bytes(&b))
	case iommuIOASAlloc:
		a := abi.From[ioasAlloc](arg)
		a.OutIOASID = 7
		copy(arg, abi.Bytes(&a))
	case ioctlAttachIOMMUFDPT:
		a := abi.From[attachIOMMUFDPT](arg)
		f.rec("%s %s(pt %d)", f.kind(fd), name, a.PtID)
		if a.PtID != 7 {
			return -1, unix.ENOENT
		}
		return 0, nil
	case iommuIOASMap:
		f.ioasMaps = append(f.ioasMaps, abi.From[ioasMap](arg))
	}
	if req != ioctlGroupGetDevFD && req != ioctlDeviceRegion {
		f.rec("%s %s", f.kind(fd), name)
	}
	return 0, nil
}

func (f *fakeSys) Pread(fd int, p []byte, off int64) (int, error) {
	f.preads = append(f.preads, off)
	for i := range p {
		p[i] = byte(off) + byte(i)
	}
	return len(p), nil
}

func (f *fakeSys) Pwrite(fd int, p []byte, off int64) (int, error) { return len(p), nil }

func (f *fakeSys) Mmap(fd int, off int64, size int) ([]byte, error) {
	f.mmaps = append(f.mmaps, fmt.Sprintf("%s@%#x+%#x", f.fds[fd], off, size))
	return make([]byte, size), nil
}

func (f *fakeSys) Munmap(b []byte) error { return nil }

func (f *fakeSys) Readlink(p string) (string, error) {
	if l, ok := f.links[p]; ok {
		return l, nil
	}
	return "", unix.ENOENT
}

func (f *fakeSys) ReadDir(p string) ([]string, error) {
	if d, ok := f.dirs[p]; ok {
		return d, nil
	}
	return nil, unix.ENOENT
}

func (f *fakeSys) Exists(p string) bool { return f.exists[p] }

type fakeKVM struct{ f *fakeSys }

func (k fakeKVM) AddFile(fd int) error { k.f.rec("kvm add %s", k.f.kind(fd)); return nil }
func (k fakeKVM) DelFile(fd int) error { k.f.rec("kvm del %s", k.f.kind(fd)); return nil }

func wantLog(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("system calls:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestLegacyFlowMdev(t *testing.T) {
	f := newFakeSys(t)
	d, err := Open("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001", WithSys(f), WithLogger(quiet), WithKVM(fakeKVM{f}))
	if err != nil {
		t.Fatal(err)
	}
	wantLog(t, f.log,
		"open /dev/vfio/vfio", "vfio GET_API_VERSION(0)", "vfio CHECK_EXTENSION(3)",
		"open /dev/vfio/0", "0 GROUP_GET_STATUS", "0 GROUP_SET_CONTAINER", "vfio SET_IOMMU(3)",
		"kvm add 0", // before the device is opened: mediated drivers need KVM at open
		"0 GROUP_GET_DEVICE_FD(83b8f4f2-509f-382f-3c1e-e6bfe0fa1001)", "device DEVICE_GET_INFO")
	if i := d.Info(); i.NumRegions != 9 || i.NumIRQs != 5 {
		t.Fatalf("info %+v", i)
	}
	f.log = nil

	// Sparse-mmap region: asked twice (the first answer is too small).
	ri, err := d.RegionInfo(2)
	if err != nil {
		t.Fatal(err)
	}
	wantLog(t, f.log, "device DEVICE_GET_REGION_INFO(2, argsz 32)", "device DEVICE_GET_REGION_INFO(2, argsz 80)")
	if !ri.Mappable() || len(ri.Areas) != 2 || ri.Areas[1] != (vfio.Area{Offset: 0x1000, Size: 0x1000}) {
		t.Fatalf("region 2 %+v", ri)
	}
	if _, err := d.MapRegion(2, 0x1000, 0x1000); err != nil {
		t.Fatal(err)
	}
	if _, err := d.MapRegion(2, 0x2000, 0x1000); err == nil || !strings.Contains(err.Error(), "not in an mmappable area") {
		t.Fatalf("map outside the sparse areas: %v", err)
	}
	if _, err := d.MapRegion(0, 0, 0x1000); err == nil {
		t.Fatal("mapped a region without MMAP")
	}
	if !slices.Equal(f.mmaps, []string{"device@0x20000001000+0x1000"}) {
		t.Fatalf("mmaps %v", f.mmaps)
	}
	// Region access at info.offset + off.
	var b [4]byte
	if err := d.ReadRegion(7, 0x10, b[:]); err != nil || f.preads[0] != 7<<40+0x10 {
		t.Fatalf("read: %v at %#x", err, f.preads)
	}
	if err := d.ReadRegion(7, 0xffe, b[:]); err == nil || b != [4]byte{0xff, 0xff, 0xff, 0xff} {
		t.Fatalf("read past the region: %v %x", err, b)
	}
	// IRQs.
	ii, err := d.IRQInfo(vfio.PCIMSIXIRQIndex)
	if err != nil || ii.Count != 9 {
		t.Fatalf("irq info %+v %v", ii, err)
	}
	if _, err := d.IRQInfo(9); err == nil {
		t.Fatal("IRQ index past num_irqs accepted")
	}
	if err := d.SetIRQs(vfio.PCIMSIXIRQIndex, 0, []int{20, 21}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.irqSets[0], EncodeIRQSet(2, 0, []int{20, 21})) {
		t.Fatalf("irq set % x", f.irqSets[0])
	}
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
	// DMA: IOVA = GPA, vaddr = the host mapping.
	host := make([]byte, 0x4000)
	mem, _ := guestmem.FromBytes(guestmem.NewRegion(0x100000, host, -1, 0))
	if err := vfio.MapAllRAM(d, mem); err != nil {
		t.Fatal(err)
	}
	m := f.maps[0]
	if m.IOVa != 0x100000 || m.Size != 0x4000 || m.Flags != 3 || m.Argsz != 32 || m.Vaddr != uint64(uintptr(unsafe.Pointer(&host[0]))) {
		t.Fatalf("MAP_DMA %+v", m)
	}
	if err := d.DMAUnmap(mem.Regions()[0]); err != nil {
		t.Fatal(err)
	}
	f.log = nil
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if len(f.fds) != 0 {
		t.Fatalf("fds left open: %v", f.fds)
	}
	wantLog(t, f.log, "kvm del 0", "0 GROUP_UNSET_CONTAINER(0)")
}

func TestLegacyFlowPCI(t *testing.T) {
	f := newFakeSys(t)
	f.devName = "0000:06:0d.0"
	d, err := Open("06:0d.0", WithSys(f), WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if !slices.Contains(f.log, "0 GROUP_GET_DEVICE_FD(0000:06:0d.0)") {
		t.Fatalf("log %v", f.log)
	}
}

func TestIOMMUFDFlow(t *testing.T) {
	for _, spec := range []string{"/dev/vfio/devices/vfio3", "0000:06:0d.0"} {
		f := newFakeSys(t)
		var opts []Option
		if spec[0] != '/' {
			opts = append(opts, WithMode(ModeIOMMUFD))
		}
		d, err := Open(spec, append(opts, WithSys(f), WithLogger(quiet), WithKVM(fakeKVM{f}))...)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		wantLog(t, f.log,
			"open /dev/iommu", "open /dev/vfio/devices/vfio3",
			"kvm add vfio3", // before BIND: the bind takes the KVM reference
			"vfio3 BIND_IOMMUFD", "iommu IOAS_ALLOC", "vfio3 ATTACH_IOMMUFD_PT(pt 7)", "vfio3 DEVICE_GET_INFO")
		host := make([]byte, 0x2000)
		mem, _ := guestmem.FromBytes(guestmem.NewRegion(1<<32, host, -1, 0))
		if err := vfio.MapAllRAM(d, mem); err != nil {
			t.Fatal(err)
		}
		m := f.ioasMaps[0]
		if m.Size != 40 || m.IOASID != 7 || m.IOVA != 1<<32 || m.Length != 0x2000 || m.Flags != 7 ||
			m.UserVA != uint64(uintptr(unsafe.Pointer(&host[0]))) {
			t.Fatalf("IOAS_MAP %+v", m)
		}
		d.Close()
		if len(f.fds) != 0 {
			t.Fatalf("fds left open: %v", f.fds)
		}
	}
}

func TestAutoModePicksIOMMUFDWithoutContainer(t *testing.T) {
	f := newFakeSys(t)
	delete(f.exists, "/dev/vfio/vfio")
	d, err := Open("0000:06:0d.0", WithSys(f), WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if f.log[0] != "open /dev/iommu" {
		t.Fatalf("log %v", f.log)
	}
}

func TestOpenErrors(t *testing.T) {
	cases := []struct {
		name, spec, want string
		mut              func(*fakeSys)
		opts             []Option
	}{
		{"no /dev/vfio", "0000:06:0d.0", "/dev/vfio does not exist: this host has no VFIO", func(f *fakeSys) { delete(f.exists, "/dev/vfio") }, nil},
		{"unknown UUID", "00000000-0000-0000-0000-000000000001", "no mdev with UUID 00000000-0000-0000-0000-000000000001", nil, nil},
		{"unknown PCI", "0000:07:00.0", "no PCI device 0000:07:00.0", nil, nil},
		{"bad spec", "dsa0", `"dsa0" is not an mdev UUID, a PCI address`, nil, nil},
		{"cdev with legacy", "/dev/vfio/devices/vfio3", "works only with iommufd", nil, []Option{WithMode(ModeLegacy)}},
		{"noiommu", "0000:06:0d.0", "no-IOMMU group noiommu-0", func(f *fakeSys) {
			delete(f.exists, "/dev/vfio/0")
			f.exists["/dev/vfio/noiommu-0"] = true
		}, nil},
		{"not viable", "0000:06:0d.0", "IOMMU group 0 of 0000:06:0d.0 is not viable", func(f *fakeSys) { f.viable = false }, nil},
		{"group busy", "0000:06:0d.0", "in use by another process", func(f *fakeSys) { f.openErr["/dev/vfio/0"] = unix.EBUSY }, nil},
		{"no type1v2", "0000:06:0d.0", "does not support the type1v2 IOMMU", func(f *fakeSys) { f.type1v2 = false }, nil},
		{"no group", "0000:06:0d.0", "has no IOMMU group", func(f *fakeSys) {
			delete(f.links, "/sys/bus/pci/devices/0000:06:0d.0/iommu_group")
		}, []Option{WithMode(ModeLegacy)}},
		{"device fd", "0000:06:0d.0", "VFIO_GROUP_GET_DEVICE_FD(0000:06:0d.0) on group 0: no such device", nil, nil},
		{"bind fails", "/dev/vfio/devices/vfio3", "VFIO_DEVICE_BIND_IOMMUFD(/dev/vfio/devices/vfio3): device or resource busy", func(f *fakeSys) {
			f.ioctlEr[ioctlBindIOMMUFD] = unix.EBUSY
		}, nil},
		{"cdev missing", "0000:06:0d.0", "has no VFIO device cdev", func(f *fakeSys) {
			delete(f.exists, "/dev/vfio/vfio")
			delete(f.dirs, "/sys/bus/pci/devices/0000:06:0d.0/vfio-dev")
		}, nil},
	}
	for _, c := range cases {
		f := newFakeSys(t)
		if c.mut != nil {
			c.mut(f)
		}
		_, err := Open(c.spec, append(c.opts, WithSys(f), WithLogger(quiet), WithKVM(fakeKVM{f}))...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: multi-line error %q", c.name, err)
		}
		if len(f.fds) != 0 {
			t.Errorf("%s: fds left open after failure: %v", c.name, f.fds)
		}
		if slices.Contains(f.log, "kvm add 0") && !slices.Contains(f.log, "kvm del 0") {
			t.Errorf("%s: group left registered with KVM", c.name)
		}
	}
}
