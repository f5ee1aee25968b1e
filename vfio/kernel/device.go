package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"godvm/addr"
	"godvm/guestmem"
	"godvm/internal/abi"
	"godvm/vfio"
)

// dmaBackend is where DMA mappings go: a type1 container or an iommufd IOAS.
type dmaBackend interface {
	mapDMA(iova, vaddr, size uint64) error
	unmapDMA(iova, size uint64) error
	close()
}

// kernelDevice is a device opened through kernel VFIO.
type kernelDevice struct {
	sys  Sys
	name string
	fd   int
	info vfio.DeviceInfo
	dma  dmaBackend
	kvm  KVMDevice
	kfd  int // fd registered with KVM (group or device), -1 if none

	mu      sync.Mutex
	regions map[uint32]kregion
	closed  bool
}

type kregion struct {
	info   vfio.RegionInfo
	offset uint64
}

func (d *kernelDevice) String() string { return "vfio " + d.name }

// getInfo runs VFIO_DEVICE_GET_INFO.
func (d *kernelDevice) getInfo() error {
	di := deviceInfo{Argsz: uint32(unsafe.Sizeof(deviceInfo{}))}
	if _, err := d.sys.Ioctl(d.fd, ioctlDeviceGetInfo, abi.Bytes(&di)); err != nil {
		return fmt.Errorf("vfio: %s: VFIO_DEVICE_GET_INFO: %w", d.name, err)
	}
	d.info = vfio.DeviceInfo{Flags: di.Flags, NumRegions: di.NumRegions, NumIRQs: di.NumIrqs}
	return nil
}

func (d *kernelDevice) Info() vfio.DeviceInfo { return d.info }

func (d *kernelDevice) region(index uint32) (kregion, error) {
	d.mu.Lock()
	r, ok := d.regions[index]
	d.mu.Unlock()
	if ok {
		return r, nil
	}
	if index >= d.info.NumRegions {
		return kregion{}, fmt.Errorf("vfio: %s: region %d does not exist (device has %d)", d.name, index, d.info.NumRegions)
	}
	buf := make([]byte, vfio.RegionInfoSize)
	for try := 0; ; try++ {
		binary.NativeEndian.PutUint32(buf[0:], uint32(len(buf)))
		binary.NativeEndian.PutUint32(buf[8:], index)
		if _, err := d.sys.Ioctl(d.fd, ioctlDeviceRegion, buf); err != nil {
			return kregion{}, fmt.Errorf("vfio: %s: VFIO_DEVICE_GET_REGION_INFO(%d): %w", d.name, index, err)
		}
		need := binary.NativeEndian.Uint32(buf[0:])
		if need <= uint32(len(buf)) || try == 1 {
			break
		}
		if need > 1<<16 {
			return kregion{}, fmt.Errorf("vfio: %s: region %d info wants %d bytes", d.name, index, need)
		}
		buf = make([]byte, need)
	}
	if need := binary.NativeEndian.Uint32(buf[0:]); need < uint32(len(buf)) {
		buf = buf[:max(need, vfio.RegionInfoSize)]
	}
	info, off, err := vfio.DecodeRegionInfo(buf)
	if err != nil {
		return kregion{}, fmt.Errorf("%w (%s)", err, d.name)
	}
	r = kregion{info, off}
	d.mu.Lock()
	if d.regions == nil {
		d.regions = map[uint32]kregion{}
	}
	d.regions[index] = r
	d.mu.Unlock()
	return r, nil
}

func (d *kernelDevice) RegionInfo(index uint32) (vfio.RegionInfo, error) {
	r, err := d.region(index)
	return r.info, err
}

func (d *kernelDevice) access(index uint32, off uint64, n int) (kregion, error) {
	r, err := d.region(index)
	if err != nil {
		return r, err
	}
	if off+uint64(n) < off || off+uint64(n) > r.info.Size {
		return r, fmt.Errorf("vfio: %s: access %#x+%d outside region %d (%#x bytes)", d.name, off, n, index, r.info.Size)
	}
	return r, nil
}

func (d *kernelDevice) ReadRegion(index uint32, off uint64, p []byte) error {
	r, err := d.access(index, off, len(p))
	if err == nil {
		var n int
		n, err = d.sys.Pread(d.fd, p, int64(r.offset+off))
		if err == nil && n != len(p) {
			err = fmt.Errorf("short read (%d of %d)", n, len(p))
		}
		if err != nil {
			err = fmt.Errorf("vfio: %s: read region %d at %#x: %w", d.name, index, off, err)
		}
	}
	if err != nil {
		for i := range p {
			p[i] = 0xff
		}
	}
	return err
}

