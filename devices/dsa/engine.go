package dsa

import (
	"math"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"godvm/devices/bus"
)

// Work queues and engines. A WQ accepts descriptors from its portals into its
// group's queue (a bounded lock-free ring sized to the group's WQ sizes, so a
// submission never blocks the vCPU); the group's engines are goroutines that
// take descriptors from that ring in FIFO order and run them in parallel.
// Occupancy counts descriptors accepted and not yet completed.
//
// Synchronisation per descriptor (the hot path): the submitter holds the
// WQ's mutex (vCPUs of one WQ are serialised, as at the hardware portal) and
// does one CAS on the ring's tail and one atomic add on the WQ's occupancy;
// the engine does one CAS on the ring's head, two adds on its own activity
// counters and one add on the occupancy. Engines take no lock and wake nobody
// unless a command or the Runner waits (w.waiters), and a submitter wakes an
// engine only when one is parked (g.sleepers). An idle engine spins for
// Config.Spin (yielding its P) before it parks, so a descriptor that follows
// within that window is taken in well under a microsecond instead of paying
// an OS thread wake-up.

type workQueue struct {
	id   int
	mu   sync.Mutex
	cond *sync.Cond
	cfg  [16]uint32 // WQCFG dwords; dword 6 is computed

	// w.mu
	enabled    bool
	params     *wqParams
	group      *group
	seq        uint64
	roomWait   int               // room waiters (waitRoomLocked)
	pasidAbort map[uint32]uint64 // PASID -> seq below which descriptors are discarded
	// Drain/Abort wait only for the descriptors accepted before the
	// command. Descriptors are counted in the slot (epoch&1) of the epoch
	// they were accepted in; a drain waits for the older slot to empty,
	// starts a new epoch, and waits for the slot that was current.
	epoch     uint64
	occIntGen bool

	// Occupancy: descriptors accepted minus descriptors retired, counted
	// per epoch slot; each counter has one writer side, on its own cache
	// line, so a descriptor moves no counter line between the submitter's
	// core and the engine's. The submitter checks room against a snapshot
	// of retired (retiredSnap, w.mu), which can only overstate the
	// occupancy, and reads the engines' counters only when the snapshot
	// says full.
	retiredSnap int64

	// Read by engines per descriptor, written by commands and waiters.
	_            [64]byte
	gen          atomic.Uint64 // bumped by Abort WQ: older descriptors are discarded
	pasidAborted atomic.Bool   // pasidAbort is not empty
	waiters      atomic.Int32  // goroutines waiting on w.cond for a retire
	slotWaiters  atomic.Int32  // of which wait for an epoch slot to empty
	roomAt       atomic.Int64  // room waiters: wake when retired (both slots) >= roomAt
	drains       atomic.Int32  // Drain descriptors waiting (drainBefore)

	// Written by submitters (w.mu) only.
	_        [64]byte
	accepted [2]atomic.Int64

	// Written by engines only.
	_            [64]byte
	retired      [2]atomic.Int64
	active       atomic.Int32 // taken by an engine, not yet complete
	activeDrains atomic.Int32
	_            [64]byte
}

func newWorkQueue(id int) *workQueue {
	w := &workQueue{id: id}
	w.cond = sync.NewCond(&w.mu)
	w.roomAt.Store(math.MaxInt64)
	return w
}

func (w *workQueue) size() uint32 { return w.cfg[0] & 0xffff }

// occupancy is the number of descriptors accepted and not yet completed.
func (w *workQueue) occupancy() int {
	r := w.retired[0].Load() + w.retired[1].Load()
	return int(w.accepted[0].Load() + w.accepted[1].Load() - r)
}

// outstanding is the number of descriptors of epoch slot s not yet retired.
func (w *workQueue) outstanding(s uint64) int64 {
	r := w.retired[s].Load()
	return w.accepted[s].Load() - r
}

