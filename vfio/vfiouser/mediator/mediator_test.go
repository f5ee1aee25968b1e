package mediator

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"godvm/devices/dsa"
	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// client is one guest: a vfio-user client of one VDev with its own memory
// (memSize bytes at GPA base) mapped for DMA and one eventfd per vector.
type client struct {
	t    testing.TB
	v    *VDev
	base uint64
	c    *vfiouser.Client
	mem  *guestmem.Memory
	ev   []*platform.EventFD
	done chan error
}

const memSize = 4 << 20

func newClient(t testing.TB, v *VDev, base uint64) *client {
	t.Helper()
	a, s, err := vfiouser.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{t: t, v: v, base: base, done: make(chan error, 1)}
	go func() { cl.done <- v.Server().ServeConn(s) }()
	if cl.c, err = vfiouser.NewClient(a, "dsa", vfiouser.WithLogger(quiet)); err != nil {
		t.Fatal(err)
	}
	if cl.mem, err = guestmem.New([]guestmem.Spec{{GPA: base, Size: memSize}}); err != nil {
		t.Fatal(err)
	}
	if err := vfio.MapAllRAM(cl.c, cl.mem); err != nil {
		t.Fatal(err)
	}
	var fds []int
	for i := 0; i < v.Config.Vectors(); i++ {
		ev, err := platform.NewEventFD()
		if err != nil {
			t.Fatal(err)
		}
		cl.ev = append(cl.ev, ev)
		fds = append(fds, ev.Fd())
	}
	if err := cl.c.SetIRQs(vfio.PCIMSIXIRQIndex, 0, fds); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.close)
	return cl
}

// close disconnects (idempotent).
func (cl *client) close() {
	if cl.c == nil {
		return
	}
	cl.c.Close()
	<-cl.done
	cl.c = nil
	cl.mem.Close()
	for _, e := range cl.ev {
		e.Close()
	}
}

func (cl *client) r32(region uint32, off uint64) (uint32, error) {
	var b [4]byte
	err := cl.c.ReadRegion(region, off, b[:])
	return binary.LittleEndian.Uint32(b[:]), err
}

func (cl *client) w(region uint32, off, v uint64, n int) error {
	return cl.c.WriteRegion(region, off, binary.LittleEndian.AppendUint64(nil, v)[:n])
}

// enableDWQ configures WQ 0 as a dedicated kernel WQ of size entries in
// group 0 with engine 0, as idxd does, and enables device and WQ; each
// command's completion interrupt must reach this client's eventfd 0.
func (cl *client) enableDWQ(size uint32) error {
	if err := cl.w(vfio.PCIConfigRegionIndex, pci.RegCommand, pci.CmdMemory|pci.CmdBusMaster, 2); err != nil {
		return err
	}
	const dedicated, prio, priv = 1, 10 << 4, 1 << 29
	for i, v := range [4]uint32{size, 0, dedicated | prio | priv, 21 | 5<<5} {
		if err := cl.w(0, dsa.WQCFGOffset+uint64(4*i), uint64(v), 4); err != nil {
			return err
		}
	}
	for _, s := range []struct{ off, v uint64 }{{dsa.GRPCFGOffset, 1}, {dsa.GRPCFGOffset + 32, 1}, {dsa.GRPCFGOffset + 40, 1 | 1<<3 | 64<<20}} {
		if err := cl.w(0, s.off, s.v, 8); err != nil {
			return err
		}
	}
	for _, c := range []uint32{dsa.CmdEnableDevice, dsa.CmdEnableWQ} {
		if err := cl.w(0, dsa.RegCmd, uint64(1<<31|c<<20), 4); err != nil {
			return err
		}
		if n, err := cl.ev[0].Wait(5000); n == 0 || err != nil {
			return fmt.Errorf("command %d: no completion interrupt on the client's eventfd (%v)", c, err)
		}
		if st, err := cl.r32(0, dsa.RegCmdSts); st != 0 || err != nil {
			return fmt.Errorf("command %d: CMDSTS %#x (%v)", c, st, err)
		}
	}
	return nil
}

func memmove(src, dst, cr uint64, n uint32) [64]byte {
	var d [64]byte
	binary.LittleEndian.PutUint32(d[4:], dsa.FlagCRAV|dsa.FlagRCR|uint32(dsa.OpMemMove)<<24)
	binary.LittleEndian.PutUint64(d[8:], cr)
	binary.LittleEndian.PutUint64(d[16:], src)
	binary.LittleEndian.PutUint64(d[24:], dst)
	binary.LittleEndian.PutUint32(d[32:], n)
	return d
}

// Layout of a client's memory (offsets from its base).
const (
	offSrc   = 0x100000 // slots × chunk bytes, a pattern unique to the client
	offDst   = 0x200000
	offCR    = 0x300000
	slots    = 256
	chunk    = 256
	window   = 8 // descriptors in flight (< the WQ size: a DWQ drops overflow)
	stopWait = 5 * time.Second
)

