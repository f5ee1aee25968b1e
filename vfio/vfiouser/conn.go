package vfiouser

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// conn frames vfio-user messages on a stream socket.
type conn struct {
	c   *net.UnixConn
	wmu sync.Mutex
	oob []byte
	hdr [HeaderSize]byte
}

func newConn(c *net.UnixConn) *conn {
	return &conn{c: c, oob: make([]byte, unix.CmsgSpace(4*MaxFDsAccepted))}
}

// ConnFromFD wraps a connected stream socket fd (it takes ownership).
func ConnFromFD(fd int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("vfio-user: %s is not a UNIX socket", name)
	}
	return uc, nil
}

// Socketpair returns two connected stream sockets (tests, in-process servers).
func Socketpair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	a, err := ConnFromFD(fds[0], "vfio-user-a")
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	b, err := ConnFromFD(fds[1], "vfio-user-b")
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// send writes one message; fds go as SCM_RIGHTS with its first byte.
func (c *conn) send(h Header, payload []byte, fds []int) error {
	h.Size = uint32(HeaderSize + len(payload))
	buf := make([]byte, 0, h.Size)
	buf = append(h.Encode(buf), payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for len(buf) > 0 {
		n, _, err := c.c.WriteMsgUnix(buf, oob, nil)
		if err != nil {
			return err
		}
		buf, oob = buf[n:], nil
	}
	return nil
}

// readFull fills b, collecting any fds that arrive with it.
func (c *conn) readFull(b []byte, fds *[]int) error {
	for got := 0; got < len(b); {
		n, oobn, flags, _, err := c.c.ReadMsgUnix(b[got:], c.oob)
		if oobn > 0 {
			*fds = append(*fds, parseRights(c.oob[:oobn])...)
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return fmt.Errorf("vfio-user: peer passed more than %d fds", MaxFDsAccepted)
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if got == 0 {
				return io.EOF
			}
			return io.ErrUnexpectedEOF
		}
		got += n
	}
	return nil
}

func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_RIGHTS {
			f, err := unix.ParseUnixRights(&m)
			if err == nil {
				fds = append(fds, f...)
			}
		}
	}
	return fds
}

// recv reads one message. A framing error (bad size, EOF, too many fds)
// leaves the stream unusable and is returned; received fds are closed then.
func (c *conn) recv() (Msg, error) {
	var fds []int
	fail := func(err error) (Msg, error) {
		closeFDs(fds)
		return Msg{}, err
	}
	if err := c.readFull(c.hdr[:], &fds); err != nil {
		return fail(err)
	}
	h, err := DecodeHeader(c.hdr[:])
	if err != nil {
		return fail(err)
	}
	p := make([]byte, h.Size-HeaderSize)
	if err := c.readFull(p, &fds); err != nil {
		return fail(err)
	}
	return Msg{Header: h, Payload: p, FDs: fds}, nil
}

func (c *conn) close() error { return c.c.Close() }

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
