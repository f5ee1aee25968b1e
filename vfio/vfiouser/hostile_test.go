package vfiouser_test

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"godvm/devices/platform"
	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/testdev"
)

// Regression tests for hostile vfio-user peers (issue 11, defects 1-5).

// isolated runs the calling test again in a child process and reports its
// result, so that a crash the test provokes (SIGBUS) fails this test
// instead of killing the package's run. It returns true in the child, which
// then runs the test's body.
func isolated(t *testing.T) bool {
	t.Helper()
	if os.Getenv("GODVM_ISOLATED_TEST") == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "GODVM_ISOLATED_TEST="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a child process: %v\n%s", t.Name(), err, out)
	}
	return false
}

// rawPeer speaks the protocol by hand (what a hostile client does).
type rawPeer struct {
	t  *testing.T
	c  *net.UnixConn
	id uint16
}

// newRawPeer serves dev on a socketpair and returns the client end, VERSION
// done.
func newRawPeer(t *testing.T, dev vfiouser.Backend) *rawPeer {
	a, b, err := vfiouser.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- vfiouser.NewServer(dev, quiet).ServeConn(b) }()
	t.Cleanup(func() {
		a.Close()
		<-done
	})
	p := &rawPeer{t: t, c: a}
	if h, _, _ := p.call(vfiouser.CmdVersion, vfiouser.Version{Major: 0, Minor: 2}.Encode(), nil); h.Flags&vfiouser.FlagError != 0 {
		t.Fatalf("VERSION refused: errno %d", h.Error)
	}
	return p
}

func (p *rawPeer) call(cmd uint16, payload []byte, fds []int) (vfiouser.Header, []byte, []int) {
	p.t.Helper()
	p.id++
	h := vfiouser.Header{MsgID: p.id, Command: cmd, Size: uint32(16 + len(payload))}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	p.c.SetDeadline(time.Now().Add(5 * time.Second))
	defer p.c.SetDeadline(time.Time{})
	if _, _, err := p.c.WriteMsgUnix(append(h.Encode(nil), payload...), oob, nil); err != nil {
		p.t.Fatalf("send %d: %v", cmd, err)
	}
	var got []int
	read := func(n int) []byte {
		b := make([]byte, n)
		for off := 0; off < n; {
			ob := make([]byte, unix.CmsgSpace(4*8))
			k, oobn, _, _, err := p.c.ReadMsgUnix(b[off:], ob)
			if oobn > 0 {
				msgs, _ := unix.ParseSocketControlMessage(ob[:oobn])
				for _, m := range msgs {
					if fs, err := unix.ParseUnixRights(&m); err == nil {
						got = append(got, fs...)
					}
				}
			}
			if err != nil || k == 0 {
				p.t.Fatalf("reply to %d: %v (%d bytes)", cmd, err, k)
			}
			off += k
		}
		return b
	}
	hb := read(16)
	rh := vfiouser.Header{MsgID: binary.NativeEndian.Uint16(hb), Command: binary.NativeEndian.Uint16(hb[2:]),
		Size: binary.NativeEndian.Uint32(hb[4:]), Flags: binary.NativeEndian.Uint32(hb[8:]), Error: binary.NativeEndian.Uint32(hb[12:])}
	var body []byte
	if rh.Size > 16 {
		body = read(int(rh.Size) - 16)
	}
	return rh, body, got
}

func (p *rawPeer) alive() {
	p.t.Helper()
	ra := vfiouser.RegionAccess{Offset: testdev.RegVersion, Region: 0, Count: 4}
	h, body, _ := p.call(vfiouser.CmdRegionRead, ra.Encode(nil), nil)
	if h.Flags&vfiouser.FlagError != 0 || len(body) != 20 || binary.LittleEndian.Uint32(body[16:]) != 0x100 {
		p.t.Fatalf("server no longer answers: flags %#x errno %d", h.Flags, h.Error)
	}
}

