package kernel

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sys is the narrow system-call seam of the kernel back end: every open,
// ioctl, pread/pwrite, mmap and sysfs lookup goes through it, so the flow
// logic is tested against a fake. RealSys is the thin real implementation.
type Sys interface {
	Open(path string, flags int) (int, error)
	Close(fd int) error
	// Ioctl passes arg's address (nil: 0) and returns the ioctl's result.
	Ioctl(fd int, req uint32, arg []byte) (int, error)
	// IoctlInt passes val by value.
	IoctlInt(fd int, req uint32, val uintptr) (int, error)
	Pread(fd int, p []byte, off int64) (int, error)
	Pwrite(fd int, p []byte, off int64) (int, error)
	// Mmap maps size bytes of fd at off, shared, read/write.
	Mmap(fd int, off int64, size int) ([]byte, error)
	Munmap(b []byte) error
	Readlink(path string) (string, error)
	// ReadDir lists the names in a directory.
	ReadDir(path string) ([]string, error)
	// Exists reports whether path exists.
	Exists(path string) bool
}

// RealSys is Sys over the running kernel.
type RealSys struct{}

func (RealSys) Open(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, err
	}
}

func (RealSys) Close(fd int) error { return unix.Close(fd) }

func (RealSys) Ioctl(fd int, req uint32, arg []byte) (int, error) {
	var p unsafe.Pointer
	if len(arg) > 0 {
		p = unsafe.Pointer(&arg[0])
	}
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(p))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func (RealSys) IoctlInt(fd int, req uint32, val uintptr) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), val)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func (RealSys) Pread(fd int, p []byte, off int64) (int, error)  { return unix.Pread(fd, p, off) }
func (RealSys) Pwrite(fd int, p []byte, off int64) (int, error) { return unix.Pwrite(fd, p, off) }

func (RealSys) Mmap(fd int, off int64, size int) ([]byte, error) {
	return unix.Mmap(fd, off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

func (RealSys) Munmap(b []byte) error { return unix.Munmap(b) }

func (RealSys) Readlink(path string) (string, error) { return os.Readlink(path) }

func (RealSys) ReadDir(path string) ([]string, error) {
	es, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = e.Name()
	}
	return names, nil
}

func (RealSys) Exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