func (cl *client) fillSrc(seed byte) {
	b := make([]byte, slots*chunk)
	for i := range b {
		b[i] = byte(i*13) ^ seed
	}
	cl.mem.WriteAt(b, cl.base+offSrc)
}

// waitCR polls the completion record at addr until its status is set.
func (cl *client) waitCR(addr uint64) (byte, error) {
	deadline := time.Now().Add(stopWait)
	for {
		if st, _ := cl.mem.ReadU8(addr); st != 0 {
			return st, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no completion record at %#x", addr)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// run submits n memmoves through the trapped portal (window in flight),
// checks every completion status and at the end the copied data. stop,
// if non-nil, is called before descriptor i; when it returns true run
// returns early (nil).
func (cl *client) run(n int, stop func(i int) bool) error {
	crOf := func(i int) uint64 { return cl.base + offCR + uint64(32*(i%slots)) }
	check := func(i int) error {
		st, err := cl.waitCR(crOf(i))
		if err != nil {
			return fmt.Errorf("descriptor %d: %w", i, err)
		}
		if st != dsa.StatusSuccess {
			return fmt.Errorf("descriptor %d: status %#x", i, st)
		}
		return nil
	}
	for i := 0; i < n; i++ {
		if stop != nil && stop(i) {
			return nil
		}
		if i >= window {
			if err := check(i - window); err != nil {
				return err
			}
		}
		cl.mem.WriteAt(make([]byte, 32), crOf(i))
		s := uint64(i % slots)
		d := memmove(cl.base+offSrc+s*chunk, cl.base+offDst+s*chunk, crOf(i), chunk)
		if err := cl.c.WriteRegion(2, dsa.PortalPage, d[:]); err != nil {
			return fmt.Errorf("descriptor %d: %w", i, err)
		}
	}
	for i := max(0, n-window); i < n; i++ {
		if err := check(i); err != nil {
			return err
		}
	}
	src := make([]byte, slots*chunk)
	dst := make([]byte, slots*chunk)
	cl.mem.ReadAt(src, cl.base+offSrc)
	cl.mem.ReadAt(dst, cl.base+offDst)
	if m := min(n, slots); !bytes.Equal(src[:m*chunk], dst[:m*chunk]) {
		return fmt.Errorf("copied data differs from the source")
	}
	return nil
}

func twoGuests(t *testing.T) (*Mediator, *client, *client) {
	t.Helper()
	m, err := New(dsa.Config{WQs: 4, WQSize: 64, Groups: 2, Engines: 2, Version: 0x100}, false, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	va, err := m.Add(VDevSpec{Socket: "a", WQs: 2, WQSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	vb, err := m.Add(VDevSpec{Socket: "b", WQs: 2, WQSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	// Guest A's memory at GPA 0, guest B's at 64 MiB.
	a, b := newClient(t, va, 0), newClient(t, vb, 64<<20)
	a.fillSrc(0xa5)
	b.fillSrc(0x5b)
	for _, cl := range []*client{a, b} {
		if err := cl.enableDWQ(16); err != nil {
			t.Fatal(err)
		}
	}
	return m, a, b
}

// TestTwoGuestsConcurrent: two clients of one mediator run thousands of
// descriptors at once, each against its own memory, and all complete
// correctly.
func TestTwoGuestsConcurrent(t *testing.T) {
	_, a, b := twoGuests(t)
	const n = 3000
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, cl := range []*client{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = cl.run(n, nil) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("guest %c: %v", 'A'+i, err)
		}
	}
	// Each guest's copies landed in its own memory only: B's destination
	// holds B's pattern, not A's.
	got := make([]byte, chunk)
	b.mem.ReadAt(got, b.base+offDst)
	if got[1] != byte(13)^0x5b {
		t.Fatalf("guest B's destination holds %#x, not its own pattern", got[1])
	}
}

// TestCrossGuestFaults: a descriptor of guest A aimed at guest B's range
// (source, destination or completion record) faults, and B's memory is
// untouched.
func TestCrossGuestFaults(t *testing.T) {
	_, a, b := twoGuests(t)
	before := make([]byte, memSize)
	b.mem.ReadAt(before, b.base)
	cases := []struct {
		name          string
		src, dst, cr  uint64
		wantWriteFlag bool
	}{
		{"read B's memory", b.base + offSrc, a.base + offDst, a.base + offCR, false},
		{"write B's memory", a.base + offSrc, b.base + offDst, a.base + offCR, true},
	}
	for _, c := range cases {
		a.mem.WriteAt(make([]byte, 32), c.cr)
		d := memmove(c.src, c.dst, c.cr, 4096)
		if err := a.c.WriteRegion(2, dsa.PortalPage, d[:]); err != nil {
			t.Fatal(err)
		}
		st, err := a.waitCR(c.cr)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if st&0x3f != dsa.StatusPageFault || (st&dsa.StatusFaultWrite != 0) != c.wantWriteFlag {
			t.Fatalf("%s: status %#x, want a page fault (write=%v)", c.name, st, c.wantWriteFlag)
		}
		var rec [16]byte
		a.mem.ReadAt(rec[:], c.cr)
		want := c.src
		if c.wantWriteFlag {
			want = c.dst
		}
		if fa := binary.LittleEndian.Uint64(rec[8:]); fa != want {
			t.Fatalf("%s: fault address %#x, want %#x", c.name, fa, want)
		}
	}
	// A completion record in B's range: unreachable for A, so SWERROR on
	// A's device (0x1a) and nothing written anywhere in B.
	d := memmove(a.base+offSrc, a.base+offDst, b.base+offCR, 64)
	if err := a.c.WriteRegion(2, dsa.PortalPage, d[:]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(stopWait)
	for {
		if sw, _ := a.r32(0, dsa.RegSWErr); sw&1 != 0 {
			if code := sw >> 8 & 0xff; code != 0x1a {
				t.Fatalf("SWERROR code %#x, want 0x1a (completion record address)", code)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no SWERROR for a completion record outside the guest's memory")
		}
		time.Sleep(time.Millisecond)
	}
	after := make([]byte, memSize)
	b.mem.ReadAt(after, b.base)
	if !bytes.Equal(before, after) {
		t.Fatal("guest A's descriptors changed guest B's memory")
	}
	if sw, _ := b.r32(0, dsa.RegSWErr); sw != 0 {
		t.Fatalf("guest B's SWERROR %#x: A's error reached B", sw)
	}
	if err := b.run(500, nil); err != nil {
		t.Fatalf("guest B after A's faults: %v", err)
	}
}

// TestGuestResetOrDisconnectMidRun: while guest A runs thousands of
// descriptors, guest B resets its device (vfio-user DEVICE_RESET, or the
// idxd Reset Device command, or an FLR) or disconnects in the middle of its
// own run; A's work completes, all of it correct, and a new client on B's
// socket finds B's device in its reset state and works.
func TestGuestResetOrDisconnectMidRun(t *testing.T) {
	disrupt := map[string]func(b *client) error{
		"device-reset": func(b *client) error { return b.c.Reset() },
		"reset-command": func(b *client) error {
			return b.w(0, dsa.RegCmd, uint64(dsa.CmdResetDevice<<20), 4)
		},
		"abort-all": func(b *client) error { return b.w(0, dsa.RegCmd, uint64(dsa.CmdAbortAll<<20), 4) },
		"disable-device": func(b *client) error {
			return b.w(0, dsa.RegCmd, uint64(dsa.CmdDisableDevice<<20), 4)
		},
		"disconnect": func(b *client) error { b.close(); return nil },
	}
	for name, f := range disrupt {
		t.Run(name, func(t *testing.T) {
			_, a, b := twoGuests(t)
			const n = 4000
			var wg sync.WaitGroup
			var errA error
			var progressA atomic.Int64
			wg.Add(1)
			go func() {
				defer wg.Done()
				errA = a.run(n, func(i int) bool { progressA.Store(int64(i)); return false })
			}()
			var errB error
			disrupted := false
			var atA int64
			_ = b.run(n, func(i int) bool {
				if i == 1000 {
					atA = progressA.Load()
					errB = f(b)
					disrupted = true
					return true
				}
				return false
			})
			wg.Wait()
			if errA != nil {
				t.Fatalf("guest A after B's %s: %v", name, errA)
			}
			if !disrupted || errB != nil {
				t.Fatalf("guest B's %s: disrupted=%v err=%v", name, disrupted, errB)
			}
			if atA <= 0 || atA >= n-1 {
				t.Fatalf("guest A was at descriptor %d of %d when B's %s came: not mid-run", atA, n, name)
			}
			t.Logf("guest B's %s came while guest A was at descriptor %d of %d", name, atA, n)
			// A's device was not touched: still enabled, no error.
			if st, _ := a.r32(0, dsa.RegGenSts); st&3 != dsa.StateEnabled {
				t.Fatalf("guest A's GENSTS %#x after B's %s", st, name)
			}
			if sw, _ := a.r32(0, dsa.RegSWErr); sw != 0 {
				t.Fatalf("guest A's SWERROR %#x after B's %s", sw, name)
			}
			if name == "disconnect" {
				// A new client on B's vdev: the device is in its reset state.
				nb := newClient(t, b.v, 64<<20)
				if st, _ := nb.r32(0, dsa.RegGenSts); st&3 != 0 {
					t.Fatalf("B's device after its client left: GENSTS %#x, want Disabled", st)
				}
				b = nb
				b.fillSrc(0x5b)
			} else if name != "abort-all" {
				b.c.Reset()
			}
			if name != "abort-all" {
				if err := b.enableDWQ(16); err != nil {
					t.Fatalf("guest B re-enabling after its %s: %v", name, err)
				}
			}
			if err := b.run(500, nil); err != nil {
				t.Fatalf("guest B after its %s: %v", name, err)
			}
		})
	}
}