// roomFor reports whether the WQ holds fewer than limit descriptors (w.mu
// held). It trusts the snapshot of the engines' retired counters while that
// already shows room (the true occupancy can only be lower), and re-reads
// them only when it does not.
func (w *workQueue) roomFor(limit int) bool {
	acc := w.accepted[0].Load() + w.accepted[1].Load()
	if acc-w.retiredSnap < int64(limit) {
		return true
	}
	w.retiredSnap = w.retired[0].Load() + w.retired[1].Load()
	return acc-w.retiredSnap < int64(limit)
}

// resetCfg restores the initial WQCFG (SPEC Table 9-3): all zero except
// OPCFG = OPCAP. The WQ size is a device-level partition that is locked while
// the device is Enabled, so Reset WQ on an enabled device keeps it (the 6.1
// driver's disable-wq/enable-wq cycle relies on that).
func (w *workQueue) resetCfg(withSize bool, opcap [4]uint64) {
	size := w.cfg[0]
	w.cfg = [16]uint32{}
	if !withSize {
		w.cfg[0] = size
	}
	for i := range opcap {
		w.cfg[8+2*i] = uint32(opcap[i])
		w.cfg[9+2*i] = uint32(opcap[i] >> 32)
	}
	w.occIntGen = false
}

func (w *workQueue) readDword(i int) uint32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i == 6 {
		v := uint32(min(max(w.occupancy(), 0), 0xffff))
		if w.occIntGen {
			v |= 1 << 16
		}
		if w.enabled {
			v |= StateEnabled << 30
		}
		return v
	}
	return w.cfg[i]
}

// WQCFG writability (SPEC 9.2.24): size only while the device is Disabled;
// threshold and occupancy limit always; the rest only while the WQ is
// Disabled; dword 6 is read-only apart from RW1C bit 16. Writes to locked or
// read-only fields are silently ignored (the 6.1 driver writes back every
// dword, including dword 6).
func (w *workQueue) writeDword(i int, v, mask uint32, devDisabled, v2 bool, opcap [4]uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	dis := !w.enabled
	switch i {
	case 0:
		if devDisabled {
			w.cfg[0] = merge(w.cfg[0], v, mask, 0xffff)
		}
	case 1:
		w.cfg[1] = merge(w.cfg[1], v, mask, 0xffff)
	case 2:
		if dis {
			writable := uint32(0x3ffffff3) // mode, BOF, priority, PASID, PASID_EN, priv
			if v2 {
				writable |= wqPRSDisable
			}
			w.cfg[2] = merge(w.cfg[2], v, mask, writable)
		}
	case 3:
		if dis {
			w.cfg[3] = merge(w.cfg[3], v, mask, 0x1ff)
		}
	case 4:
		if dis {
			w.cfg[4] = merge(w.cfg[4], v, mask, 0x1ffff)
		}
	case 5:
		w.cfg[5] = merge(w.cfg[5], v, mask, 0x1ffff)
	case 6:
		if v&mask&(1<<16) != 0 {
			w.occIntGen = false
		}
	default:
		if v2 && i >= 8 && i < 16 && dis {
			q := opcap[(i-8)/2]
			if i%2 == 1 {
				q >>= 32
			}
			w.cfg[i] = merge(w.cfg[i], v, mask, uint32(q))
		}
	}
}

// submit offers a descriptor. It returns accepted=false for a Retry answer
// (ENQCMD/S) and for a dropped posted write.
func (d *Device) submit(wqi, page int, data *[64]byte, kind bus.WideKind) bool {
	w := d.wqs[wqi]
	w.mu.Lock()
	defer w.mu.Unlock()
	return d.submitLocked(w, page, data, kind, true) == submitted
}

// Outcomes of submitLocked.
const (
	submitted = iota
	refused   // disabled WQ, wrong kind of write, Retry
	wqFull
)

