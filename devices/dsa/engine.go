package dsa

import (
	"sync"

	"godvm/devices/bus"
)

// Work queues and engines. A WQ accepts descriptors from its portals into its
// group's queue (a bounded channel sized to the group's WQ sizes, so a
// submission never blocks the vCPU); the group's engines are goroutines that
// take descriptors from that queue in FIFO order and run them in parallel.
// Occupancy counts descriptors accepted and not yet completed.

type workQueue struct {
	id   int
	mu   sync.Mutex
	cond *sync.Cond
	cfg  [16]uint32 // WQCFG dwords; dword 6 is computed

	enabled      bool
	params       *wqParams
	group        *group
	occupancy    int
	active       int // taken by an engine, not yet complete
	activeDrains int
	gen          uint64 // bumped by Abort WQ: older descriptors are discarded
	seq          uint64
	pasidAbort   map[uint32]uint64 // PASID -> seq below which descriptors are discarded
	// Drain/Abort wait only for the descriptors accepted before the
	// command: each is counted in the epoch it was accepted in.
	epoch       uint64
	outstanding map[uint64]int
	occIntGen   bool
}

func newWorkQueue(id int) *workQueue {
	w := &workQueue{id: id}
	w.cond = sync.NewCond(&w.mu)
	return w
}

func (w *workQueue) size() uint32 { return w.cfg[0] & 0xffff }

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
		v := uint32(min(w.occupancy, 0xffff))
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
	posted := kind == bus.MOVDIR64B
	if !w.enabled || w.group == nil {
		return false // posted writes ignored, DMWr answered Retry
	}
	p := w.params
	if p.dedicated != posted {
		// A DWQ answers Retry to DMWr; an SWQ ignores posted writes.
		return false
	}
	limited := page == PortalLimitedMSIX || page == PortalLimitedIMS
	limit := int(w.size())
	if !p.dedicated && limited {
		limit = min(limit, int(w.cfg[1]&0xffff))
	}
	if w.occupancy >= limit {
		if posted {
			// Descriptor to a full DWQ: dropped and reported (SWERROR 0x53).
			d.reportSWErr(SWError{Code: swerrWQFull, WQ: wqi, Desc: true, Opcode: data[7]})
		}
		return false
	}
	it := work{desc: *data, p: p, ims: page >= PortalUnlimitedIMS, gen: w.gen, seq: w.seq, epoch: w.epoch}
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
	select {
	case w.group.ch <- it:
		w.occupancy++
		if w.outstanding == nil {
			w.outstanding = map[uint64]int{}
		}
		w.outstanding[w.epoch]++
		return true
	default:
		// Cannot happen (the channel holds the group's total WQ size), but
		// never block a vCPU.
		return false
	}
}

// runWork is an engine's handling of one descriptor.
func (d *Device) runWork(it *work, buf *[]byte) {
	w := d.wqs[it.p.id]
	w.mu.Lock()
	if it.gen != w.gen || (w.pasidAbort != nil && it.seq < w.pasidAbort[it.pasid]) {
		w.retire(it)
		w.mu.Unlock()
		return // aborted: no completion record, no interrupt
	}
	w.active++
	if it.isDrn {
		w.activeDrains++
	}
	w.mu.Unlock()

	d.exec.run(it, &it.desc, -1, buf)

	w.mu.Lock()
	w.active--
	if it.isDrn {
		w.activeDrains--
	}
	w.retire(it)
	w.mu.Unlock()
}

// retire accounts for a descriptor that left the WQ (w.mu held).
func (w *workQueue) retire(it *work) {
	w.occupancy--
	if n := w.outstanding[it.epoch] - 1; n > 0 {
		w.outstanding[it.epoch] = n
	} else {
		delete(w.outstanding, it.epoch)
	}
	w.cond.Broadcast()
}

// waitEarlierLocked starts a new epoch and waits until every descriptor
// accepted before it has left the WQ (w.mu held; released while waiting).
func (w *workQueue) waitEarlierLocked() {
	w.epoch++
	for {
		busy := false
		for e := range w.outstanding {
			if e < w.epoch {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
		w.cond.Wait()
	}
}

// drainBefore is the Drain descriptor: it completes after the descriptors
// taken by engines before it. Queues are FIFO, so everything submitted
// earlier has been taken already; wait until only Drain descriptors remain
// active.
func (d *Device) drainBefore(it *work) {
	if it.p == nil || it.p.id >= len(d.wqs) {
		return
	}
	w := d.wqs[it.p.id]
	w.mu.Lock()
	for w.active > w.activeDrains {
		w.cond.Wait()
	}
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
	w.gen++
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
	w.mu.Unlock()
	w.drain()
}

// disable stops accepting descriptors and waits for the accepted ones.
func (w *workQueue) disable() {
	w.mu.Lock()
	w.enabled = false
	for w.occupancy > 0 {
		w.cond.Wait()
	}
	w.params = nil
	w.pasidAbort = nil
	w.mu.Unlock()
}

// group is a running group: its queue and its engines.
type group struct {
	id int
	ch chan work
	wg sync.WaitGroup
}

func startGroup(id, engines, capacity int, run func(*work, *[]byte)) *group {
	g := &group{id: id, ch: make(chan work, max(capacity, 1))}
	for e := range engines {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			var buf []byte
			it := new(work) // reused: no allocation per descriptor
			for v := range g.ch {
				*it = v
				it.engine = e
				run(it, &buf)
			}
		}()
	}
	return g
}

func (g *group) stop() {
	close(g.ch)
	g.wg.Wait()
}
