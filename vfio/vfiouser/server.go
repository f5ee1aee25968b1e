package vfiouser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"godvm/devices/platform"
	"godvm/guestmem"
	"godvm/vfio"
)

// Backend is the device a Server exposes. Its methods are called from the
// connection's goroutine, one at a time; region accesses carry offsets the
// server has already checked against RegionInfo's size.
type Backend interface {
	Info() vfio.DeviceInfo
	RegionInfo(index uint32) (vfio.RegionInfo, error)
	// RegionFD returns the fd through which the region's mmappable areas are
	// offered, and the region's offset in it; ok is false if there is none.
	RegionFD(index uint32) (fd int, offset uint64, ok bool)
	IRQInfo(index uint32) (vfio.IRQInfo, error)
	ReadRegion(index uint32, off uint64, p []byte) error
	WriteRegion(index uint32, off uint64, p []byte) error
	Reset() error
	// Attach hands the backend its host: interrupt triggers and guest memory.
	Attach(h Host)
	// SetMemory is called whenever the DMA-mapped guest memory changes (nil:
	// none). When it returns, the backend must no longer touch the old memory.
	SetMemory(m *guestmem.Memory)
}

// ClientResetter is a Backend that puts its device back to its reset state
// when a client disconnects (before its memory is unmapped), so the next
// client on the socket finds nothing the previous one left.
type ClientResetter interface {
	ClientGone()
}

// Host is what the server offers its backend.
type Host interface {
	// Trigger signals vector of IRQ index (the client's eventfd), if bound.
	Trigger(index, vector uint32)
}

// Server serves one Backend to one client at a time.
type Server struct {
	b   Backend
	log *slog.Logger

	// HandshakeTimeout bounds how long a connected client may take to send
	// VERSION (default DefaultHandshakeTimeout). Clients are served one at
	// a time, so without it a client that connects and says nothing would
	// keep every other client waiting for good.
	HandshakeTimeout time.Duration

	irqMu sync.Mutex // guards irqs; Trigger may run from backend goroutines
	irqs  map[uint32][]*platform.EventFD
	mu    sync.Mutex // guards maps
	maps  []dmaMapping
}

type dmaMapping struct {
	addr, size uint64
	host       []byte
}

// DefaultHandshakeTimeout is Server.HandshakeTimeout's default.
const DefaultHandshakeTimeout = 10 * time.Second

// NewServer wraps a backend.
func NewServer(b Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{b: b, log: log, irqs: map[uint32][]*platform.EventFD{}, HandshakeTimeout: DefaultHandshakeTimeout}
	b.Attach(s)
	return s
}

// Trigger implements Host.
func (s *Server) Trigger(index, vector uint32) {
	s.irqMu.Lock()
	defer s.irqMu.Unlock()
	v := s.irqs[index]
	if int(vector) < len(v) && v[vector] != nil {
		v[vector].Signal()
	}
}

// Listen serves clients on a listener, one after another, until it closes.
func (s *Server) Listen(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		s.log.Info("vfio-user client connected")
		err = s.ServeConn(uc)
		s.log.Info("vfio-user client disconnected", "err", err)
	}
}

