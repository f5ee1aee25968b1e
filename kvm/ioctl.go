// Package kvm is a typed layer over the /dev/kvm ioctls (x86-64): the system
// fd, VMs, vCPUs and their mmap'd kvm_run pages, and every structure shared
// with the kernel, laid out as in linux/kvm.h and asm/kvm.h. It holds no
// policy: the VMM decides what to do with an exit or an error.
//
// Every failing ioctl returns an *Error naming the ioctl, so messages read
// like "KVM_SET_USER_MEMORY_REGION: invalid argument", and errors.Is works
// against the errno (errors.Is(err, unix.EINTR)).
package kvm

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl request encoding (asm-generic/ioctl.h): nr 8 bits, type 8 bits,
// size 14 bits, dir 2 bits.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	iocNRShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30

	kvmio = 0xAE
)

func ioc(dir, typ, nr, size uintptr) uintptr {
	return dir<<iocDirShift | typ<<iocTypeShift | nr<<iocNRShift | size<<iocSizeShift
}

// IO is the kernel's _IO(type, nr): a request without an argument struct.
func IO(typ, nr uintptr) uintptr { return ioc(iocNone, typ, nr, 0) }

// IOR is _IOR(type, nr, size): the kernel writes size bytes.
func IOR(typ, nr, size uintptr) uintptr { return ioc(iocRead, typ, nr, size) }

// IOW is _IOW(type, nr, size): the kernel reads size bytes.
func IOW(typ, nr, size uintptr) uintptr { return ioc(iocWrite, typ, nr, size) }

// IOWR is _IOWR(type, nr, size): both directions.
func IOWR(typ, nr, size uintptr) uintptr { return ioc(iocRead|iocWrite, typ, nr, size) }

func sizeOf[T any]() uintptr            { var v T; return unsafe.Sizeof(v) }
func kvmIOR[T any](nr uintptr) uintptr  { return IOR(kvmio, nr, sizeOf[T]()) }
func kvmIOW[T any](nr uintptr) uintptr  { return IOW(kvmio, nr, sizeOf[T]()) }
func kvmIOWR[T any](nr uintptr) uintptr { return IOWR(kvmio, nr, sizeOf[T]()) }

// Request numbers. The sizes come from the Go mirrors of the kernel structs,
// whose layouts are checked by tests against the uapi.
var (
	kvmGetAPIVersion       = IO(kvmio, 0x00)
	kvmCreateVM            = IO(kvmio, 0x01)
	kvmCheckExtension      = IO(kvmio, 0x03)
	kvmGetVCPUMmapSize     = IO(kvmio, 0x04)
	kvmGetSupportedCPUID   = kvmIOWR[cpuid2Header](0x05)
	kvmCreateVCPU          = IO(kvmio, 0x41)
	kvmSetUserMemoryRegion = kvmIOW[UserspaceMemoryRegion](0x46)
	kvmSetTSSAddr          = IO(kvmio, 0x47)
	kvmSetIdentityMapAddr  = kvmIOW[uint64](0x48)
	kvmCreateIRQChip       = IO(kvmio, 0x60)
	kvmIRQLine             = kvmIOW[irqLevel](0x61)
	kvmSetGSIRouting       = kvmIOW[irqRoutingHeader](0x6a)
	kvmIRQFD               = kvmIOW[IRQFD](0x76)
	kvmCreatePIT2          = kvmIOW[PITConfig](0x77)
	kvmIOEventFD           = kvmIOW[IOEventFD](0x79)
	kvmEnableCap           = kvmIOW[enableCap](0xa3)
	kvmSignalMSI           = kvmIOW[MSI](0xa5)
	kvmCreateDevice        = kvmIOWR[createDevice](0xe0)
	kvmSetDeviceAttr       = kvmIOW[DeviceAttr](0xe1)
	kvmGetDeviceAttr       = kvmIOW[DeviceAttr](0xe2)
	kvmHasDeviceAttr       = kvmIOW[DeviceAttr](0xe3)

	kvmRun           = IO(kvmio, 0x80)
	kvmGetRegs       = kvmIOR[Regs](0x81)
	kvmSetRegs       = kvmIOW[Regs](0x82)
	kvmGetSregs      = kvmIOR[Sregs](0x83)
	kvmSetSregs      = kvmIOW[Sregs](0x84)
	kvmTranslate     = kvmIOWR[Translation](0x85)
	kvmGetMSRs       = kvmIOWR[msrsHeader](0x88)
	kvmSetMSRs       = kvmIOW[msrsHeader](0x89)
	kvmGetFPU        = kvmIOR[FPU](0x8c)
	kvmSetFPU        = kvmIOW[FPU](0x8d)
	kvmGetLAPIC      = kvmIOR[LAPICState](0x8e)
	kvmSetLAPIC      = kvmIOW[LAPICState](0x8f)
	kvmSetCPUID2     = kvmIOW[cpuid2Header](0x90)
	kvmGetCPUID2     = kvmIOWR[cpuid2Header](0x91)
	kvmGetMPState    = kvmIOR[MPState](0x98)
	kvmSetMPState    = kvmIOW[MPState](0x99)
	kvmSetGuestDebug = kvmIOW[GuestDebug](0x9b)
	kvmGetVCPUEvents = kvmIOR[VCPUEvents](0x9f)
	kvmSetVCPUEvents = kvmIOW[VCPUEvents](0xa0)
	kvmGetXSave      = kvmIOR[XSave](0xa4)
	kvmSetXSave      = kvmIOW[XSave](0xa5)
	kvmGetXCRs       = kvmIOR[XCRs](0xa6)
	kvmSetXCRs       = kvmIOW[XCRs](0xa7)
)

// Error is a failed KVM ioctl.
type Error struct {
	Op    string // the ioctl's name, e.g. "KVM_RUN"
	Errno unix.Errno
}

func (e *Error) Error() string { return e.Op + ": " + e.Errno.Error() }
func (e *Error) Unwrap() error { return e.Errno }

// IsRetry reports whether err is an interrupted or "try again" KVM_RUN
// (EINTR after a signal or immediate_exit, EAGAIN from an AP waiting for
// SIPI): the caller should handle its pending work and run again.
func IsRetry(err error) bool {
	return errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN)
}

// ioctl issues one ioctl with a pointer (or nil) argument and returns the
// kernel's non-negative result. EINTR is retried for every ioctl but
// KVM_RUN, whose EINTR the caller must see.
func ioctl(fd int, name string, req uintptr, arg unsafe.Pointer) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == 0 {
			return int(r), nil
		}
		if e == unix.EINTR && req != kvmRun {
			continue
		}
		return int(r), &Error{Op: name, Errno: e}
	}
}

// ioctlVal issues an ioctl whose argument is a plain value.
func ioctlVal(fd int, name string, req, val uintptr) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, val)
		if e == 0 {
			return int(r), nil
		}
		if e == unix.EINTR && req != kvmRun {
			continue
		}
		return int(r), &Error{Op: name, Errno: e}
	}
}

// alignedBuf returns n zeroed bytes, 8-byte aligned, for variable-length
// ioctl arguments (a header followed by an array).
func alignedBuf(n int) []byte {
	w := make([]uint64, (n+7)/8)
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), n)
}