// submitLocked is submit with w.mu held; a posted write to a full WQ is
// reported (SWERROR 0x53) only with reportFull.
func (d *Device) submitLocked(w *workQueue, page int, data *[64]byte, kind bus.WideKind, reportFull bool) int {
	posted := kind == bus.MOVDIR64B
	if !w.enabled || w.group == nil {
		return refused // posted writes ignored, DMWr answered Retry
	}
	p := w.params
	if p.dedicated != posted {
		// A DWQ answers Retry to DMWr; an SWQ ignores posted writes.
		return refused
	}
	limited := page == PortalLimitedMSIX || page == PortalLimitedIMS
	limit := int(w.size())
	if !p.dedicated && limited {
		limit = min(limit, int(w.cfg[1]&0xffff))
	}
	if !w.roomFor(limit) {
		if posted && reportFull {
			// Descriptor to a full DWQ: dropped and reported (SWERROR 0x53).
			d.reportSWErr(SWError{Code: swerrWQFull, WQ: w.id, Desc: true, Opcode: data[7]})
		}
		return wqFull
	}
	g := w.group
	s, pos := g.q.reserve()
	slot := uint8(w.epoch & 1)
	// Counted before it is published: an engine may retire it at once.
	w.accepted[slot].Add(1)
	it := &s.w
	it.desc = *data
	it.p = p
	it.ims = page >= PortalUnlimitedIMS
	it.gen = w.gen.Load()
	it.seq = w.seq
	it.slot = slot
	// Run by an engine goroutine (faults panic there) in a group of
	// g.engines. Set here, not by the engine: a single engine runs the
	// descriptor in its slot and writes nothing to it.
	it.guarded, it.shared = true, g.engines > 1
	w.seq++
	if p.dedicated {
		it.pasid, it.priv = p.pasid, p.priv
	} else {
		// ENQCMD(S) carry PASID and privilege in the descriptor (the CPU
		// fills them for ENQCMD).
		it.pasid = uint32(data[0]) | uint32(data[1])<<8 | uint32(data[2]&0xf)<<16
		it.priv = data[3]&0x80 != 0 && kind == bus.ENQCMDS
	}
	it.isDrn = data[7] == OpDrain
	g.q.publish(s, pos)
	g.kick()
	return submitted
}

// runWork is an engine's handling of one descriptor.
func (d *Device) runWork(it *work, buf *[]byte) {
	w := d.wqs[it.p.id]
	if it.gen != w.gen.Load() || (w.pasidAborted.Load() && w.pasidDiscarded(it)) {
		w.retire(it)
		return // aborted: no completion record, no interrupt
	}
	if !it.shared {
		// The group's only engine: everything taken before this
		// descriptor has completed, which is all a Drain descriptor
		// waits for, so no activity count is kept.
		d.cur.Load().run(it, &it.desc, -1, buf)
		w.retire(it)
		return
	}
	w.active.Add(1)
	if it.isDrn {
		w.activeDrains.Add(1)
	}

	d.cur.Load().run(it, &it.desc, -1, buf)

	if it.isDrn {
		w.activeDrains.Add(-1)
	}
	w.active.Add(-1)
	w.retire(it)
}

func (w *workQueue) pasidDiscarded(it *work) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pasidAbort != nil && it.seq < w.pasidAbort[it.pasid]
}

// retire accounts for a descriptor that left the WQ and wakes the waiters
// whose condition it may have made true.
//
// it is not read after the retired count moves: a single engine runs the
// descriptor in its ring slot, which a submitter may fill again as soon as
// the count says there is room.
func (w *workQueue) retire(it *work) {
	slot := it.slot
	n := w.retired[slot].Add(1)
	if w.waiters.Load() == 0 {
		return
	}
	if w.drains.Load() != 0 ||
		w.retired[0].Load()+w.retired[1].Load() >= w.roomAt.Load() ||
		w.slotWaiters.Load() != 0 && n == w.accepted[slot].Load() {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
		// The woken goroutine is queued on this engine's P: let it run
		// now rather than after this engine's next descriptors.
		runtime.Gosched()
	}
}

// waitLocked waits on w.cond until done() holds (w.mu held; released while
// waiting). Engines broadcast after a retire while a Drain descriptor
// waits, after one that empties an epoch slot while slotWaiters, and after
// one that brings the retired count to roomAt: done must follow from one of
// those.
func (w *workQueue) waitLocked(done func() bool) {
	w.waiters.Add(1)
	for !done() {
		w.cond.Wait()
	}
	w.waiters.Add(-1)
}

