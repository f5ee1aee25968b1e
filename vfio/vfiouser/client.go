package vfiouser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"godvm/guestmem"
	"godvm/vfio"
)

// Client is a vfio-user client: a vfio.Device whose device lives in a
// server process. When the server goes away (EOF, EPIPE, a reply that does
// not come) the device is marked failed once, an error is logged, OnFail
// runs, and from then on reads return all-ones and every call ErrFailed.
type Client struct {
	name    string
	c       *conn
	log     *slog.Logger
	timeout time.Duration
	onFail  func(error)

	server Version
	info   vfio.DeviceInfo

	mu      sync.Mutex
	nextID  uint16
	pending map[uint16]chan Msg
	regions map[uint32]*cregion
	dma     []*guestmem.Region // mapped guest RAM (for DMA_READ/WRITE from the server)

	failed    atomic.Pointer[error]
	closed    atomic.Bool
	ready     atomic.Bool // set once Dial succeeded: failures before it are Dial's error
	readerEnd chan struct{}
}

type cregion struct {
	info   vfio.RegionInfo
	offset uint64
	fd     int
}

// Option configures a Client.
type Option func(*Client)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithTimeout bounds how long a request waits for its reply before the
// device is declared failed (default 10 s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithOnFail runs f once when the device fails.
func WithOnFail(f func(error)) Option { return func(c *Client) { c.onFail = f } }

// Dial connects to a vfio-user server's socket and negotiates the version.
func Dial(socket string, opts ...Option) (*Client, error) {
	if _, err := os.Stat(socket); err != nil {
		return nil, fmt.Errorf("vfio-user: socket %s: %w (is 'godvm dsa-server --socket %s' running?)", socket, errors.Unwrap(err), socket)
	}
	nc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vfio-user: connect to %s: %w", socket, err)
	}
	return NewClient(nc, socket, opts...)
}

// NewClient runs the client over an already connected socket. name is used
// in messages.
func NewClient(nc *net.UnixConn, name string, opts ...Option) (*Client, error) {
	c := &Client{name: name, c: newConn(nc), log: slog.Default(), timeout: 10 * time.Second,
		pending: map[uint16]chan Msg{}, regions: map[uint32]*cregion{}, readerEnd: make(chan struct{})}
	for _, o := range opts {
		o(c)
	}
	go c.reader()
	if err := c.negotiate(); err != nil {
		c.closeConn()
		return nil, err
	}
	if err := c.getInfo(); err != nil {
		c.closeConn()
		return nil, err
	}
	c.ready.Store(true)
	return c, nil
}

func (c *Client) negotiate() error {
	my := Version{Major: VersionMajor, Minor: VersionMinor, Caps: Caps{MaxMsgFDs: MaxFDsAccepted, MaxDataXferSize: DefaultMaxDataXferSize}}
	p, err := c.callNoFDs(CmdVersion, my.Encode()) // fds a server attaches are not ours to keep
	if err != nil {
		return fmt.Errorf("vfio-user: version negotiation with %s: %w", c.name, err)
	}
	v, err := DecodeVersion(p)
	if err != nil {
		return fmt.Errorf("vfio-user: %s: %w", c.name, err)
	}
	if v.Major != VersionMajor || v.Minor > VersionMinor {
		return fmt.Errorf("vfio-user: %s speaks protocol version %d.%d; godvm speaks %d.0-%d.%d",
			c.name, v.Major, v.Minor, VersionMajor, VersionMajor, VersionMinor)
	}
	c.server = v
	return nil
}

// ServerVersion is what the server answered in VERSION.
func (c *Client) ServerVersion() Version { return c.server }

// reader dispatches replies and serves server-to-client commands.
func (c *Client) reader() {
	defer close(c.readerEnd)
	for {
		m, err := c.c.recv()
		if err != nil {
			if !c.closed.Load() {
				c.fail(err)
			}
			return
		}
		if !m.IsReply() {
			c.serveCommand(m)
			continue
		}
		c.mu.Lock()
		ch := c.pending[m.MsgID]
		delete(c.pending, m.MsgID)
		c.mu.Unlock()
		if ch == nil {
			c.log.Warn("vfio-user: reply to no request", "server", c.name, "id", m.MsgID, "command", CommandName(m.Command))
			closeFDs(m.FDs)
			continue
		}
		ch <- m
	}
}

// fail marks the device failed (once) and wakes every waiter.
func (c *Client) fail(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		err = fmt.Errorf("connection closed by server: %w", err)
	}
	e := fmt.Errorf("%w: vfio-user server %s: %v", vfio.ErrFailed, c.name, err)
	if !c.failed.CompareAndSwap(nil, &e) {
		return
	}
	if c.ready.Load() {
		c.log.Error("vfio-user server "+c.name+" gone; device failed", "err", err)
	}
	c.mu.Lock()
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	c.c.close()
	if c.onFail != nil && c.ready.Load() {
		go c.onFail(e)
	}
}

