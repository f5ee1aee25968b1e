package vfiouser_test

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"godvm/vfio"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/testdev"
)

// FuzzServer feeds a hostile client's byte stream to the server (after a
// valid VERSION): short messages, bad sizes, unknown commands, bogus
// payloads, and an fd of the wrong kind attached to the first message. The
// server must answer or hang up, never panic or hang.
//
// Input: byte 0 picks the fd attached to the stream's first message (0 none,
// 1 /dev/null, 2 an eventfd, 3 a 4 KiB memfd); the rest is the stream.
func FuzzServer(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		dev, err := testdev.New(false)
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		a, b, err := vfiouser.Socketpair()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		done := make(chan struct{})
		go func() {
			vfiouser.NewServer(dev, quiet).ServeConn(b)
			close(done)
		}()
		go io.Copy(io.Discard, a) // replies
		v := vfiouser.Version{Major: 0, Minor: 2}.Encode()
		a.Write(append(vfiouser.Header{Command: vfiouser.CmdVersion, Size: uint32(16 + len(v))}.Encode(nil), v...))
		var oob []byte
		if fd := fuzzFD(t, in[0]); fd >= 0 {
			defer unix.Close(fd)
			oob = unix.UnixRights(fd)
		}
		if len(in) > 1 {
			a.WriteMsgUnix(in[1:], oob, nil)
		}
		a.CloseWrite()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("server did not finish the stream")
		}
	})
}

func fuzzFD(t *testing.T, kind byte) int {
	var fd int
	var err error
	switch kind % 4 {
	case 0:
		return -1
	case 1:
		fd, err = unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	case 2:
		fd, err = unix.Eventfd(0, unix.EFD_CLOEXEC)
	case 3:
		fd, err = unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC)
		if err == nil {
			err = unix.Ftruncate(fd, 4096)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// FuzzClient answers the client's requests from fuzz records, so hostile
// replies reach every decoder of the client: VERSION, DEVICE_GET_INFO,
// region infos (with cap chains and fds), IRQ infos, region reads.
//
// Record: flags byte (0x20: set the ERROR flag; 0x40: attach a memfd; 0x80:
// write the payload raw, without a header, then hang up), errno byte, u16 length, payload.
func FuzzClient(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b, err := vfiouser.Socketpair()
		if err != nil {
			t.Fatal(err)
		}
		go fakeServer(b, in)
		c, err := vfiouser.NewClient(a, "fuzz", vfiouser.WithLogger(quiet), vfiouser.WithTimeout(2*time.Second))
		if err != nil {
			return
		}
		defer c.Close()
		for i := uint32(0); i < c.Info().NumRegions && i < 10; i++ {
			ri, err := c.RegionInfo(i)
			if err == nil && len(ri.Areas) > 0 && ri.Areas[0].Size <= 1<<20 {
				if m, err := c.MapRegion(i, ri.Areas[0].Offset, ri.Areas[0].Size); err == nil {
					c.UnmapRegion(m)
				}
			}
		}
		for i := uint32(0); i < c.Info().NumIRQs && i < 6; i++ {
			c.IRQInfo(i)
		}
		var p [64]byte
		c.ReadRegion(vfio.PCIConfigRegionIndex, 0, p[:])
		c.WriteRegion(0, 8, p[:8])
		c.Reset()
	})
}

func fakeServer(s *net.UnixConn, in []byte) {
	defer s.Close()
	var h [16]byte
	for {
		if _, err := io.ReadFull(s, h[:]); err != nil {
			return
		}
		size := binary.NativeEndian.Uint32(h[4:])
		if size < 16 || size > 1<<21 {
			return
		}
		if _, err := io.CopyN(io.Discard, s, int64(size-16)); err != nil {
			return
		}
		if len(in) < 4 {
			return
		}
		flags, errno, n := in[0], in[1], int(binary.LittleEndian.Uint16(in[2:]))
		in = in[4:]
		n = min(n, len(in))
		payload := in[:n]
		in = in[n:]
		var out []byte
		if flags&0x80 != 0 {
			out = payload
		} else {
			rh := vfiouser.Header{MsgID: binary.NativeEndian.Uint16(h[0:]), Command: binary.NativeEndian.Uint16(h[2:]),
				Size: uint32(16 + n), Flags: vfiouser.FlagReply | uint32(flags&0x20), Error: uint32(errno)}
			out = append(rh.Encode(nil), payload...)
		}
		var oob []byte
		if flags&0x40 != 0 {
			fd, err := unix.MemfdCreate("fuzz-region", unix.MFD_CLOEXEC)
			if err == nil {
				unix.Ftruncate(fd, 1<<16)
				oob = unix.UnixRights(fd)
				defer unix.Close(fd)
			}
		}
		if len(out) > 0 {
			if _, _, err := s.WriteMsgUnix(out, oob, nil); err != nil {
				return
			}
		}
		if flags&0x80 != 0 {
			return // framing is broken now: hang up rather than wait
		}
	}
}