// waitSlotLocked waits until epoch slot s has no outstanding descriptor.
func (w *workQueue) waitSlotLocked(s uint64) {
	w.slotWaiters.Add(1)
	w.waitLocked(func() bool { return w.outstanding(s) <= 0 })
	w.slotWaiters.Add(-1)
}

// waitRoomLocked waits until the occupancy is at most n or the WQ is
// disabled (w.mu held). The engines compare only their own counters with
// the target, so a waiting submitter costs them nothing per descriptor.
func (w *workQueue) waitRoomLocked(n int) {
	w.roomWait++
	for w.enabled && w.occupancy() > n {
		// occupancy <= n once retired >= accepted - n; a later submission
		// (another submitter) only makes that wake-up early, and the
		// loop then sets a new target.
		target := w.accepted[0].Load() + w.accepted[1].Load() - int64(n)
		if target < w.roomAt.Load() {
			w.roomAt.Store(target)
		}
		w.waitLocked(func() bool {
			return !w.enabled || w.occupancy() <= n || w.retired[0].Load()+w.retired[1].Load() >= target
		})
	}
	if w.roomWait--; w.roomWait == 0 {
		w.roomAt.Store(math.MaxInt64)
	}
}

// waitEarlierLocked starts a new epoch and waits until every descriptor
// accepted before it has left the WQ (w.mu held; released while waiting).
func (w *workQueue) waitEarlierLocked() {
	cur := w.epoch & 1
	// The other slot holds what an earlier, concurrent drain is waiting
	// for; it must be empty before it can take the new epoch's
	// descriptors (and was accepted before this drain too).
	w.waitSlotLocked(cur ^ 1)
	w.epoch++
	w.waitSlotLocked(cur)
}

// drainBefore is the Drain descriptor: it completes after the descriptors
// taken by engines before it. Queues are FIFO, so everything submitted
// earlier has been taken already; wait until only Drain descriptors remain
// active.
func (d *Device) drainBefore(wq int) {
	if wq < 0 || wq >= len(d.wqs) {
		return
	}
	w := d.wqs[wq]
	w.mu.Lock()
	w.drains.Add(1)
	w.waitLocked(func() bool { return w.active.Load() <= w.activeDrains.Load() })
	w.drains.Add(-1)
	w.mu.Unlock()
}

// drain waits until every descriptor accepted before it has completed
// (descriptors submitted meanwhile are not waited for).
func (w *workQueue) drain() {
	w.mu.Lock()
	w.waitEarlierLocked()
	w.mu.Unlock()
}

// abort discards the queued descriptors (without completion records) and
// waits for those in progress.
func (w *workQueue) abort() {
	w.mu.Lock()
	w.gen.Add(1)
	w.waitEarlierLocked()
	w.mu.Unlock()
}

func (w *workQueue) abortPASID(pasid uint32) {
	w.mu.Lock()
	if !w.enabled {
		w.mu.Unlock()
		return
	}
	if w.params.dedicated {
		if w.params.pasid == pasid {
			w.mu.Unlock()
			w.abort()
			return
		}
		w.mu.Unlock()
		return
	}
	if w.pasidAbort == nil {
		w.pasidAbort = map[uint32]uint64{}
	}
	w.pasidAbort[pasid] = w.seq
	w.pasidAborted.Store(true)
	w.mu.Unlock()
	w.drain()
}

// disable stops accepting descriptors and waits for the accepted ones.
func (w *workQueue) disable() {
	w.mu.Lock()
	w.enabled = false
	w.cond.Broadcast() // room waiters give up
	w.waitSlotLocked(0)
	w.waitSlotLocked(1)
	w.params = nil
	w.pasidAbort = nil
	w.pasidAborted.Store(false)
	w.mu.Unlock()
}

// DefaultSpin is how long an idle engine (or the vfio-user portal poller)
// keeps looking for work before it parks, unless Config.Spin says otherwise.
const DefaultSpin = 50 * time.Microsecond