// ServeConn serves one client until it disconnects or breaks framing. On
// return all client memory is unmapped and IRQ fds are closed; the device
// state is kept unless the backend is a ClientResetter.
func (s *Server) ServeConn(nc *net.UnixConn) error {
	c := newConn(nc)
	defer s.disconnect()
	defer c.close()
	versioned := false
	if s.HandshakeTimeout > 0 {
		nc.SetReadDeadline(time.Now().Add(s.HandshakeTimeout))
	}
	for {
		m, err := c.recv()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !versioned && errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("vfio-user: no VERSION from the client within %v", s.HandshakeTimeout)
			}
			return err
		}
		if m.IsReply() {
			closeFDs(m.FDs)
			s.log.Warn("vfio-user: unexpected reply from client", "id", m.MsgID, "command", m.Command)
			continue
		}
		var payload []byte
		var fds []int
		var errno unix.Errno
		if !versioned && m.Command != CmdVersion {
			closeFDs(m.FDs)
			errno = unix.EINVAL
		} else {
			payload, fds, errno = s.handle(&m)
		}
		if m.Command == CmdVersion && errno == 0 && !versioned {
			versioned = true
			nc.SetReadDeadline(time.Time{})
		}
		if m.Command == CmdVersion && errno != 0 {
			// The spec: a server that cannot accept the version closes.
			return fmt.Errorf("vfio-user: client version refused")
		}
		if m.Flags&FlagNoReply != 0 && errno == 0 {
			continue
		}
		h := Header{MsgID: m.MsgID, Command: m.Command, Flags: FlagReply}
		if errno != 0 {
			h.Flags |= FlagError
			h.Error = uint32(errno)
			payload, fds = nil, nil
		}
		if err := c.send(h, payload, fds); err != nil {
			return err
		}
	}
}

// handle runs one command. It owns m.FDs: every fd is either kept or closed.
func (s *Server) handle(m *Msg) ([]byte, []int, unix.Errno) {
	fds := m.FDs
	m.FDs = nil
	takesFDs := m.Command == CmdDMAMap || m.Command == CmdSetIRQs
	if !takesFDs && len(fds) > 0 {
		closeFDs(fds)
		return nil, nil, unix.EINVAL
	}
	p := m.Payload
	switch m.Command {
	case CmdVersion:
		v, err := DecodeVersion(p)
		if err != nil || v.Major != VersionMajor {
			s.log.Warn("vfio-user: refusing client", "major", v.Major, "minor", v.Minor, "err", err)
			return nil, nil, unix.ENOTSUP
		}
		r := Version{Major: VersionMajor, Minor: min(v.Minor, VersionMinor),
			Caps: Caps{MaxMsgFDs: MaxFDsAccepted, MaxDataXferSize: DefaultMaxDataXferSize}}
		return r.Encode(), nil, 0
	case CmdDMAMap:
		return nil, nil, s.dmaMap(p, fds)
	case CmdDMAUnmap:
		u, err := DecodeDMAUnmap(p)
		if err != nil {
			return nil, nil, unix.EINVAL
		}
		if e := s.dmaUnmap(u); e != 0 {
			return nil, nil, e
		}
		return p[:24:24], nil, 0 // the original entry, as the spec asks
	case CmdDeviceGetInfo:
		if len(p) < 16 {
			return nil, nil, unix.EINVAL
		}
		i := s.b.Info()
		out := binary.NativeEndian.AppendUint32(nil, 16)
		out = binary.NativeEndian.AppendUint32(out, i.Flags)
		out = binary.NativeEndian.AppendUint32(out, i.NumRegions)
		return binary.NativeEndian.AppendUint32(out, i.NumIRQs), nil, 0
	case CmdGetRegionInfo:
		return s.regionInfo(p)
	case CmdGetRegionIOFDs:
		if len(p) < 16 {
			return nil, nil, unix.EINVAL
		}
		idx := binary.NativeEndian.Uint32(p[8:])
		if _, err := s.b.RegionInfo(idx); err != nil {
			return nil, nil, unix.EINVAL
		}
		out := binary.NativeEndian.AppendUint32(nil, 16)
		out = binary.NativeEndian.AppendUint32(out, 0)
		out = binary.NativeEndian.AppendUint32(out, idx)
		return binary.NativeEndian.AppendUint32(out, 0), nil, 0
	case CmdGetIRQInfo:
		if len(p) < 16 {
			return nil, nil, unix.EINVAL
		}
		ii, err := s.b.IRQInfo(binary.NativeEndian.Uint32(p[8:]))
		if err != nil {
			return nil, nil, unix.EINVAL
		}
		out := binary.NativeEndian.AppendUint32(nil, 16)
		out = binary.NativeEndian.AppendUint32(out, ii.Flags)
		out = binary.NativeEndian.AppendUint32(out, ii.Index)
		return binary.NativeEndian.AppendUint32(out, ii.Count), nil, 0
	case CmdSetIRQs:
		return nil, nil, s.setIRQs(p, fds)
	case CmdRegionRead, CmdRegionWrite:
		return s.regionAccess(m.Command, p)
	case CmdDeviceReset:
		if err := s.b.Reset(); err != nil {
			return nil, nil, unix.EIO
		}
		return nil, nil, 0
	}
	closeFDs(fds)
	return nil, nil, unix.ENOTSUP
}

