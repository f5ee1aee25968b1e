package dsa

import (
	"fmt"

	"godvm/devices/bus"
	"godvm/guestmem"
)

// Runner drives the engines without a guest or a driver, for benchmarks
// (`godvm bench`) and tools: a device configured as accel-config's kernel
// recipe does it (one dedicated WQ of RunnerWQSize entries in group 0 with all
// engines), fed through the WQ's portal with MOVDIR64B. Descriptors address
// mem by guest-physical address, exactly as a guest's would.
type Runner struct {
	d *Device
}

// RunnerWQSize is the Runner's WQ size (descriptors in flight).
const RunnerWQSize = 128

// NewRunner makes a Runner with the given number of engines (1..MaxEngines).
func NewRunner(mem *guestmem.Memory, engines int) (*Runner, error) {
	cfg := Config{WQs: 1, WQSize: RunnerWQSize, Groups: 1, Engines: engines, Version: 0x100}
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
	w32(WQCFGOffset, RunnerWQSize)
	w32(WQCFGOffset+8, wqModeDedicated|1<<wqPrioShift|wqPriv)
	w32(WQCFGOffset+12, 31|10<<5)
	w32(GRPCFGOffset, 1)
	w32(GRPCFGOffset+32, uint32(1)<<engines-1)
	for _, c := range []uint32{CmdEnableDevice << 20, CmdEnableWQ << 20} {
		w32(RegCmd, c)
		if st := d.cmdStatus(); st != 0 {
			d.Close()
			return nil, fmt.Errorf("dsa: runner setup: command %#x failed with %#x", c, st)
		}
	}
	return &Runner{d: d}, nil
}

func (d *Device) cmdStatus() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmdSts
}

// Submit queues one descriptor, waiting while the WQ is full (so the device
// never sees a submission to a full WQ, as with the kernel driver, which
// bounds its descriptors by the WQ size).
func (r *Runner) Submit(desc *[64]byte) {
	w := r.d.wqs[0]
	for {
		w.mu.Lock()
		for w.occupancy >= RunnerWQSize && w.enabled {
			w.cond.Wait()
		}
		en := w.enabled
		w.mu.Unlock()
		if !en || r.d.Portals().Write64B(PortalPage, desc, bus.MOVDIR64B) {
			return
		}
	}
}

// Wait returns when every submitted descriptor has completed (completion
// records written).
func (r *Runner) Wait() { r.d.wqs[0].drain() }

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