// group is a running group: its queue and its engines.
type group struct {
	id       int
	q        ring
	spin     time.Duration
	engines  int
	idlePoll *atomic.Pointer[func() int] // Device.SetIdlePoll

	_        [64]byte
	sleepers atomic.Int32  // engines parked (or about to)
	futex    atomic.Uint32 // event count the parked engines sleep on
	stopping atomic.Bool
	kicked   atomic.Int64  // clock() of the last wake-up sent
	parks    atomic.Uint64 // times an engine parked (statistics)
	wg       sync.WaitGroup
}

func startGroup(id, engines, capacity int, spin time.Duration, idlePoll *atomic.Pointer[func() int], run func(*work, *[]byte)) *group {
	g := &group{id: id, spin: spin}
	g.q.init(max(capacity, 1), engines == 1)
	g.engines = engines
	g.idlePoll = idlePoll
	for range engines {
		g.wg.Add(1)
		go g.engine(run)
	}
	return g
}

// engine is one engine's goroutine.
func (g *group) engine(run func(*work, *[]byte)) {
	defer g.wg.Done()
	// Guest memory may vanish under the engine (see exec.go): on this
	// goroutine a fault is a panic that the descriptor recovers from. The
	// flag is per goroutine, so it is set once here, not per descriptor.
	debug.SetPanicOnFault(true)
	var buf []byte
	local := new(work) // reused: no allocation per descriptor
	st := spinState{cur: g.spin}
	for {
		if it := g.q.pop(local); it != nil {
			run(it, &buf)
			continue
		}
		if g.idle(&st) {
			return
		}
	}
}

// Spinning: the ring is polled spinCheck times between yields of the P
// (runtime.Gosched: other goroutines of this process, such as a submitter
// or a poller, run).
const (
	spinCheck = 256
	// pollCheck: ring checks between two passes over an idle poller's
	// page (a pass is a few atomic loads; a descriptor written to a mapped
	// portal waits for the next one).
	pollCheck = 16
	// minSpin: an adaptive spin window shorter than this is no spin.
	minSpin = time.Microsecond
	// probeAfter: parks without spinning, each woken soon after, before the
	// engine tries spinning again, with the whole window: a shorter probe
	// loses to a submitter that is itself slowed by waking the engine (a
	// futex wake-up costs it microseconds), and the engine never
	// recovers.
	probeAfter = 8
)

// clock is a monotonic time in nanoseconds (since the package started).
var clockBase = time.Now()

func clock() int64 { return int64(time.Since(clockBase)) }

// spinState is an engine's adaptive spin window.
type spinState struct {
	cur    time.Duration // current window (0: park at once)
	shorts int           // parks without spinning that were soon woken
}

// idle waits for work: it spins for up to st.cur, then parks until a
// submitter wakes it. It returns true when the group is stopping and
// nothing is left.
//
// The window adapts per engine: a spin that catches a descriptor keeps it
// (and doubles it, up to Config.Spin); a spin that runs out halves it, down
// to none, so an engine fed every few hundred microseconds (a trapped
// portal, a guest's occasional copy) or one whose spinning keeps the
// submitter off the CPU stops paying a core for nothing. Without a spin,
// probeAfter wake-ups in a row that came within the window make it try a
// short spin again. An engine that polls a mapped portal while it spins
// (SetIdlePoll) keeps the whole window.
func (g *group) idle(st *spinState) bool {
	if g.stopping.Load() {
		return !g.q.ready()
	}
	start := clock()
	poll := g.idlePoll.Load() != nil
	if poll {
		// Spinning is how this device sees its descriptors (the engine
		// polls a mapped portal, or feeds itself for Runner.Pull): the
		// window is not adapted away, or a slow spell would leave every
		// descriptor to a sleeping poller, and it is whole even if it
		// had shrunk before the poller was set.
		st.cur = g.spin
	}
	spun := st.cur > 0
	if spun {
		// With a mapped portal to poll, the ring only holds what this
		// engine's own passes (or the page's goroutine) submitted: look at
		// the page first, and every pollCheck ring checks.
		for i := 0; ; i++ {
			if poll && i%pollCheck == 0 && g.pollIdle() {
				return false // took descriptors: the ring has them
			}
			if g.q.ready() {
				st.cur = min(2*st.cur, g.spin)
				return false
			}
			if i%spinCheck == spinCheck-1 {
				runtime.Gosched()
				if clock()-start >= int64(st.cur) || g.stopping.Load() {
					break
				}
			}
		}
	}
	if !g.park() {
		// Work arrived as the spin ended: not a spin that failed.
		if spun {
			st.cur = min(2*st.cur, g.spin)
		}
		return false
	}
	switch gap := g.kicked.Load() - start; {
	case g.idlePoll.Load() != nil:
		// A polling engine's window is not adapted: the next idle
		// starts it whole (above).
	case spun:
		if st.cur /= 2; st.cur < minSpin {
			st.cur = 0
		}
	case g.spin > 0 && gap >= 0 && gap <= int64(g.spin)/2:
		if st.shorts++; st.shorts >= probeAfter {
			st.cur, st.shorts = g.spin, 0
		}
	default:
		st.shorts = 0
	}
	return false
}