func (d *kernelDevice) WriteRegion(index uint32, off uint64, p []byte) error {
	r, err := d.access(index, off, len(p))
	if err != nil {
		return err
	}
	n, err := d.sys.Pwrite(d.fd, p, int64(r.offset+off))
	if err == nil && n != len(p) {
		err = fmt.Errorf("short write (%d of %d)", n, len(p))
	}
	if err != nil {
		return fmt.Errorf("vfio: %s: write region %d at %#x: %w", d.name, index, off, err)
	}
	return nil
}

func (d *kernelDevice) MapRegion(index uint32, off, size uint64) ([]byte, error) {
	r, err := d.region(index)
	if err != nil {
		return nil, err
	}
	if err := checkInAreas(r.info, off, size); err != nil {
		return nil, fmt.Errorf("vfio: %s: %w", d.name, err)
	}
	b, err := d.sys.Mmap(d.fd, int64(r.offset+off), int(size))
	if err != nil {
		return nil, fmt.Errorf("vfio: %s: mmap region %d %#x+%#x: %w", d.name, index, off, size, err)
	}
	return b, nil
}

// checkInAreas verifies that [off, off+size) lies in one mmappable area.
func checkInAreas(r vfio.RegionInfo, off, size uint64) error {
	if size == 0 || off+size < off {
		return fmt.Errorf("region %d: bad mmap range %#x+%#x", r.Index, off, size)
	}
	for _, a := range r.Areas {
		if off >= a.Offset && off+size <= a.Offset+a.Size {
			return nil
		}
	}
	return fmt.Errorf("region %d: %#x+%#x is not in an mmappable area", r.Index, off, size)
}

func (d *kernelDevice) UnmapRegion(b []byte) error { return d.sys.Munmap(b) }

func (d *kernelDevice) IRQInfo(index uint32) (vfio.IRQInfo, error) {
	if index >= d.info.NumIRQs {
		return vfio.IRQInfo{}, fmt.Errorf("vfio: %s: IRQ index %d does not exist (device has %d)", d.name, index, d.info.NumIRQs)
	}
	ii := irqInfo{Argsz: uint32(unsafe.Sizeof(irqInfo{})), Index: index}
	if _, err := d.sys.Ioctl(d.fd, ioctlDeviceIRQInfo, abi.Bytes(&ii)); err != nil {
		return vfio.IRQInfo{}, fmt.Errorf("vfio: %s: VFIO_DEVICE_GET_IRQ_INFO(%d): %w", d.name, index, err)
	}
	return vfio.IRQInfo{Index: ii.Index, Flags: ii.Flags, Count: ii.Count}, nil
}

// EncodeIRQSet builds a vfio_irq_set for SetIRQs: eventfd triggers for
// start.., or (no fds) DATA_NONE|TRIGGER with count 0 to disable the index.
func EncodeIRQSet(index, start uint32, fds []int) []byte {
	const trigger, dataNone, dataEventFD = 0x20, 0x1, 0x4
	hdr := irqSet{Index: index, Start: start, Count: uint32(len(fds)), Flags: trigger | dataEventFD}
	if len(fds) == 0 {
		hdr.Flags, hdr.Start = trigger|dataNone, 0
	}
	hdr.Argsz = uint32(unsafe.Sizeof(hdr)) + 4*uint32(len(fds))
	b := append([]byte(nil), abi.Bytes(&hdr)...)
	for _, fd := range fds {
		b = binary.NativeEndian.AppendUint32(b, uint32(int32(fd)))
	}
	return b
}

func (d *kernelDevice) SetIRQs(index, start uint32, fds []int) error {
	if _, err := d.sys.Ioctl(d.fd, ioctlDeviceSetIRQs, EncodeIRQSet(index, start, fds)); err != nil {
		return fmt.Errorf("vfio: %s: VFIO_DEVICE_SET_IRQS(index %d, %d vectors): %w", d.name, index, len(fds), err)
	}
	return nil
}

func (d *kernelDevice) Reset() error {
	if d.info.Flags&vfio.DeviceFlagReset == 0 {
		return fmt.Errorf("vfio: %s: device does not support reset", d.name)
	}
	if _, err := d.sys.IoctlInt(d.fd, ioctlDeviceReset, 0); err != nil {
		return fmt.Errorf("vfio: %s: VFIO_DEVICE_RESET: %w", d.name, err)
	}
	return nil
}

