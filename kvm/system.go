package kvm

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DevicePath is where KVM lives.
const DevicePath = "/dev/kvm"

// APIVersion is the only KVM API version there has ever been (KVM_API_VERSION).
const APIVersion = 12

// System is an open /dev/kvm.
type System struct {
	fd int
}

// Open opens /dev/kvm and checks its API version.
func Open() (*System, error) { return OpenPath(DevicePath) }

// OpenPath opens a KVM device node at path.
func OpenPath(path string) (*System, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(path, err)
	}
	s := &System{fd: fd}
	v, err := s.APIVersion()
	if err != nil {
		s.Close()
		return nil, err
	}
	if v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("%s: KVM API version %d, want %d", path, v, APIVersion)
	}
	return s, nil
}

// OpenError explains why /dev/kvm could not be opened.
type OpenError struct {
	Path string
	Err  error
}

func (e *OpenError) Error() string {
	switch {
	case errors.Is(e.Err, unix.ENOENT):
		return "open " + e.Path + ": no such file (is KVM available on this host?)"
	case errors.Is(e.Err, unix.EACCES), errors.Is(e.Err, unix.EPERM):
		return "open " + e.Path + ": permission denied (add your user to the kvm group, or run as root)"
	case errors.Is(e.Err, unix.ENXIO), errors.Is(e.Err, unix.ENODEV):
		return "open " + e.Path + ": " + e.Err.Error() + " (no KVM module is bound: is virtualisation enabled?)"
	}
	return "open " + e.Path + ": " + e.Err.Error()
}

func (e *OpenError) Unwrap() error { return e.Err }

func openError(path string, err error) error { return &OpenError{Path: path, Err: err} }

// Fd is the /dev/kvm file descriptor.
func (s *System) Fd() int { return s.fd }

// Close closes /dev/kvm (VMs created from it stay valid).
func (s *System) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// APIVersion is KVM_GET_API_VERSION.
func (s *System) APIVersion() (int, error) {
	return ioctlVal(s.fd, "KVM_GET_API_VERSION", kvmGetAPIVersion, 0)
}

// CheckExtension is KVM_CHECK_EXTENSION: 0 when unsupported, else 1 or a
// capability-specific value (a count, a bit mask).
func (s *System) CheckExtension(c Cap) (int, error) {
	return ioctlVal(s.fd, "KVM_CHECK_EXTENSION", kvmCheckExtension, uintptr(c))
}

// VCPUMmapSize is KVM_GET_VCPU_MMAP_SIZE: the size of a vCPU's kvm_run mapping.
func (s *System) VCPUMmapSize() (int, error) {
	return ioctlVal(s.fd, "KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, 0)
}

// maxCPUIDEntries bounds the KVM_GET_SUPPORTED_CPUID buffer.
const maxCPUIDEntries = 4096

// SupportedCPUID is KVM_GET_SUPPORTED_CPUID: the leaves KVM can expose.
func (s *System) SupportedCPUID() ([]CPUIDEntry2, error) {
	for n := 256; ; n *= 2 {
		buf, entries := newCPUIDBuf(n)
		_, err := ioctl(s.fd, "KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, unsafe.Pointer(&buf[0]))
		if errors.Is(err, unix.E2BIG) && n < maxCPUIDEntries {
			continue
		}
		if err != nil {
			return nil, err
		}
		got := (*cpuid2Header)(unsafe.Pointer(&buf[0])).NEnt
		if int(got) > n {
			got = uint32(n)
		}
		return append([]CPUIDEntry2(nil), entries[:got]...), nil
	}
}

// newCPUIDBuf makes a struct kvm_cpuid2 with room for n entries.
func newCPUIDBuf(n int) ([]byte, []CPUIDEntry2) {
	hdr := int(unsafe.Sizeof(cpuid2Header{}))
	buf := alignedBuf(hdr + n*int(unsafe.Sizeof(CPUIDEntry2{})))
	(*cpuid2Header)(unsafe.Pointer(&buf[0])).NEnt = uint32(n)
	var entries []CPUIDEntry2
	if n > 0 {
		entries = unsafe.Slice((*CPUIDEntry2)(unsafe.Pointer(&buf[hdr])), n)
	}
	return buf, entries
}

// CreateVM is KVM_CREATE_VM (default machine type).
func (s *System) CreateVM() (*VM, error) {
	size, err := s.VCPUMmapSize()
	if err != nil {
		return nil, err
	}
	fd, err := ioctlVal(s.fd, "KVM_CREATE_VM", kvmCreateVM, 0)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	return &VM{fd: fd, runSize: size}, nil
}
