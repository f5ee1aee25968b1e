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
	x := executor{mem: mem, vectors: 1, opcap: OpCapDSA1, readbackCap: true}
	w := work{desc: *desc, p: &defaultParams}
	var buf []byte
	return x.run(&w, &w.desc, -1, &buf)
}

var defaultParams = wqParams{dedicated: true, maxXfer: 1 << 21, maxBatch: 32, opcap: [4]uint64{OpCapDSA1}}
