package dsa

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"godvm/devices/bus"
	"godvm/guestmem"
)

// recorder is an Interrupter that counts notifications per vector.
type recorder struct {
	mu     sync.Mutex
	counts map[int]int
	ch     chan int
}

func newRecorder() *recorder { return &recorder{counts: map[int]int{}, ch: make(chan int, 4096)} }

func (r *recorder) Notify(v int) {
	r.mu.Lock()
	r.counts[v]++
	r.mu.Unlock()
	select {
	case r.ch <- v:
	default:
	}
}

func (r *recorder) count(v int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[v]
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.counts = map[int]int{}
	r.mu.Unlock()
	for {
		select {
		case <-r.ch:
		default:
			return
		}
	}
}

const memSize = 4 << 20

type rig struct {
	t    *testing.T
	d    *Device
	mem  *guestmem.Memory
	ram  []byte
	intr *recorder
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	ram := make([]byte, memSize)
	mem, err := guestmem.FromBytes(guestmem.NewRegion(0, ram, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	d, err := New(mem, cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	d.SetBusMaster(true)
	return &rig{t: t, d: d, mem: mem, ram: ram, intr: rec}
}

func (r *rig) r32(off uint64) uint32 {
	var b [4]byte
	r.d.BAR0().Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (r *rig) r64(off uint64) uint64 {
	var b [8]byte
	r.d.BAR0().Read(off, b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func (r *rig) w32(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.d.BAR0().Write(off, b[:])
}

func (r *rig) w64(off uint64, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	r.d.BAR0().Write(off, b[:])
}

// cmd issues a command with the completion interrupt requested (as the
// driver does) and returns CMDSTS; it checks the interrupt and INTCAUSE.
func (r *rig) cmd(code, operand uint32) uint32 {
	r.t.Helper()
	before := r.intr.count(0)
	r.w32(RegCmd, 1<<31|code<<20|operand)
	if r.intr.count(0) <= before {
		r.t.Fatalf("command %d: no completion interrupt on vector 0", code)
	}
	ic := r.r32(RegIntCause)
	if ic&IntCmdDone == 0 {
		r.t.Fatalf("command %d: INTCAUSE %#x lacks command completion", code, ic)
	}
	r.w32(RegIntCause, IntCmdDone) // RW1C
	st := r.r32(RegCmdSts)
	if st&CmdStsActive != 0 {
		r.t.Fatalf("CMDSTS Active visible after command %d", code)
	}
	return st
}

func (r *rig) wqcfgOff(wq int) uint64 { return WQCFGOffset + uint64(wq*r.d.wqcfgSize) }

// configWQ writes a WQ's configuration the way idxd_wq_config_write does:
// read every dword, OR in the shadow, write every dword back (dword 6 too).
func (r *rig) configWQ(wq int, size, thresh uint32, dw2 uint32, xferShift, batchShift uint32) {
	shadow := [8]uint32{size, thresh, dw2, xferShift | batchShift<<5}
	base := r.wqcfgOff(wq)
	for i := range 8 {
		shadow[i] |= r.r32(base + uint64(4*i))
	}
	for i := range 8 {
		r.w32(base+uint64(4*i), shadow[i])
	}
}

func (r *rig) configGroup(g int, wqs uint64, engines uint64) {
	base := GRPCFGOffset + uint64(g*GRPCFGSize)
	r.w64(base, wqs)
	for i := 1; i < 4; i++ {
		r.w64(base+uint64(8*i), 0)
	}
	r.w64(base+32, engines)
	r.w64(base+40, 1|1<<3|totalReadBufs<<20) // TC-A=1, TC-B=1, rdbufs allowed
}

const kernelDWQ = wqModeDedicated | 10<<wqPrioShift | wqPriv

// setupDWQ configures and enables a kernel dedicated WQ 0 in group 0 with
// all engines (accel-config's configuration sequence).
func (r *rig) setupDWQ(size uint32) {
	r.t.Helper()
	r.configWQ(0, size, 0, kernelDWQ, 21, 5)
	r.configGroup(0, 1, 1<<r.d.cfg.Engines-1)
	if st := r.cmd(CmdEnableDevice, 0); st != 0 {
		r.t.Fatalf("Enable Device: %#x", st)
	}
	if st := r.cmd(CmdEnableWQ, 0); st != 0 {
		r.t.Fatalf("Enable WQ: %#x", st)
	}
}

func (r *rig) submit(wq int, desc *[64]byte) bool {
	return r.d.Portals().Write64B(uint64(wq)*PortalStride+PortalPage, desc, bus.MOVDIR64B)
}

// drain waits for every descriptor of WQ wq (Drain WQ command).
func (r *rig) drain(wq int) {
	r.t.Helper()
	if st := r.cmd(CmdDrainWQ, 1<<wq); st != 0 {
		r.t.Fatalf("Drain WQ: %#x", st)
	}
}

// descriptor builder
type dsc [64]byte

func newDesc(op byte, flags uint32, cr, a16, a24 uint64, size uint32) *[64]byte {
	var d [64]byte
	le := binary.LittleEndian
	le.PutUint32(d[4:], flags&0xffffff|uint32(op)<<24)
	le.PutUint64(d[8:], cr)
	le.PutUint64(d[16:], a16)
	le.PutUint64(d[24:], a24)
	le.PutUint32(d[32:], size)
	return &d
}

func put64(d *[64]byte, off int, v uint64) { binary.LittleEndian.PutUint64(d[off:], v) }
func put32(d *[64]byte, off int, v uint32) { binary.LittleEndian.PutUint32(d[off:], v) }
func put16(d *[64]byte, off int, v uint16) { binary.LittleEndian.PutUint16(d[off:], v) }

type crec struct {
	status, result byte
	bytes          uint32
	fault          uint64
	extra          [16]byte
}

func (r *rig) cr(addr uint64) crec {
	b := r.ram[addr : addr+32]
	var c crec
	c.status, c.result = b[0], b[1]
	c.bytes = binary.LittleEndian.Uint32(b[4:])
	c.fault = binary.LittleEndian.Uint64(b[8:])
	copy(c.extra[:], b[16:])
	return c
}

// run submits one descriptor on WQ 0 and waits for it.
func (r *rig) run(desc *[64]byte) {
	r.t.Helper()
	if !r.submit(0, desc) {
		r.t.Fatal("descriptor not accepted")
	}
	r.drain(0)
}

// waitStatus polls a completion record (for tests that do not drain).
func (r *rig) waitStatus(addr uint64) byte {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if v, _ := r.mem.LoadU32Acquire(addr &^ 3); byte(v>>(8*(addr&3))) != 0 {
			return byte(v >> (8 * (addr & 3)))
		}
		time.Sleep(time.Millisecond)
	}
	r.t.Fatalf("no completion at %#x", addr)
	return 0
}

func fillRand(b []byte, seed uint32) {
	x := seed | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
}

// fakeOccupancy makes the WQ's occupancy n (w.mu held) by adjusting the
// current epoch's count, to pretend descriptors are outstanding;
// unfakeOccupancy takes the pretence back (drains count on it).
func (w *workQueue) fakeOccupancy(n int) {
	delta := int64(n - w.occupancy())
	w.accepted[w.epoch&1].Add(delta)
	fakes.Store(w, fakeOf(w)+delta)
}

func (w *workQueue) unfakeOccupancy() {
	w.accepted[w.epoch&1].Add(-fakeOf(w))
	fakes.Delete(w)
}

var fakes sync.Map // *workQueue -> int64 added by fakeOccupancy

func fakeOf(w *workQueue) int64 {
	if v, ok := fakes.Load(w); ok {
		return v.(int64)
	}
	return 0
}

func mustMem(t *testing.T, ram []byte) *guestmem.Memory {
	t.Helper()
	m, err := guestmem.FromBytes(guestmem.NewRegion(0, ram, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