// Failed returns the failure, or nil while the server answers.
func (c *Client) Failed() error {
	if e := c.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// call sends a command and waits for its reply; an error reply is a
// *RemoteError.
func (c *Client) call(cmd uint16, payload []byte, fds []int) ([]byte, []int, error) {
	if err := c.Failed(); err != nil {
		return nil, nil, err
	}
	if c.closed.Load() {
		return nil, nil, ErrClosed
	}
	ch := make(chan Msg, 1)
	c.mu.Lock()
	id := c.nextID
	c.nextID++
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.c.send(Header{MsgID: id, Command: cmd, Flags: FlagCommand}, payload, fds); err != nil {
		c.fail(err)
		return nil, nil, c.Failed()
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case m, ok := <-ch:
		if !ok {
			if err := c.Failed(); err != nil {
				return nil, nil, err
			}
			return nil, nil, ErrClosed
		}
		if m.Command != cmd {
			closeFDs(m.FDs)
			c.fail(fmt.Errorf("reply to %s carries command %d", CommandName(cmd), m.Command))
			return nil, nil, c.Failed()
		}
		if m.Flags&FlagError != 0 {
			closeFDs(m.FDs)
			return nil, nil, &RemoteError{Command: cmd, Errno: m.Error}
		}
		return m.Payload, m.FDs, nil
	case <-t.C:
		c.fail(fmt.Errorf("no reply to %s within %v", CommandName(cmd), c.timeout))
		select {
		case m, ok := <-ch: // the reply raced the timer: drop its fds
			if ok {
				closeFDs(m.FDs)
			}
		default:
		}
		return nil, nil, c.Failed()
	}
}

func (c *Client) callNoFDs(cmd uint16, payload []byte) ([]byte, error) {
	p, fds, err := c.call(cmd, payload, nil)
	closeFDs(fds)
	return p, err
}

// Info returns DEVICE_GET_INFO's answer (read at Dial).
func (c *Client) Info() vfio.DeviceInfo { return c.info }

func (c *Client) getInfo() error {
	req := make([]byte, 16)
	binary.NativeEndian.PutUint32(req, 16)
	p, err := c.callNoFDs(CmdDeviceGetInfo, req)
	if err != nil {
		return fmt.Errorf("vfio-user: %s: DEVICE_GET_INFO: %w", c.name, err)
	}
	if len(p) < 16 {
		return fmt.Errorf("vfio-user: %s: DEVICE_GET_INFO reply is %d bytes", c.name, len(p))
	}
	c.info = vfio.DeviceInfo{Flags: binary.NativeEndian.Uint32(p[4:]), NumRegions: binary.NativeEndian.Uint32(p[8:]), NumIRQs: binary.NativeEndian.Uint32(p[12:])}
	if c.info.NumRegions > 64 || c.info.NumIRQs > 64 {
		return fmt.Errorf("vfio-user: %s: implausible device (%d regions, %d IRQ indices)", c.name, c.info.NumRegions, c.info.NumIRQs)
	}
	return nil
}

func (c *Client) region(index uint32) (*cregion, error) {
	c.mu.Lock()
	r := c.regions[index]
	c.mu.Unlock()
	if r != nil {
		return r, nil
	}
	if index >= c.info.NumRegions {
		return nil, fmt.Errorf("vfio-user: %s: region %d does not exist (device has %d)", c.name, index, c.info.NumRegions)
	}
	argsz := uint32(vfio.RegionInfoSize + 256)
	var p []byte
	var fds []int
	for try := 0; ; try++ {
		req := make([]byte, vfio.RegionInfoSize)
		binary.NativeEndian.PutUint32(req[0:], argsz)
		binary.NativeEndian.PutUint32(req[8:], index)
		var err error
		if p, fds, err = c.call(CmdGetRegionInfo, req, nil); err != nil {
			return nil, err
		}
		if len(p) < vfio.RegionInfoSize {
			closeFDs(fds)
			return nil, fmt.Errorf("vfio-user: %s: region info reply is %d bytes", c.name, len(p))
		}
		need := binary.NativeEndian.Uint32(p)
		if need <= argsz || try == 1 || need > 1<<16 {
			break
		}
		closeFDs(fds) // truncated reply: ask again with room for the caps (and the fd)
		argsz = need
	}
	info, off, err := vfio.DecodeRegionInfo(p)
	if err != nil {
		closeFDs(fds)
		return nil, fmt.Errorf("%w (from %s)", err, c.name)
	}
	r = &cregion{info: info, offset: off, fd: -1}
	if len(fds) > 0 {
		r.fd = fds[0]
		closeFDs(fds[1:])
	}
	if r.fd < 0 {
		r.info.Areas = nil // nothing to mmap without an fd
	}
	c.mu.Lock()
	if old := c.regions[index]; old != nil {
		c.mu.Unlock()
		if r.fd >= 0 {
			unix.Close(r.fd)
		}
		return old, nil
	}
	c.regions[index] = r
	c.mu.Unlock()
	return r, nil
}

// RegionInfo describes a region; Areas is empty when the server offered no fd.
func (c *Client) RegionInfo(index uint32) (vfio.RegionInfo, error) {
	r, err := c.region(index)
	if err != nil {
		return vfio.RegionInfo{}, err
	}
	return r.info, nil
}

func (c *Client) maxXfer() int {
	n := int(c.server.Caps.MaxDataXferSize)
	if n <= 0 || n > DefaultMaxDataXferSize {
		n = DefaultMaxDataXferSize
	}
	return n
}

// ReadRegion reads with REGION_READ; on failure p is all-ones.
func (c *Client) ReadRegion(index uint32, off uint64, p []byte) error {
	err := c.readRegion(index, off, p)
	if err != nil {
		for i := range p {
			p[i] = 0xff
		}
	}
	return err
}

func (c *Client) readRegion(index uint32, off uint64, p []byte) error {
	for done := 0; done < len(p); {
		n := min(len(p)-done, c.maxXfer())
		ra := RegionAccess{Offset: off + uint64(done), Region: index, Count: uint32(n)}
		rep, err := c.callNoFDs(CmdRegionRead, ra.Encode(nil))
		if err != nil {
			return err
		}
		got, data, err := DecodeRegionAccess(rep)
		if err != nil || got.Count != uint32(n) || len(data) < n {
			return fmt.Errorf("vfio-user: %s: bad REGION_READ reply (%d bytes for %d)", c.name, len(rep), n)
		}
		copy(p[done:], data[:n])
		done += n
	}
	return nil
}

// WriteRegion writes with REGION_WRITE.
func (c *Client) WriteRegion(index uint32, off uint64, p []byte) error {
	for done := 0; done < len(p); {
		n := min(len(p)-done, c.maxXfer())
		ra := RegionAccess{Offset: off + uint64(done), Region: index, Count: uint32(n)}
		if _, err := c.callNoFDs(CmdRegionWrite, ra.Encode(p[done:done+n])); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// MapRegion mmaps part of a region through the fd the server offered.
func (c *Client) MapRegion(index uint32, off, size uint64) ([]byte, error) {
	r, err := c.region(index)
	if err != nil {
		return nil, err
	}
	if r.fd < 0 {
		return nil, fmt.Errorf("vfio-user: %s: region %d cannot be mapped (no fd offered)", c.name, index)
	}
	ok := false
	for _, a := range r.info.Areas {
		if size > 0 && off >= a.Offset && off+size <= a.Offset+a.Size && off+size > off {
			ok = true
		}
	}
	if !ok {
		return nil, fmt.Errorf("vfio-user: %s: region %d %#x+%#x is not in an mmappable area", c.name, index, off, size)
	}
	b, err := unix.Mmap(r.fd, int64(r.offset+off), int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("vfio-user: %s: mmap region %d: %w", c.name, index, err)
	}
	return b, nil
}

func (c *Client) UnmapRegion(b []byte) error { return unix.Munmap(b) }

// IRQInfo runs DEVICE_GET_IRQ_INFO.
func (c *Client) IRQInfo(index uint32) (vfio.IRQInfo, error) {
	req := make([]byte, 16)
	binary.NativeEndian.PutUint32(req, 16)
	binary.NativeEndian.PutUint32(req[8:], index)
	p, err := c.callNoFDs(CmdGetIRQInfo, req)
	if err != nil {
		return vfio.IRQInfo{}, err
	}
	if len(p) < 16 {
		return vfio.IRQInfo{}, fmt.Errorf("vfio-user: %s: IRQ info reply is %d bytes", c.name, len(p))
	}
	return vfio.IRQInfo{Index: binary.NativeEndian.Uint32(p[8:]), Flags: binary.NativeEndian.Uint32(p[4:]), Count: binary.NativeEndian.Uint32(p[12:])}, nil
}

func irqSetMsg(flags, index, start, count uint32) []byte {
	b := binary.NativeEndian.AppendUint32(nil, 20)
	b = binary.NativeEndian.AppendUint32(b, flags)
	b = binary.NativeEndian.AppendUint32(b, index)
	b = binary.NativeEndian.AppendUint32(b, start)
	return binary.NativeEndian.AppendUint32(b, count)
}

// SetIRQs sends DEVICE_SET_IRQS: runs of eventfds travel as SCM_RIGHTS (at
// most the server's max_msg_fds per message); runs of -1 go without fds,
// which de-assigns them; no fds disables the index.
func (c *Client) SetIRQs(index, start uint32, fds []int) error {
	const trigger, dataNone, dataEventFD = 0x20, 0x1, 0x4
	if len(fds) == 0 {
		_, err := c.callNoFDs(CmdSetIRQs, irqSetMsg(trigger|dataNone, index, 0, 0))
		return err
	}
	maxFDs := int(c.server.Caps.MaxMsgFDs)
	if maxFDs < 1 {
		maxFDs = 1
	}
	for i := 0; i < len(fds); {
		j := i + 1
		valid := fds[i] >= 0
		for j < len(fds) && (fds[j] >= 0) == valid && (!valid || j-i < maxFDs) {
			j++
		}
		var send []int
		if valid {
			send = fds[i:j]
		}
		if _, err := c.callNoFDs2(CmdSetIRQs, irqSetMsg(trigger|dataEventFD, index, start+uint32(i), uint32(j-i)), send); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// Reset runs DEVICE_RESET.
func (c *Client) Reset() error {
	_, err := c.callNoFDs(CmdDeviceReset, nil)
	return err
}

// DMAMap hands region r (its fd and offset) to the server at IOVA = GPA.
func (c *Client) DMAMap(r *guestmem.Region) error {
	m := DMAMap{Flags: DMAFlagRead | DMAFlagWrite, Offset: r.FdOffset, Address: r.GPA, Size: r.Size}
	var fds []int
	if r.Fd >= 0 {
		fds = []int{r.Fd}
	} else {
		m.Offset = 0 // no fd: the server uses DMA_READ/DMA_WRITE
	}
	if _, err := c.callNoFDs2(CmdDMAMap, m.Encode(), fds); err != nil {
		return err
	}
	c.mu.Lock()
	c.dma = append(c.dma, r)
	c.mu.Unlock()
	return nil
}

func (c *Client) callNoFDs2(cmd uint16, payload []byte, fds []int) ([]byte, error) {
	p, rfds, err := c.call(cmd, payload, fds)
	closeFDs(rfds)
	return p, err
}

// DMAUnmap removes a mapping made by DMAMap.
func (c *Client) DMAUnmap(r *guestmem.Region) error {
	if _, err := c.callNoFDs(CmdDMAUnmap, DMAUnmap{Address: r.GPA, Size: r.Size}.Encode()); err != nil {
		return err
	}
	c.mu.Lock()
	for i, x := range c.dma {
		if x == r {
			c.dma = append(c.dma[:i], c.dma[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	return nil
}

// serveCommand answers DMA_READ/DMA_WRITE from the server out of the mapped
// guest RAM; anything else gets ENOTSUP.
func (c *Client) serveCommand(m Msg) {
	closeFDs(m.FDs)
	reply := Header{MsgID: m.MsgID, Command: m.Command, Flags: FlagReply}
	var payload []byte
	errno := uint32(0)
	switch m.Command {
	case CmdDMARead, CmdDMAWrite:
		a, data, err := DecodeDMAAccess(m.Payload)
		if err != nil || a.Count > uint64(c.maxXfer()) {
			errno = uint32(unix.EINVAL)
			break
		}
		buf, err := c.dmaSlice(a.Address, a.Count)
		if err != nil {
			errno = uint32(unix.EFAULT)
			break
		}
		if m.Command == CmdDMARead {
			payload = append(m.Payload[:16:16], buf...)
		} else {
			if uint64(len(data)) < a.Count {
				errno = uint32(unix.EINVAL)
				break
			}
			copy(buf, data[:a.Count])
			payload = binary.NativeEndian.AppendUint64(nil, a.Address)
			payload = binary.NativeEndian.AppendUint32(payload, uint32(a.Count))
		}
	default:
		errno = uint32(unix.ENOTSUP)
	}
	if errno != 0 {
		reply.Flags |= FlagError
		reply.Error = errno
		payload = nil
	}
	if m.Flags&FlagNoReply != 0 {
		return
	}
	if err := c.c.send(reply, payload, nil); err != nil {
		c.fail(err)
	}
}

func (c *Client) dmaSlice(addr, n uint64) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.dma {
		if addr >= r.GPA && addr+n <= r.End() && addr+n >= addr {
			h := r.Host()
			if uint64(len(h)) != r.Size {
				break
			}
			return h[addr-r.GPA : addr-r.GPA+n], nil
		}
	}
	return nil, &guestmem.AccessError{GPA: addr, Len: n}
}

func (c *Client) closeConn() {
	c.closed.Store(true)
	c.c.close()
	<-c.readerEnd
}

// Close drops the connection and the region fds.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.c.close()
	<-c.readerEnd
	c.mu.Lock()
	for _, r := range c.regions {
		if r.fd >= 0 {
			unix.Close(r.fd)
		}
	}
	c.regions = map[uint32]*cregion{}
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	return nil
}

var _ vfio.Device = (*Client)(nil)