func (s *Server) regionInfo(p []byte) ([]byte, []int, unix.Errno) {
	if len(p) < vfio.RegionInfoSize {
		return nil, nil, unix.EINVAL
	}
	argsz := binary.NativeEndian.Uint32(p)
	idx := binary.NativeEndian.Uint32(p[8:])
	info, err := s.b.RegionInfo(idx)
	if err != nil {
		return nil, nil, unix.EINVAL
	}
	fd, off, hasFD := s.b.RegionFD(idx)
	if !hasFD {
		info.Flags &^= vfio.RegionFlagMmap
		info.Areas = nil
	}
	out := vfio.EncodeRegionInfo(info, off)
	if uint32(len(out)) > argsz {
		// Too small: say how much is needed, drop the caps and the fd.
		out = out[:vfio.RegionInfoSize]
		binary.NativeEndian.PutUint32(out[4:], binary.NativeEndian.Uint32(out[4:])&^vfio.RegionFlagCaps)
		binary.NativeEndian.PutUint32(out[12:], 0)
		return out, nil, 0
	}
	if hasFD && info.Mappable() {
		return out, []int{fd}, 0
	}
	return out, nil, 0
}

func (s *Server) regionAccess(cmd uint16, p []byte) ([]byte, []int, unix.Errno) {
	ra, data, err := DecodeRegionAccess(p)
	if err != nil || ra.Count > DefaultMaxDataXferSize {
		return nil, nil, unix.EINVAL
	}
	info, err := s.b.RegionInfo(ra.Region)
	if err != nil {
		return nil, nil, unix.EINVAL
	}
	end := ra.Offset + uint64(ra.Count)
	if end < ra.Offset || end > info.Size {
		return nil, nil, unix.EINVAL
	}
	if cmd == CmdRegionRead {
		if !info.Readable() {
			return nil, nil, unix.EINVAL
		}
		out := make([]byte, 16+ra.Count)
		copy(out, p[:16])
		if err := s.b.ReadRegion(ra.Region, ra.Offset, out[16:]); err != nil {
			return nil, nil, backendErrno(err)
		}
		return out, nil, 0
	}
	if !info.Writable() || uint64(len(data)) != uint64(ra.Count) {
		return nil, nil, unix.EINVAL
	}
	if err := s.b.WriteRegion(ra.Region, ra.Offset, data); err != nil {
		return nil, nil, backendErrno(err)
	}
	return p[:16:16], nil, 0
}

// backendErrno is the error reply for a failed region access: the errno a
// backend returned (EAGAIN: a DMWr it did not accept, vfio.DMWrRegionType),
// EIO for anything else.
func backendErrno(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) && e != 0 {
		return e
	}
	return unix.EIO
}

const maxDMAMaps = 65535