func hostAddr(r *guestmem.Region) (uint64, error) {
	h := r.Host()
	if len(h) == 0 || uint64(len(h)) != r.Size {
		return 0, fmt.Errorf("guest RAM region %#x has no host mapping", r.GPA)
	}
	return addr.Host(h), nil
}

func (d *kernelDevice) DMAMap(r *guestmem.Region) error {
	va, err := hostAddr(r)
	if err != nil {
		return fmt.Errorf("vfio: %s: %w", d.name, err)
	}
	if err := d.dma.mapDMA(r.GPA, va, r.Size); err != nil {
		return fmt.Errorf("vfio: %s: DMA map %#x+%#x: %w", d.name, r.GPA, r.Size, err)
	}
	return nil
}

func (d *kernelDevice) DMAUnmap(r *guestmem.Region) error {
	if err := d.dma.unmapDMA(r.GPA, r.Size); err != nil {
		return fmt.Errorf("vfio: %s: DMA unmap %#x+%#x: %w", d.name, r.GPA, r.Size, err)
	}
	return nil
}

func (d *kernelDevice) Failed() error { return nil }

func (d *kernelDevice) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	if err := d.sys.Close(d.fd); err != nil {
		errs = append(errs, err)
	}
	if d.kvm != nil && d.kfd >= 0 {
		if err := d.kvm.DelFile(d.kfd); err != nil {
			errs = append(errs, err)
		}
	}
	d.dma.close()
	return errors.Join(errs...)
}

// container is a legacy type1 container with one group.
type container struct {
	sys     Sys
	fd      int
	groupFd int
}

func (c *container) mapDMA(iova, vaddr, size uint64) error {
	m := dmaMap{Argsz: uint32(unsafe.Sizeof(dmaMap{})), Flags: 3, Vaddr: vaddr, IOVa: iova, Size: size}
	_, err := c.sys.Ioctl(c.fd, ioctlIOMMUMapDMA, abi.Bytes(&m))
	return err
}

func (c *container) unmapDMA(iova, size uint64) error {
	u := dmaUnmap{Argsz: uint32(unsafe.Sizeof(dmaUnmap{})), IOVa: iova, Size: size}
	if _, err := c.sys.Ioctl(c.fd, ioctlIOMMUUnmapDMA, abi.Bytes(&u)); err != nil {
		return err
	}
	if u.Size != size {
		return fmt.Errorf("kernel unmapped %#x of %#x bytes", u.Size, size)
	}
	return nil
}

func (c *container) close() {
	if c.groupFd >= 0 {
		c.sys.IoctlInt(c.groupFd, ioctlGroupUnsetCont, 0)
		c.sys.Close(c.groupFd)
		c.groupFd = -1
	}
	if c.fd >= 0 {
		c.sys.Close(c.fd)
		c.fd = -1
	}
}

// ioas is an iommufd IO address space the device is attached to.
type ioas struct {
	sys Sys
	fd  int // /dev/iommu
	id  uint32
}

func (a *ioas) mapDMA(iova, vaddr, size uint64) error {
	m := ioasMap{Size: uint32(unsafe.Sizeof(ioasMap{})), Flags: iommuIOASMapFixedIOVA | iommuIOASMapReadable | iommuIOASMapWriteable,
		IOASID: a.id, UserVA: vaddr, Length: size, IOVA: iova}
	_, err := a.sys.Ioctl(a.fd, iommuIOASMap, abi.Bytes(&m))
	return err
}

func (a *ioas) unmapDMA(iova, size uint64) error {
	u := ioasUnmap{Size: uint32(unsafe.Sizeof(ioasUnmap{})), IOASID: a.id, IOVA: iova, Length: size}
	if _, err := a.sys.Ioctl(a.fd, iommuIOASUnmap, abi.Bytes(&u)); err != nil {
		return err
	}
	if u.Length != size {
		return fmt.Errorf("iommufd unmapped %#x of %#x bytes", u.Length, size)
	}
	return nil
}

func (a *ioas) close() {
	if a.fd >= 0 {
		a.sys.Close(a.fd)
		a.fd = -1
	}
}

// errnoHint turns common errnos of the open sequence into advice.
func errnoHint(err error) string {
	switch {
	case errors.Is(err, unix.EBUSY):
		return " (in use by another process?)"
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return " (permission denied: run as root or chown the node)"
	case errors.Is(err, unix.ENOENT):
		return " (no such node)"
	}
	return ""
}