// Defect 1 (the server side): DMA_MAP of more than the client's file holds
// is refused, since touching the unbacked part would be a SIGBUS.
func TestDMAMapBeyondFile(t *testing.T) {
	dev, _ := testdev.New(false)
	t.Cleanup(func() { dev.Close() }) // after the server is done (Cleanups run last-in first-out)
	p := newRawPeer(t, dev)
	fd, _ := unix.MemfdCreate("short", unix.MFD_CLOEXEC)
	defer unix.Close(fd)
	unix.Ftruncate(fd, 4096)
	for _, m := range []vfiouser.DMAMap{
		{Flags: 3, Offset: 0, Address: 1 << 32, Size: 4 << 20}, // the 4 KiB file mapped as 4 MiB
		{Flags: 3, Offset: 4096, Address: 1 << 32, Size: 4096}, // starts at the end
	} {
		if h, _, _ := p.call(vfiouser.CmdDMAMap, m.Encode(), []int{fd}); h.Flags&vfiouser.FlagError == 0 || h.Error != uint32(unix.EINVAL) {
			t.Errorf("DMA_MAP %+v of a 4 KiB file: flags %#x errno %d, want EINVAL", m, h.Flags, h.Error)
		}
	}
	if h, _, _ := p.call(vfiouser.CmdDMAMap, vfiouser.DMAMap{Flags: 3, Address: 1 << 32, Size: 4096}.Encode(), []int{fd}); h.Flags&vfiouser.FlagError != 0 {
		t.Errorf("DMA_MAP of the whole file refused: errno %d", h.Error)
	}
	p.alive()
}