// pollIdle runs the device's idle poller, if any; true if it took work.
func (g *group) pollIdle() bool {
	if p := g.idlePoll.Load(); p != nil && !g.stopping.Load() {
		return (*p)() > 0
	}
	return false
}

// Parking. An engine sleeps in the futex system call on g.futex, its own
// thread blocked in the kernel, and a submitter wakes it with FUTEX_WAKE.
// Not a channel: a goroutine readied by a channel send is queued on the
// sender's P, where it waits until that P schedules or another thread
// steals it, and the sender is a vCPU about to re-enter KVM_RUN or a
// poller that keeps running (milliseconds, measured, on a busy 2-core
// host). The woken thread instead takes any idle P when it returns from the
// system call.
//
// The protocol is an event count: a parking engine announces itself in
// sleepers, reads g.futex, looks at the ring once more and sleeps only if
// g.futex still holds what it read; a submitter publishes, then reads
// sleepers and, if an engine sleeps or is about to, bumps g.futex and wakes
// one. Either the engine sees the descriptor or the submitter sees the
// engine (sequentially consistent atomics).
//
// park reports whether the engine slept.
func (g *group) park() (slept bool) {
	g.sleepers.Add(1)
	for {
		seq := g.futex.Load()
		if g.q.ready() || g.stopping.Load() {
			break
		}
		if !slept {
			g.parks.Add(1)
			slept = true
		}
		futexWait(&g.futex, seq)
	}
	g.sleepers.Add(-1)
	return slept
}

// SetIdlePoll gives the engines a function to call while they spin for
// work (nil: none): a poller of memory that descriptors are written to
// without an exit (the mapped portal of a vfio-user server). It returns how
// many descriptors it took and submitted. It runs on the engine's
// goroutine, so it must not block: an engine that waits for a lock that a
// thread stopping the device holds never exits.
func (d *Device) SetIdlePoll(poll func() int) {
	if poll == nil {
		d.idlePoll.Store(nil)
		return
	}
	d.idlePoll.Store(&poll)
}

// Parks is how many times the engines of the running groups have parked
// (slept after their spin window); for benchmarks and diagnostics.
func (d *Device) Parks() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var n uint64
	for _, g := range d.groups {
		n += g.parks.Load()
	}
	return n
}

// kick wakes a parked engine after a descriptor was published.
func (g *group) kick() {
	if g.sleepers.Load() != 0 {
		g.kicked.Store(clock())
		g.futex.Add(1)
		futexWake(&g.futex, 1)
	}
}

func (g *group) shutdown() {
	g.stopping.Store(true)
	g.futex.Add(1)
	futexWake(&g.futex, 1<<30)
	g.wg.Wait()
}

const (
	futexWaitPrivate = 0 | 128 // FUTEX_WAIT | FUTEX_PRIVATE_FLAG
	futexWakePrivate = 1 | 128 // FUTEX_WAKE | FUTEX_PRIVATE_FLAG
)

// futexWait sleeps while *addr == val (or until woken, or a signal).
func futexWait(addr *atomic.Uint32, val uint32) {
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitPrivate, uintptr(val), 0, 0, 0)
}

