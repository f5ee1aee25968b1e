package virtio

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vnetHdrLen is the virtio 1.x net header (struct virtio_net_hdr_v1, with
// num_buffers): what the tap is told to expect and produce.
const vnetHdrLen = 12

// Tap is an open tap interface in vnet-header mode.
type Tap struct {
	f    *os.File
	Name string
}

// ifreq as TUNSETIFF wants it: name[16], flags u16, padding.
type ifreqFlags struct {
	Name  [unix.IFNAMSIZ]byte
	Flags uint16
	_     [22]byte
}

// OpenTap attaches to the tap called name, creating it if it does not exist
// (that needs CAP_NET_ADMIN), with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR.
func OpenTap(name string) (*Tap, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap name %q: must be 1 to %d bytes", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: open /dev/net/tun: %w", name, err)
	}
	var req ifreqFlags
	copy(req.Name[:], name)
	req.Flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, e)
	}
	hdr := int32(vnetHdrLen)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETVNETHDRSZ, uintptr(unsafe.Pointer(&hdr))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETVNETHDRSZ: %w", name, e)
	}
	// No offloads: the guest is offered none, so the tap must not hand it
	// GSO packets or partial checksums.
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETOFFLOAD, 0); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETOFFLOAD: %w", name, e)
	}
	n := string(req.Name[:])
	for i := range n {
		if n[i] == 0 {
			n = n[:i]
			break
		}
	}
	return &Tap{f: os.NewFile(uintptr(fd), "/dev/net/tun"), Name: n}, nil
}

// Fd is the tap's (non-blocking) file descriptor.
func (t *Tap) Fd() int { return int(t.f.Fd()) }

// Close detaches from the tap (a tap godvm created goes away).
func (t *Tap) Close() error { return t.f.Close() }