func (s *Server) dmaMap(p []byte, fds []int) unix.Errno {
	defer closeFDs(fds) // the mapping keeps the memory; the fd is not needed
	m, err := DecodeDMAMap(p)
	if err != nil || m.Size == 0 || m.Address+m.Size < m.Address || m.Address%4096 != 0 || m.Size%4096 != 0 || m.Offset%4096 != 0 {
		return unix.EINVAL
	}
	if len(fds) != 1 {
		// Without an fd we would need DMA_READ/WRITE for every access: not offered.
		return unix.ENOTSUP
	}
	if m.Size > 1<<46 || m.Offset > 1<<62 {
		return unix.EINVAL
	}
	if e := checkDMAFile(fds[0], m.Offset, m.Size); e != 0 {
		s.log.Warn("vfio-user: DMA_MAP beyond the end of the client's file", "addr", m.Address, "size", m.Size, "offset", m.Offset)
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.maps) >= maxDMAMaps {
		return unix.ENOSPC
	}
	for _, x := range s.maps {
		if m.Address < x.addr+x.size && x.addr < m.Address+m.Size {
			return unix.EEXIST
		}
	}
	prot := unix.PROT_READ | unix.PROT_WRITE
	host, err := unix.Mmap(fds[0], int64(m.Offset), int(m.Size), prot, unix.MAP_SHARED)
	if err != nil {
		s.log.Warn("vfio-user: DMA_MAP mmap failed", "addr", m.Address, "size", m.Size, "err", err)
		if e, ok := err.(unix.Errno); ok {
			return e
		}
		return unix.EINVAL
	}
	s.maps = append(s.maps, dmaMapping{m.Address, m.Size, host})
	s.publishLocked()
	s.log.Debug("vfio-user: DMA mapped", "iova", fmt.Sprintf("%#x", m.Address), "size", m.Size)
	return 0
}

// checkDMAFile refuses a mapping of [off, off+size) that the client's file
// does not back. mmap accepts such a mapping, but the first touch of a page
// past the end of the file is a SIGBUS, which would kill the server (the
// device model would take it when a descriptor points there).
//
// Only regular files have a meaningful size (memfd, tmpfs, hugetlbfs: what
// QEMU's memory backends, cloud-hypervisor and godvm pass); a character
// device such as /dev/dax has st_size 0 and is left to mmap to judge.
//
// A file that is shrunk after the check is not prevented here: sealing it
// (F_SEAL_SHRINK) would change the client's own file, is impossible for
// hugetlbfs/tmpfs files (QEMU memory-backend-file) and is not something the
// protocol lets a server do, so refusing unsealable fds would refuse
// ordinary clients. Instead the code that touches DMA memory turns the
// fault into an error (devices/dsa runs descriptors with
// debug.SetPanicOnFault), so a shrinking client only hurts its own DMA.
func checkDMAFile(fd int, off, size uint64) unix.Errno {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		if e, ok := err.(unix.Errno); ok {
			return e
		}
		return unix.EINVAL
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0
	}
	if st.Size < 0 || off+size < off || off+size > uint64(st.Size) {
		return unix.EINVAL
	}
	return 0
}

func (s *Server) dmaUnmap(u DMAUnmap) unix.Errno {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.maps {
		if x.addr == u.Address && x.size == u.Size {
			s.maps = append(s.maps[:i], s.maps[i+1:]...)
			s.publishLocked() // the backend lets go of x before we unmap it
			unix.Munmap(x.host)
			return 0
		}
	}
	return unix.ENOENT
}

// publishLocked hands the backend a Memory over the current mappings.
func (s *Server) publishLocked() {
	if len(s.maps) == 0 {
		s.b.SetMemory(nil)
		return
	}
	sort.Slice(s.maps, func(i, j int) bool { return s.maps[i].addr < s.maps[j].addr })
	rs := make([]guestmem.Region, len(s.maps))
	for i, x := range s.maps {
		rs[i] = guestmem.NewRegion(x.addr, x.host, -1, 0)
	}
	mem, err := guestmem.FromBytes(rs...)
	if err != nil { // cannot happen: overlaps are refused above
		s.log.Error("vfio-user: building guest memory", "err", err)
		return
	}
	s.b.SetMemory(mem)
}

const (
	irqDataNone    = 0x1
	irqDataBool    = 0x2
	irqDataEventFD = 0x4
	irqActMask     = 0x8
	irqActUnmask   = 0x10
	irqActTrigger  = 0x20
)

