package dsa

import (
	"fmt"
	"time"

	"godvm/devices/bus"
	"godvm/guestmem"
)

// Runner drives the engines without a guest or a driver, for benchmarks
// (`godvm bench`) and tools: a device configured as accel-config's kernel
// recipe does it (one dedicated WQ of RunnerWQSize entries in group 0 with all
// engines), fed through the WQ's portal with MOVDIR64B. Descriptors address
// mem by guest-physical address, exactly as a guest's would.
type Runner struct {
	d    *Device
	wqs  int
	size int // each WQ's size
}

// RunnerWQSize is the Runner's WQ size (descriptors in flight).
const RunnerWQSize = 128

// RunnerOptions shape a Runner.
type RunnerOptions struct {
	// WQs is the number of independent dedicated WQs (default 1), each in
	// its own group with Engines engines: work queues that share nothing.
	WQs int
	// Engines per WQ (default 1).
	Engines int
	// WQSize is each WQ's size, the descriptors in flight (default
	// RunnerWQSize; WQs*WQSize at most MaxWQSize). A deep queue keeps a
	// small descriptor's engine busy while its submitter, parked on a full
	// WQ, wakes up.
	WQSize int
	// Spin is Config.Spin (0: DefaultSpin; negative: park at once).
	Spin time.Duration
}

// NewRunner makes a Runner with the given number of engines (1..MaxEngines).
func NewRunner(mem *guestmem.Memory, engines int) (*Runner, error) {
	if engines < 1 || engines > MaxEngines {
		return nil, fmt.Errorf("dsa: runner: engines=%d out of range 1..%d", engines, MaxEngines)
	}
	return NewRunnerWith(mem, RunnerOptions{Engines: engines})
}

// NewRunnerWith makes a Runner of opt's shape.
func NewRunnerWith(mem *guestmem.Memory, opt RunnerOptions) (*Runner, error) {
	nwq, engines, size := max(opt.WQs, 1), max(opt.Engines, 1), opt.WQSize
	if size <= 0 {
		size = RunnerWQSize
	}
	if nwq > MaxGroups || nwq*engines > MaxEngines || nwq*size > MaxWQSize {
		return nil, fmt.Errorf("dsa: runner: %d WQs of %d engines and %d entries is too many", nwq, engines, size)
	}
	cfg := Config{WQs: nwq, WQSize: nwq * size, Groups: nwq, Engines: nwq * engines, Version: 0x100, Spin: opt.Spin}
	d, err := New(mem, cfg, nil)
	if err != nil {
		return nil, err
	}
	d.SetBusMaster(true)
	w := d.BAR0()
	w32 := func(off uint64, v uint32) {
		var b [4]byte
		b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		w.Write(off, b[:])
	}
	for q := range nwq {
		wq := WQCFGOffset + uint64(q*d.wqcfgSize)
		w32(wq, uint32(size))
		w32(wq+8, wqModeDedicated|1<<wqPrioShift|wqPriv)
		w32(wq+12, 31|10<<5)
		grp := GRPCFGOffset + uint64(q*GRPCFGSize)
		w32(grp, 1<<q)
		w32(grp+32, (uint32(1)<<engines-1)<<(q*engines))
	}
	cmds := []uint32{CmdEnableDevice << 20}
	for q := range nwq {
		cmds = append(cmds, CmdEnableWQ<<20|uint32(q))
	}
	for _, c := range cmds {
		w32(RegCmd, c)
		if st := d.cmdStatus(); st != 0 {
			d.Close()
			return nil, fmt.Errorf("dsa: runner setup: command %#x failed with %#x", c, st)
		}
	}
	return &Runner{d: d, wqs: nwq, size: size}, nil
}

func (d *Device) cmdStatus() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmdSts
}

// Submit queues one descriptor on WQ 0, waiting while the WQ is full (so
// the device never sees a submission to a full WQ, as with the kernel
// driver, which bounds its descriptors by the WQ size). A full WQ is waited
// on until only a quarter of it is left, so the engines wake the submitter
// (a thread wake-up costs the waker microseconds on a VM) once per three
// quarters of a queue, not once per descriptor.
func (r *Runner) Submit(desc *[64]byte) { r.SubmitTo(0, desc) }

// SubmitTo is Submit on WQ wq (0..WQs-1).
func (r *Runner) SubmitTo(wq int, desc *[64]byte) {
	w := r.d.wqs[wq]
	w.mu.Lock()
	for r.d.submitLocked(w, PortalPage, desc, bus.MOVDIR64B, false) == wqFull {
		w.waitRoomLocked(r.size / 4)
	}
	w.mu.Unlock()
}

