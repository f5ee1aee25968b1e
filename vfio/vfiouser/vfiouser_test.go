package vfiouser_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"godvm/devices/platform"
	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/testdev"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type rig struct {
	dev    *testdev.Device
	client *vfiouser.Client
	mem    *guestmem.Memory
	done   chan error
}

func newRig(t testing.TB, mapped bool) *rig {
	t.Helper()
	dev, err := testdev.New(mapped)
	if err != nil {
		t.Fatal(err)
	}
	a, b, err := vfiouser.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	srv := vfiouser.NewServer(dev, quiet)
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(b) }()
	c, err := vfiouser.NewClient(a, "test", vfiouser.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 1 << 20}, {GPA: 1 << 32, Size: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if err := vfio.MapAllRAM(c, mem); err != nil {
		t.Fatal(err)
	}
	r := &rig{dev, c, mem, done}
	t.Cleanup(func() {
		c.Close()
		<-done
		dev.Close()
		mem.Close()
	})
	return r
}

func TestClientServer(t *testing.T) {
	r := newRig(t, false)
	c := r.client
	if v := c.ServerVersion(); v.Major != 0 || v.Minor != 2 || v.Caps.MaxMsgFDs != vfiouser.MaxFDsAccepted {
		t.Fatalf("server version %+v", v)
	}
	if i := c.Info(); i.NumRegions != 9 || i.NumIRQs != 5 || i.Flags != 3 {
		t.Fatalf("device info %+v", i)
	}
	// Config space.
	var cfg [4]byte
	if err := c.ReadRegion(vfio.PCIConfigRegionIndex, 0, cfg[:]); err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint32(cfg[:]) != 0x0b258086 {
		t.Fatalf("config ID dword %#x", binary.LittleEndian.Uint32(cfg[:]))
	}
	// BAR0 registers.
	if err := c.WriteRegion(0, testdev.RegScratch, binary.LittleEndian.AppendUint64(nil, 0xfeedface12345678)); err != nil {
		t.Fatal(err)
	}
	var reg [8]byte
	c.ReadRegion(0, testdev.RegScratch, reg[:])
	if binary.LittleEndian.Uint64(reg[:]) != 0xfeedface12345678 {
		t.Fatalf("scratch = %#x", reg)
	}
	c.ReadRegion(0, testdev.RegVersion, reg[:4])
	if binary.LittleEndian.Uint32(reg[:]) != 0x100 {
		t.Fatalf("version = %#x", reg[:4])
	}
	// Out-of-range access is an error reply, not a crash.
	var re *vfiouser.RemoteError
	if err := c.ReadRegion(0, testdev.BAR0Size-2, reg[:4]); !errors.As(err, &re) || re.Errno != 22 {
		t.Fatalf("read past BAR0: %v", err)
	}
	if reg[0] != 0xff {
		t.Fatalf("failed read left %#x, want all-ones", reg[:4])
	}
	// MSI-X through an eventfd.
	ii, err := c.IRQInfo(vfio.PCIMSIXIRQIndex)
	if err != nil || ii.Count != 2 || ii.Flags&vfio.IRQFlagEventFD == 0 {
		t.Fatalf("irq info %+v %v", ii, err)
	}
	ev0, _ := platform.NewEventFD()
	ev1, _ := platform.NewEventFD()
	defer ev0.Close()
	defer ev1.Close()
	if err := c.SetIRQs(vfio.PCIMSIXIRQIndex, 0, []int{ev0.Fd(), ev1.Fd()}); err != nil {
		t.Fatal(err)
	}
	// A descriptor through the trapped portal into memfd-backed RAM.
	src, dst, comp := uint64(0x1000), uint64(1<<32+0x2000), uint64(0x3000)
	r.mem.WriteAt([]byte("hello, vfio-user DSA"), src)
	d := testdev.Descriptor(src, dst, 20, comp, testdev.FlagRCR|testdev.FlagRCI)
	if err := c.WriteRegion(testdev.PortalBAR, 0, d[:]); err != nil {
		t.Fatal(err)
	}
	if n, err := ev0.Wait(5000); err != nil || n != 1 {
		t.Fatalf("interrupt on vector 0: %d, %v", n, err)
	}
	got := make([]byte, 20)
	r.mem.ReadAt(got, dst)
	if string(got) != "hello, vfio-user DSA" {
		t.Fatalf("copied %q", got)
	}
	if st, _ := r.mem.ReadU8(comp); st != testdev.StatusSuccess {
		t.Fatalf("completion status %#x", st)
	}
	if n, _ := ev1.Read(); n != 0 {
		t.Fatalf("vector 1 fired %d times", n)
	}
	// A descriptor pointing outside RAM completes with a fault, no crash.
	d = testdev.Descriptor(0x7000_0000, dst, 20, comp, testdev.FlagRCR)
	c.WriteRegion(testdev.PortalBAR, 64, d[:])
	if st, _ := r.mem.ReadU8(comp); st != testdev.StatusFaultAddr {
		t.Fatalf("bad-address status %#x", st)
	}
	// Disabling the index stops interrupts.
	if err := c.SetIRQs(vfio.PCIMSIXIRQIndex, 0, nil); err != nil {
		t.Fatal(err)
	}
	d = testdev.Descriptor(src, dst, 20, comp, testdev.FlagRCI)
	c.WriteRegion(testdev.PortalBAR, 0, d[:])
	if n, _ := ev0.Read(); n != 0 {
		t.Fatalf("disabled vector fired")
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	c.ReadRegion(0, testdev.RegScratch, reg[:])
	if binary.LittleEndian.Uint64(reg[:]) != 0 {
		t.Fatalf("scratch after reset = %#x", reg)
	}
	// Unmap, then re-map of the same range works; overlapping map is EEXIST.
	rg := r.mem.Regions()[1]
	if err := c.DMAMap(rg); !errors.As(err, &re) || re.Errno != 17 {
		t.Fatalf("overlapping DMA map: %v", err)
	}
	if err := c.DMAUnmap(rg); err != nil {
		t.Fatal(err)
	}
	if err := c.DMAUnmap(rg); !errors.As(err, &re) {
		t.Fatalf("second unmap: %v", err)
	}
}

func TestMappedPortal(t *testing.T) {
	r := newRig(t, true)
	c := r.client
	ri, err := c.RegionInfo(testdev.PortalBAR)
	if err != nil {
		t.Fatal(err)
	}
	if !ri.Mappable() || len(ri.Areas) != 1 || ri.Areas[0] != (vfio.Area{Offset: 0, Size: 4096}) {
		t.Fatalf("portal region %+v", ri)
	}
	if _, err := c.MapRegion(testdev.PortalBAR, 4096, 4096); err == nil {
		t.Fatal("mapped the trapped page")
	}
	page, err := c.MapRegion(testdev.PortalBAR, 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer c.UnmapRegion(page)
	ev, _ := platform.NewEventFD()
	defer ev.Close()
	c.SetIRQs(vfio.PCIMSIXIRQIndex, 0, []int{ev.Fd()})
	r.mem.WriteAt([]byte("through shared memory"), 0x1000)
	d := testdev.Descriptor(0x1000, 0x5000, 21, 0x3000, testdev.FlagRCR|testdev.FlagRCI)
	copy(page[128:], d[:]) // what the guest's MOVDIR64B into a memory slot does
	if n, err := ev.Wait(5000); err != nil || n != 1 {
		t.Fatalf("interrupt: %d %v", n, err)
	}
	got := make([]byte, 21)
	r.mem.ReadAt(got, 0x5000)
	if string(got) != "through shared memory" {
		t.Fatalf("copied %q", got)
	}
	if !bytes.Equal(page[128:192], make([]byte, 64)) {
		t.Fatal("server did not consume the slot")
	}
}

func TestServerDeath(t *testing.T) {
	dev, _ := testdev.New(false)
	defer dev.Close()
	a, b, _ := vfiouser.Socketpair()
	srv := vfiouser.NewServer(dev, quiet)
	go srv.ServeConn(b)
	var logs bytes.Buffer
	failed := make(chan error, 1)
	c, err := vfiouser.NewClient(a, "/run/dsa.sock", vfiouser.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		vfiouser.WithOnFail(func(err error) { failed <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b.Close() // the server process dies
	select {
	case err := <-failed:
		if !errors.Is(err, vfio.ErrFailed) {
			t.Fatalf("fail reason %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client did not notice the server's death")
	}
	if !strings.Contains(logs.String(), "vfio-user server /run/dsa.sock gone; device failed") {
		t.Fatalf("log: %s", logs.String())
	}
	p := []byte{1, 2, 3, 4}
	if err := c.ReadRegion(0, 0, p); !errors.Is(err, vfio.ErrFailed) || !bytes.Equal(p, []byte{255, 255, 255, 255}) {
		t.Fatalf("read after death: %v % x", err, p)
	}
	if err := c.WriteRegion(0, 8, p); !errors.Is(err, vfio.ErrFailed) {
		t.Fatalf("write after death: %v", err)
	}
}

func TestDialErrors(t *testing.T) {
	_, err := vfiouser.Dial(filepath.Join(t.TempDir(), "nope.sock"))
	if err == nil || !strings.Contains(err.Error(), "nope.sock") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing socket: %v", err)
	}
	// A server that answers VERSION with major 1.
	dir := t.TempDir()
	sock := filepath.Join(dir, "v1.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var h [16]byte
		io.ReadFull(c, h[:])
		rest := make([]byte, binary.NativeEndian.Uint32(h[4:])-16)
		io.ReadFull(c, rest)
		payload := vfiouser.Version{Major: 1, Minor: 0}.Encode()
		rh := vfiouser.Header{MsgID: binary.NativeEndian.Uint16(h[:]), Command: vfiouser.CmdVersion, Size: uint32(16 + len(payload)), Flags: vfiouser.FlagReply}
		c.Write(append(rh.Encode(nil), payload...))
		io.Copy(io.Discard, c)
	}()
	_, err = vfiouser.Dial(sock, vfiouser.WithLogger(quiet))
	if err == nil || !strings.Contains(err.Error(), "speaks protocol version 1.0") {
		t.Fatalf("wrong version: %v", err)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRegionWriteRoundTrip is one trapped 8-byte register write: a
// REGION_WRITE message and its reply over the socket.
func BenchmarkRegionWriteRoundTrip(b *testing.B) {
	r := newRig(b, false)
	v := binary.LittleEndian.AppendUint64(nil, 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.client.WriteRegion(0, testdev.RegScratch, v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrappedPortal submits 64-byte descriptors as REGION_WRITEs (what
// every guest portal write costs when the portal page is not mapped: a VM
// exit plus this round trip).
func BenchmarkTrappedPortal(b *testing.B) {
	r := newRig(b, false)
	d := testdev.Descriptor(0x1000, 0x2000, 64, 0x3000, testdev.FlagRCR)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.client.WriteRegion(testdev.PortalBAR, 0, d[:]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if r.dev.Completed() < uint64(b.N) {
		b.Fatalf("%d of %d completed", r.dev.Completed(), b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "desc/s")
}

// BenchmarkMappedPortal stores descriptors into the shared portal page (what
// the guest's MOVDIR64B into a memory slot does, without an exit), 32 at a
// time into successive slots, and waits until the server's poller has
// completed them.
func BenchmarkMappedPortal(b *testing.B) {
	r := newRig(b, true)
	page, err := r.client.MapRegion(testdev.PortalBAR, 0, 4096)
	if err != nil {
		b.Fatal(err)
	}
	defer r.client.UnmapRegion(page)
	d := testdev.Descriptor(0x1000, 0x2000, 64, 0x3000, testdev.FlagRCR)
	start := r.dev.Completed()
	const batch = 32
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		n := min(batch, b.N-i)
		for k := 0; k < n; k++ {
			copy(page[64*((i+k)%64):], d[:])
		}
		for r.dev.Completed()-start < uint64(i+n) {
			runtime.Gosched()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "desc/s")
}

// TestListenReconnect: the server outlives a client; the next client gets
// the same device (state kept, memory and interrupts of the first gone).
func TestListenReconnect(t *testing.T) {
	dev, _ := testdev.New(false)
	defer dev.Close()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- vfiouser.NewServer(dev, quiet).Listen(l) }()
	c1, err := vfiouser.Dial(sock, vfiouser.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := platform.NewEventFD()
	defer ev.Close()
	c1.SetIRQs(vfio.PCIMSIXIRQIndex, 0, []int{ev.Fd()})
	c1.WriteRegion(0, testdev.RegScratch, binary.LittleEndian.AppendUint64(nil, 42))
	c1.Close()
	c2, err := vfiouser.Dial(sock, vfiouser.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	var b [8]byte
	if err := c2.ReadRegion(0, testdev.RegScratch, b[:]); err != nil || binary.LittleEndian.Uint64(b[:]) != 42 {
		t.Fatalf("scratch after reconnect %d, %v", binary.LittleEndian.Uint64(b[:]), err)
	}
	// The first client's eventfd was closed on the server side: an
	// interrupt now reaches nobody.
	d := testdev.Descriptor(0, 0, 0, 0, testdev.FlagRCI)
	c2.WriteRegion(testdev.PortalBAR, 0, d[:])
	if n, _ := ev.Read(); n != 0 {
		t.Fatal("a disconnected client's eventfd was signalled")
	}
	l.Close()
	c2.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