func (s *Server) setIRQs(p []byte, fds []int) unix.Errno {
	ok := false
	defer func() {
		if !ok {
			closeFDs(fds)
		}
	}()
	if len(p) < 20 {
		return unix.EINVAL
	}
	flags := binary.NativeEndian.Uint32(p[4:])
	index := binary.NativeEndian.Uint32(p[8:])
	start := binary.NativeEndian.Uint32(p[12:])
	count := binary.NativeEndian.Uint32(p[16:])
	data, action := flags&0x7, flags&0x38
	if data&(data-1) != 0 || data == 0 || action&(action-1) != 0 || action == 0 || flags&^0x3f != 0 {
		return unix.EINVAL
	}
	ii, err := s.b.IRQInfo(index)
	if err != nil {
		return unix.EINVAL
	}
	if uint64(start)+uint64(count) > uint64(ii.Count) {
		return unix.EINVAL
	}
	if action != irqActTrigger {
		// Mask/unmask: vectors here are not maskable on the device side; the
		// client emulates MSI-X masking. Accept and ignore.
		return 0
	}
	s.irqMu.Lock()
	defer s.irqMu.Unlock()
	vec := s.irqs[index]
	if len(vec) < int(ii.Count) {
		vec = append(vec, make([]*platform.EventFD, int(ii.Count)-len(vec))...)
		s.irqs[index] = vec
	}
	switch data {
	case irqDataNone:
		if count == 0 {
			for i, e := range vec {
				if e != nil {
					e.Close()
					vec[i] = nil
				}
			}
			return 0
		}
		for i := start; i < start+count; i++ {
			if vec[i] != nil {
				vec[i].Signal()
			}
		}
		return 0
	case irqDataBool:
		if uint64(len(p)) < 20+uint64(count) {
			return unix.EINVAL
		}
		for i := uint32(0); i < count; i++ {
			if p[20+i] != 0 && vec[start+i] != nil {
				vec[start+i].Signal()
			}
		}
		return 0
	}
	// DATA_EVENTFD: fds in SCM_RIGHTS; none attached de-assigns.
	if len(fds) != 0 && uint32(len(fds)) != count {
		return unix.EINVAL
	}
	for _, fd := range fds {
		if !isEventFD(fd) {
			s.log.Warn("vfio-user: SET_IRQS with an fd that is not an eventfd", "index", index)
			return unix.EINVAL
		}
	}
	for i := uint32(0); i < count; i++ {
		if old := vec[start+i]; old != nil {
			old.Close()
			vec[start+i] = nil
		}
		if len(fds) != 0 {
			vec[start+i] = platform.EventFDFrom(fds[i])
		}
	}
	ok = true
	return 0
}

// isEventFD reports whether fd is an eventfd. Triggering an interrupt
// writes 8 bytes to it while irqMu is held; anything else the client might
// pass (the write end of a full pipe, a FIFO, a socket) can block that write
// for good, and a regular file would just grow. An eventfd's write only
// blocks when its counter would pass 2^64-2, which adding 1 per interrupt
// never reaches.
//
// /proc/self/fd names an eventfd "anon_inode:[eventfd]". Where /proc is not
// mounted, an anonymous inode (no file type bits in st_mode) is accepted:
// writes to the other kinds (signalfd, timerfd, epoll, ...) fail at once
// rather than block; pipes, FIFOs, sockets and files all have a type.
func isEventFD(fd int) bool {
	var buf [64]byte
	if n, err := unix.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd), buf[:]); err == nil {
		return string(buf[:n]) == "anon_inode:[eventfd]"
	}
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == 0
}

// disconnect forgets the client: unmap memory, close IRQ fds.
func (s *Server) disconnect() {
	s.irqMu.Lock()
	for _, v := range s.irqs {
		for i, e := range v {
			if e != nil {
				e.Close()
				v[i] = nil
			}
		}
	}
	s.irqMu.Unlock()
	if r, ok := s.b.(ClientResetter); ok {
		r.ClientGone()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.maps
	s.maps = nil
	s.b.SetMemory(nil)
	for _, x := range old {
		unix.Munmap(x.host)
	}
}