// Pull runs n descriptors on WQ wq, made by fill (i: 0..n-1), and returns
// when all have completed. The engines submit them themselves, through the
// WQ's portal as Submit does, a batch of up to batch whenever they run out
// of work: the way they take descriptors from a mapped vfio-user portal
// (SetIdlePoll), so feeding them costs their own CPU the submissions and no
// thread wake-ups. The caller submits the first batch (it wakes a parked
// engine), and another only when nothing moved for a millisecond. fill runs
// on an engine's goroutine and must not block; it is called once per
// descriptor, in order. Engines that park at once (RunnerOptions.Spin < 0)
// do not poll: the caller submits everything.
func (r *Runner) Pull(wq, n, batch int, fill func(i int, d *[64]byte)) {
	if n <= 0 {
		return
	}
	w := r.d.wqs[wq]
	batch = max(batch, 1)
	var (
		d       [64]byte
		next    int  // descriptors made so far
		pending bool // d was made and not yet accepted
		all     = make(chan struct{})
	)
	// feed submits up to batch descriptors (w.mu held).
	feed := func() int {
		k := 0
		for k < batch && (pending || next < n) {
			if !pending {
				fill(next, &d)
				next++
				pending = true
			}
			if r.d.submitLocked(w, PortalPage, &d, bus.MOVDIR64B, false) != submitted {
				break
			}
			pending = false
			k++
			if next == n {
				close(all)
			}
		}
		return k
	}
	if r.d.cfg.spin() > 0 {
		poll := func() int {
			if !w.mu.TryLock() { // never block an engine
				return 0
			}
			defer w.mu.Unlock()
			return feed()
		}
		r.d.SetIdlePoll(poll)
		defer r.d.SetIdlePoll(nil)
		w.mu.Lock()
		feed()
		w.mu.Unlock()
		// The engines pull the rest. One that found the WQ locked for its
		// whole spin window (this goroutine preempted while it held it)
		// has parked with nothing left to wake it: when nothing moved for
		// a tick, feed a batch from here, which wakes it.
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
	wait:
		for last := -1; ; {
			select {
			case <-all:
				break wait
			case <-tick.C:
				w.mu.Lock()
				if next == last {
					feed()
				}
				last = next
				w.mu.Unlock()
			}
		}
	} else {
		for next < n || pending {
			w.mu.Lock()
			for feed() == 0 && (pending || next < n) {
				w.waitRoomLocked(r.size / 4)
			}
			w.mu.Unlock()
		}
	}
	w.drain()
}

// Parks is how many times the engines have parked (gone to sleep after
// their spin window) since the Runner started.
func (r *Runner) Parks() uint64 { return r.d.Parks() }

// Wait returns when every submitted descriptor has completed (completion
// records written).
func (r *Runner) Wait() {
	for _, w := range r.d.wqs {
		w.drain()
	}
}

// WaitWQ is Wait for one WQ.
func (r *Runner) WaitWQ(wq int) { r.d.wqs[wq].drain() }

// SWErrors reports whether a software error was logged (and clears it).
func (r *Runner) SWErrors() (SWError, bool) {
	r.d.irqMu.Lock()
	defer r.d.irqMu.Unlock()
	q, addr := r.d.swErr[0], r.d.swErr[2]
	r.d.swErr = [4]uint64{}
	if q&1 == 0 {
		return SWError{}, false
	}
	return SWError{Code: uint8(q >> 8), WQ: int(q >> 16 & 0xff), Opcode: uint8(q >> 32), FaultAddr: addr}, true
}

// Close stops the engines.
func (r *Runner) Close() { r.d.Close() }

// RunDescriptors runs descs on a fresh Runner with the given number of
// engines and returns when all have completed. Results are in the
// descriptors' completion records in mem.
func RunDescriptors(mem *guestmem.Memory, engines int, descs [][64]byte) error {
	r, err := NewRunner(mem, engines)
	if err != nil {
		return err
	}
	defer r.Close()
	for i := range descs {
		r.Submit(&descs[i])
	}
	r.Wait()
	return nil
}

// Execute runs one descriptor synchronously on the calling goroutine (no
// queue, no engine goroutine), as a dedicated WQ with 2 MiB maximum transfer
// and 32-descriptor batches would, writes its completion record and returns
// the operation's status (whether or not the record was written).
func Execute(mem *guestmem.Memory, desc *[64]byte) byte {
	x := standaloneExecutor(mem)
	w := work{desc: *desc, p: &defaultParams}
	var buf []byte
	return x.run(&w, &w.desc, -1, &buf)
}

// standaloneExecutor is the executor Execute runs descriptors with: one
// interrupt vector, none raised, no SWERROR, the DSA 1.0 operations.
func standaloneExecutor(mem *guestmem.Memory) executor {
	x := executor{vectors: 1, opcap: OpCapDSA1, readbackCap: true}
	x.setMem(mem)
	return x
}

var defaultParams = wqParams{dedicated: true, maxXfer: 1 << 21, maxBatch: 32, opcap: [4]uint64{OpCapDSA1}}