// Defect 2: the client shrinks the portal memfd it was given. The server
// seals it, so ftruncate fails and the poller keeps running.
func TestPortalMemfdShrink(t *testing.T) {
	if !isolated(t) {
		return
	}
	dev, err := testdev.New(true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	p := newRawPeer(t, dev)
	req := make([]byte, vfio.RegionInfoSize)
	binary.NativeEndian.PutUint32(req, 256)
	binary.NativeEndian.PutUint32(req[8:], testdev.PortalBAR)
	h, _, fds := p.call(vfiouser.CmdGetRegionInfo, req, nil)
	if h.Flags&vfiouser.FlagError != 0 || len(fds) != 1 {
		t.Fatalf("portal region info: flags %#x, %d fds", h.Flags, len(fds))
	}
	defer unix.Close(fds[0])
	if err := unix.Ftruncate(fds[0], 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("ftruncate of the portal memfd: %v, want EPERM (sealed)", err)
	}
	time.Sleep(50 * time.Millisecond) // the poller passes over the page many times
	p.alive()
}

// Defect 3: SET_IRQS with something that is not an eventfd. A full pipe
// used to be accepted, and the first interrupt then blocked the serving
// goroutine for good; a regular file was accepted too.
func TestSetIRQsNotEventFD(t *testing.T) {
	dev, _ := testdev.New(false)
	defer dev.Close()
	a, b, _ := vfiouser.Socketpair()
	done := make(chan error, 1)
	go func() { done <- vfiouser.NewServer(dev, quiet).ServeConn(b) }()
	c, err := vfiouser.NewClient(a, "test", vfiouser.WithLogger(quiet), vfiouser.WithTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); <-done }()
	mem, _ := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 1 << 20}})
	defer mem.Close()
	if err := vfio.MapAllRAM(c, mem); err != nil {
		t.Fatal(err)
	}
	var pfd [2]int
	if err := unix.Pipe2(pfd[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd[0])
	defer unix.Close(pfd[1])
	for buf := make([]byte, 65536); ; {
		if _, err := unix.Write(pfd[1], buf); err != nil {
			break // full
		}
	}
	unix.SetNonblock(pfd[1], false) // the server's write would now block
	file, _ := os.Create(filepath.Join(t.TempDir(), "not-an-eventfd"))
	defer file.Close()
	null, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	defer null.Close()
	var re *vfiouser.RemoteError
	for _, c2 := range []struct {
		name string
		fd   int
	}{{"regular file", int(file.Fd())}, {"/dev/null", int(null.Fd())}, {"full pipe", pfd[1]}} {
		err := c.SetIRQs(vfio.PCIMSIXIRQIndex, 0, []int{c2.fd})
		if !errors.As(err, &re) || re.Errno != uint32(unix.EINVAL) {
			t.Errorf("SET_IRQS with a %s: %v, want EINVAL", c2.name, err)
		}
	}
	// An interrupt now must not hang the server (it would block writing to
	// the pipe had it been taken).
	d := testdev.Descriptor(0x1000, 0x2000, 8, 0x3000, testdev.FlagRCR|testdev.FlagRCI)
	if err := c.WriteRegion(testdev.PortalBAR, 4096, d[:]); err != nil {
		t.Fatalf("descriptor with an interrupt: %v", err)
	}
	var reg [4]byte
	if err := c.ReadRegion(0, testdev.RegVersion, reg[:]); err != nil {
		t.Fatalf("server stopped answering: %v", err)
	}
	// A real eventfd still works.
	ev, _ := platform.NewEventFD()
	defer ev.Close()
	if err := c.SetIRQs(vfio.PCIMSIXIRQIndex, 0, []int{ev.Fd()}); err != nil {
		t.Fatal(err)
	}
	c.WriteRegion(testdev.PortalBAR, 4096, d[:])
	if n, err := ev.Wait(5000); n != 1 || err != nil {
		t.Fatalf("eventfd interrupt: %d, %v", n, err)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// Defect 4: fds a server attaches to its VERSION reply were kept open by
// the client, one per connect (FuzzClient died of EMFILE).
func TestClientClosesVersionFDs(t *testing.T) {
	connect := func() {
		a, b, _ := vfiouser.Socketpair()
		defer b.Close()
		go func() {
			var h [16]byte
			for {
				if _, err := b.Read(h[:]); err != nil {
					return
				}
				size := binary.NativeEndian.Uint32(h[4:])
				rest := make([]byte, size-16)
				b.Read(rest)
				var payload []byte
				var oob []byte
				switch binary.NativeEndian.Uint16(h[2:]) {
				case vfiouser.CmdVersion:
					payload = vfiouser.Version{Major: 0, Minor: 2}.Encode()
					fd, _ := unix.MemfdCreate("gift", unix.MFD_CLOEXEC)
					defer unix.Close(fd)
					oob = unix.UnixRights(fd)
				case vfiouser.CmdDeviceGetInfo:
					payload = binary.NativeEndian.AppendUint32(nil, 16)
					payload = binary.NativeEndian.AppendUint32(payload, vfio.DeviceFlagPCI)
					payload = binary.NativeEndian.AppendUint32(payload, 9)
					payload = binary.NativeEndian.AppendUint32(payload, 5)
				}
				rh := vfiouser.Header{MsgID: binary.NativeEndian.Uint16(h[:]), Command: binary.NativeEndian.Uint16(h[2:]),
					Size: uint32(16 + len(payload)), Flags: vfiouser.FlagReply}
				b.WriteMsgUnix(append(rh.Encode(nil), payload...), oob, nil)
			}
		}()
		c, err := vfiouser.NewClient(a, "gifts", vfiouser.WithLogger(quiet), vfiouser.WithTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	connect() // warm up (goroutines, runtime fds)
	before := openFDs(t)
	for range 20 {
		connect()
	}
	if after := openFDs(t); after > before+2 {
		t.Fatalf("20 connects leaked %d fds", after-before)
	}
}

// Defect 5: a client that connects and never sends VERSION must not keep
// the next client waiting for good.
func TestHandshakeDeadline(t *testing.T) {
	dev, _ := testdev.New(false)
	defer dev.Close()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := vfiouser.NewServer(dev, quiet)
	srv.HandshakeTimeout = 300 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- srv.Listen(l) }()
	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	start := time.Now()
	c, err := vfiouser.Dial(sock, vfiouser.WithLogger(quiet), vfiouser.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatalf("second client after an idle one: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("second client waited %v", d)
	}
	c.Close()
	// The idle client was hung up on.
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("idle client still connected: %v", err)
	}
	l.Close()
	<-done
}

// Defect 5: ListenSocket refuses a live server's socket, replaces a stale
// one, and removes only its own socket file.
func TestListenSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "dsa.sock")
	l1, remove1, err := vfiouser.ListenSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l1.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, _, err := vfiouser.ListenSocket(sock); err == nil {
		t.Fatal("a second server took over a live socket")
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the live socket is gone: %v", err)
	}
	// Someone removes the first server's socket and a second server starts
	// there; the first one's exit must leave the second's socket alone.
	os.Remove(sock)
	l2, remove2, err := vfiouser.ListenSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	remove1()
	if _, err := net.Dial("unix", sock); err != nil {
		t.Fatalf("the first server's exit removed the second's socket: %v", err)
	}
	// A stale socket (its server gone without cleaning up) is replaced.
	l2.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatal("listener close unlinked the socket by name")
	}
	l3, remove3, err := vfiouser.ListenSocket(sock)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	defer l3.Close()
	remove2() // stale owner: not its file any more
	if _, err := os.Stat(sock); err != nil {
		t.Fatal("an old server removed the socket that replaced its stale one")
	}
	remove3()
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("own socket not removed: %v", err)
	}
	// Not a socket: refused, left alone.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	if _, _, err := vfiouser.ListenSocket(plain); err == nil {
		t.Fatal("listened over a regular file")
	}
}