// futexWake wakes up to n threads sleeping on addr.
func futexWake(addr *atomic.Uint32, n int) {
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakePrivate, uintptr(n), 0, 0, 0)
}

// ring is a bounded multi-producer FIFO read by the group's engines: an
// array of slots, each with a sequence number (D. Vyukov's array queue):
// seq == pos means the slot is free for the producer at position pos,
// seq == pos+1 that it holds the item for the consumer at pos. Producers
// claim positions with one atomic add on tail, fill the slot in place and
// publish it with one atomic store.
//
// A producer never finds the ring full: a WQ accepts a descriptor only
// while its occupancy (accepted and not yet completed) is below its size,
// and the group's ring has at least as many slots as its WQs' sizes
// together. With a single engine the descriptor is even run in place, in
// its slot: descriptors complete in order, so while one is counted, the
// ring's other slots hold fewer than its size, and the tail cannot come
// back to it. Several engines complete out of order, so each copies its
// descriptor out (one copy of 128 bytes) and frees the slot (seq =
// pos+size) before a producer may use it again.
type ring struct {
	_      [64]byte
	tail   atomic.Uint64 // next position to fill
	_      [56]byte
	head   atomic.Uint64 // next position to take (several engines)
	head1  uint64        // the same, for a single engine
	single bool
	_      [40]byte
	mask   uint64
	slots  []ringSlot
}

// ringSlot is two cache lines: the submitter filling one slot never
// shares a line with the engine reading the one before.
type ringSlot struct {
	seq atomic.Uint64
	w   work
	_   [128 - 8 - unsafe.Sizeof(work{})]byte
}

func (r *ring) init(capacity int, single bool) {
	n := 1
	for n < capacity {
		n <<= 1
	}
	r.mask = uint64(n - 1)
	r.single = single
	r.slots = make([]ringSlot, n)
	for i := range r.slots {
		r.slots[i].seq.Store(uint64(i))
	}
}

// reserve claims the slot at the tail; the caller fills s.w and publishes.
func (r *ring) reserve() (s *ringSlot, pos uint64) {
	pos = r.tail.Add(1) - 1
	s = &r.slots[pos&r.mask]
	if !r.single {
		// Freed already, unless the engine that took its last descriptor
		// was preempted between taking and copying it while the others
		// completed a ring's worth: wait for that copy.
		for s.seq.Load() != pos {
			runtime.Gosched()
		}
	}
	return s, pos
}

func (r *ring) publish(s *ringSlot, pos uint64) { s.seq.Store(pos + 1) }

// pop returns the oldest item, in its slot (single engine) or copied into
// local; nil when the ring is empty.
func (r *ring) pop(local *work) *work {
	if r.single {
		pos := r.head1
		s := &r.slots[pos&r.mask]
		if s.seq.Load() != pos+1 {
			return nil
		}
		r.head1 = pos + 1
		return &s.w
	}
	pos := r.head.Load()
	for {
		s := &r.slots[pos&r.mask]
		if s.seq.Load() != pos+1 {
			return nil // empty (or the producer is still filling it)
		}
		if r.head.CompareAndSwap(pos, pos+1) {
			copyWork(local, &s.w)
			s.seq.Store(pos + r.mask + 1)
			return local
		}
		pos = r.head.Load()
	}
}

// copyWork is *dst = *src field by field: the descriptor bytes as plain
// words, not through the runtime's typed copy of a struct with a pointer.
func copyWork(dst, src *work) {
	dst.desc = src.desc
	dst.p = src.p
	dst.gen, dst.seq, dst.pasid = src.gen, src.seq, src.pasid
	dst.slot, dst.ims, dst.priv, dst.isDrn = src.slot, src.ims, src.priv, src.isDrn
	dst.guarded, dst.shared = src.guarded, src.shared
}

// ready reports whether an item is waiting.
func (r *ring) ready() bool {
	pos := r.head1
	if !r.single {
		pos = r.head.Load()
	}
	return r.slots[pos&r.mask].seq.Load() == pos+1
}
