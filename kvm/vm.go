package kvm

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine fd.
type VM struct {
	fd      int
	runSize int
}

// Fd is the VM file descriptor.
func (vm *VM) Fd() int { return vm.fd }

// Close closes the VM fd (the kernel frees the VM when its vCPUs and
// devices are closed too).
func (vm *VM) Close() error {
	if vm.fd < 0 {
		return nil
	}
	err := unix.Close(vm.fd)
	vm.fd = -1
	return err
}

// CheckExtension is KVM_CHECK_EXTENSION on the VM fd (VM-specific answers).
func (vm *VM) CheckExtension(c Cap) (int, error) {
	return ioctlVal(vm.fd, "KVM_CHECK_EXTENSION", kvmCheckExtension, uintptr(c))
}

// SetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION (MemorySize 0 deletes
// the slot).
func (vm *VM) SetUserMemoryRegion(r UserspaceMemoryRegion) error {
	_, err := ioctl(vm.fd, "KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, unsafe.Pointer(&r))
	return err
}

// SetTSSAddr is KVM_SET_TSS_ADDR (three pages KVM needs below 4 GiB on Intel).
func (vm *VM) SetTSSAddr(addr uint64) error {
	_, err := ioctlVal(vm.fd, "KVM_SET_TSS_ADDR", kvmSetTSSAddr, uintptr(addr))
	return err
}

// SetIdentityMapAddr is KVM_SET_IDENTITY_MAP_ADDR (one page, Intel).
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	_, err := ioctl(vm.fd, "KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, unsafe.Pointer(&addr))
	return err
}

// CreateIRQChip is KVM_CREATE_IRQCHIP (PIC, IOAPIC and LAPICs in the kernel,
// with default routes for GSIs 0-23).
func (vm *VM) CreateIRQChip() error {
	_, err := ioctlVal(vm.fd, "KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0)
	return err
}

// CreatePIT2 is KVM_CREATE_PIT2.
func (vm *VM) CreatePIT2(cfg PITConfig) error {
	_, err := ioctl(vm.fd, "KVM_CREATE_PIT2", kvmCreatePIT2, unsafe.Pointer(&cfg))
	return err
}

// IRQLine is KVM_IRQ_LINE: set a GSI's level.
func (vm *VM) IRQLine(gsi uint32, level bool) error {
	l := irqLevel{IRQ: gsi}
	if level {
		l.Level = 1
	}
	_, err := ioctl(vm.fd, "KVM_IRQ_LINE", kvmIRQLine, unsafe.Pointer(&l))
	return err
}

// SetGSIRouting is KVM_SET_GSI_ROUTING. It REPLACES the whole routing table:
// pass every route, including the irqchip ones for GSIs 0-23 that
// KVM_CREATE_IRQCHIP installed.
func (vm *VM) SetGSIRouting(entries []IRQRoutingEntry) error {
	buf := encodeRouting(entries)
	_, err := ioctl(vm.fd, "KVM_SET_GSI_ROUTING", kvmSetGSIRouting, unsafe.Pointer(&buf[0]))
	return err
}

// encodeRouting lays out struct kvm_irq_routing with its entries.
func encodeRouting(entries []IRQRoutingEntry) []byte {
	hdr := int(unsafe.Sizeof(irqRoutingHeader{}))
	es := int(unsafe.Sizeof(IRQRoutingEntry{}))
	buf := alignedBuf(hdr + len(entries)*es)
	(*irqRoutingHeader)(unsafe.Pointer(&buf[0])).NR = uint32(len(entries))
	if len(entries) > 0 {
		copy(unsafe.Slice((*IRQRoutingEntry)(unsafe.Pointer(&buf[hdr])), len(entries)), entries)
	}
	return buf
}

// SetIRQFD is KVM_IRQFD with a full struct (assign, deassign, resample).
func (vm *VM) SetIRQFD(f IRQFD) error {
	_, err := ioctl(vm.fd, "KVM_IRQFD", kvmIRQFD, unsafe.Pointer(&f))
	return err
}

// AssignIRQFD makes writes to eventfd fd inject gsi.
func (vm *VM) AssignIRQFD(fd int, gsi uint32) error {
	return vm.SetIRQFD(IRQFD{FD: uint32(fd), GSI: gsi})
}

// AssignIRQFDResample is AssignIRQFD for a level-triggered line: KVM
// signals resampleFD when the guest EOIs, and the line is lowered.
func (vm *VM) AssignIRQFDResample(fd, resampleFD int, gsi uint32) error {
	return vm.SetIRQFD(IRQFD{FD: uint32(fd), GSI: gsi, Flags: IRQFDFlagResample, ResampleFD: uint32(resampleFD)})
}

// DeassignIRQFD undoes AssignIRQFD (fd and gsi must match).
func (vm *VM) DeassignIRQFD(fd int, gsi uint32) error {
	return vm.SetIRQFD(IRQFD{FD: uint32(fd), GSI: gsi, Flags: IRQFDFlagDeassign})
}

// SetIOEventFD is KVM_IOEVENTFD with a full struct.
func (vm *VM) SetIOEventFD(e IOEventFD) error {
	_, err := ioctl(vm.fd, "KVM_IOEVENTFD", kvmIOEventFD, unsafe.Pointer(&e))
	return err
}

// NewIOEventFD builds a kvm_ioeventfd: pio selects the port-I/O bus, a
// non-nil datamatch matches only writes of that value; deassign removes
// the registration (all other fields must match the assignment).
func NewIOEventFD(fd int, addr uint64, size uint32, pio bool, datamatch *uint64, deassign bool) IOEventFD {
	e := IOEventFD{Addr: addr, Len: size, FD: int32(fd)}
	if pio {
		e.Flags |= IOEventFDFlagPIO
	}
	if datamatch != nil {
		e.Flags |= IOEventFDFlagDataMatch
		e.DataMatch = *datamatch
	}
	if deassign {
		e.Flags |= IOEventFDFlagDeassign
	}
	return e
}

// SignalMSI is KVM_SIGNAL_MSI. delivered is false when the guest blocked
// the MSI or it reached no vCPU (KVM reports the latter as EPERM, which is
// not an error here).
func (vm *VM) SignalMSI(m MSI) (delivered bool, err error) {
	r, err := ioctl(vm.fd, "KVM_SIGNAL_MSI", kvmSignalMSI, unsafe.Pointer(&m))
	if errors.Is(err, unix.EPERM) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return r > 0, nil
}

// MSIFor builds a kvm_msi from an address and data.
func MSIFor(addr uint64, data uint32) MSI {
	return MSI{AddressLo: uint32(addr), AddressHi: uint32(addr >> 32), Data: data}
}

// EnableCap is KVM_ENABLE_CAP on the VM (at most 4 args).
func (vm *VM) EnableCap(c Cap, flags uint32, args ...uint64) error {
	return enableCapOn(vm.fd, c, flags, args)
}

func enableCapOn(fd int, c Cap, flags uint32, args []uint64) error {
	if len(args) > 4 {
		return fmt.Errorf("KVM_ENABLE_CAP: %d args, at most 4", len(args))
	}
	ec := enableCap{Cap: uint32(c), Flags: flags}
	copy(ec.Args[:], args)
	_, err := ioctl(fd, "KVM_ENABLE_CAP", kvmEnableCap, unsafe.Pointer(&ec))
	if err != nil {
		return fmt.Errorf("%w (capability %d)", err, c)
	}
	return nil
}

// Device is a KVM device fd (KVM_CREATE_DEVICE).
type Device struct {
	fd int
}

// CreateDevice is KVM_CREATE_DEVICE. With flags CreateDeviceTest it only
// checks that the type is supported and returns a nil Device.
func (vm *VM) CreateDevice(typ uint32, flags uint32) (*Device, error) {
	cd := createDevice{Type: typ, Flags: flags}
	if _, err := ioctl(vm.fd, "KVM_CREATE_DEVICE", kvmCreateDevice, unsafe.Pointer(&cd)); err != nil {
		return nil, err
	}
	if flags&CreateDeviceTest != 0 {
		return nil, nil
	}
	unix.CloseOnExec(int(cd.FD))
	return &Device{fd: int(cd.FD)}, nil
}

// CreateVFIODevice creates the KVM-VFIO pseudo-device (one per VM).
func (vm *VM) CreateVFIODevice() (*Device, error) { return vm.CreateDevice(DevTypeVFIO, 0) }

// Fd is the device fd.
func (d *Device) Fd() int { return d.fd }

// Close closes the device fd.
func (d *Device) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// SetAttr is KVM_SET_DEVICE_ATTR. a.Addr must point to memory that stays
// put during the call (heap or mmap'd memory, kept alive by the caller).
func (d *Device) SetAttr(a DeviceAttr) error {
	_, err := ioctl(d.fd, "KVM_SET_DEVICE_ATTR", kvmSetDeviceAttr, unsafe.Pointer(&a))
	return err
}

// GetAttr is KVM_GET_DEVICE_ATTR (the kernel writes through a.Addr).
func (d *Device) GetAttr(a DeviceAttr) error {
	_, err := ioctl(d.fd, "KVM_GET_DEVICE_ATTR", kvmGetDeviceAttr, unsafe.Pointer(&a))
	return err
}

// HasAttr is KVM_HAS_DEVICE_ATTR: nil when supported.
func (d *Device) HasAttr(a DeviceAttr) error {
	_, err := ioctl(d.fd, "KVM_HAS_DEVICE_ATTR", kvmHasDeviceAttr, unsafe.Pointer(&a))
	return err
}

// VFIOAddFile registers a VFIO group fd (or, on newer kernels, a VFIO cdev
// device fd) with the KVM-VFIO device (KVM_DEV_VFIO_FILE_ADD).
func (d *Device) VFIOAddFile(fd int) error { return d.vfioFile(fd, DevVFIOFileAdd) }

// VFIODelFile unregisters it (KVM_DEV_VFIO_FILE_DEL).
func (d *Device) VFIODelFile(fd int) error { return d.vfioFile(fd, DevVFIOFileDel) }

func (d *Device) vfioFile(fd int, attr uint64) error {
	// The kernel reads an int32 fd through Addr. A heap object never moves
	// (a stack one may, when the stack grows), and KeepAlive holds it.
	v := new(int32)
	*v = int32(fd)
	err := d.SetAttr(DeviceAttr{Group: DevVFIOFile, Attr: attr, Addr: uint64(uintptr(unsafe.Pointer(v)))})
	runtime.KeepAlive(v)
	return err
}
