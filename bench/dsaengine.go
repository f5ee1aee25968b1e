package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
	"time"

	"godvm/devices/dsa"
	"godvm/guestmem"
)

// DSAEngineScenario measures the software DSA's engines without a guest:
// descriptors go through the portal, the WQ and the engine goroutines into
// memfd-backed guest memory, as a guest's would. Next to each size, the
// host's own copy() of the same bytes (the same guest-memory source and
// destination) is measured in the same run, and the rows of issue 14's
// table are reported as ratios to it.
func DSAEngineScenario() Scenario {
	return Scenario{
		Name: "dsa-engine",
		Description: "software DSA engines, no guest: MB/s per operation, size and engine count, vs host copy() of the same bytes; " +
			"scaling over independent WQs; descriptor latency (spinning and parked engine); descriptors/s through a mapped vfio-user portal; idle CPU",
		Run: runDSAEngine,
	}
}

const (
	engSrc   = 0
	engDst   = 16 << 20
	engSrc2  = 8 << 20 // second WQ's buffers (scaling)
	engDst2  = 32 << 20
	engCR    = 48 << 20
	engCR2   = engCR + 1<<20
	engMem   = 64 << 20
	dsaOK    = 0x01 // completion status: success
	crStride = 32
	crSlots  = 1024
)

func engineDesc(op byte, size int) *[64]byte {
	var d [64]byte
	le := binary.LittleEndian
	le.PutUint32(d[4:], uint32(dsa.FlagCRAV|dsa.FlagRCR)|uint32(op)<<24)
	le.PutUint64(d[8:], engCR)
	switch op {
	case dsa.OpFill:
		le.PutUint64(d[16:], 0x0706050403020100) // pattern
	default:
		le.PutUint64(d[16:], engSrc)
	}
	if op != dsa.OpCRCGen {
		le.PutUint64(d[24:], engDst)
	}
	le.PutUint32(d[32:], uint32(size))
	return &d
}

func runDSAEngine(ctx context.Context, env *Env, r *Recorder) error {
	mem, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: engMem}})
	if err != nil {
		return err
	}
	defer mem.Close()
	src, _ := mem.Slice(engSrc, 1<<20)
	for i := range src {
		src[i] = byte(i * 7)
	}
	src2, _ := mem.Slice(engSrc2, 1<<20)
	copy(src2, src)
	sizes, engines, dur := []int{4 << 10, 64 << 10, 1 << 20}, []int{1, 2, 4}, 300*time.Millisecond
	if env.Quick {
		sizes, engines, dur = []int{4 << 10, 64 << 10}, []int{1, 2}, 60*time.Millisecond
	}
	r.Info("engine spin window", dsa.Config{}.SpinWindow().String())
	ops := []struct {
		name string
		op   byte
	}{{"memmove", dsa.OpMemMove}, {"fill", dsa.OpFill}, {"compare", dsa.OpCompare}, {"crcgen", dsa.OpCRCGen}}

	for _, n := range sizes {
		host, err := hostCopyGuest(mem, engSrc, engDst, n, dur)
		if err != nil {
			return err
		}
		r.Add(fmt.Sprintf("host copy() %s", kib(n)), "MB/s", host)
		for _, e := range engines {
			// A deep WQ: the submitter, parked on a full WQ, is woken
			// with a quarter of it still queued, so the engines never run
			// dry while its thread wakes up.
			run, err := dsa.NewRunnerWith(mem, dsa.RunnerOptions{Engines: e, WQSize: dsa.MaxWQSize})
			if err != nil {
				return err
			}
			for _, o := range ops {
				if ctx.Err() != nil {
					run.Close()
					return ctx.Err()
				}
				if err := mem.WriteAt(src[:n], engDst); err != nil { // compare finds equal data
					run.Close()
					return err
				}
				mbps, err := engineThroughput(mem, run, []*[64]byte{engineDesc(o.op, n)}, []uint64{engCR}, n, dur)
				if err != nil {
					run.Close()
					return fmt.Errorf("%s %s: %w", o.name, kib(n), err)
				}
				r.Add(fmt.Sprintf("%s %s %d engine(s)", o.name, kib(n), e), "MB/s", mbps)
				if o.op == dsa.OpMemMove && e == 1 {
					r.Add(fmt.Sprintf("memmove %s 1 engine / host copy()", kib(n)), "ratio", mbps/host)
					pulled, err := enginePulled(mem, run, engineDesc(o.op, n), engCR, n, dur)
					if err != nil {
						run.Close()
						return fmt.Errorf("%s %s pulled: %w", o.name, kib(n), err)
					}
					r.Add(fmt.Sprintf("memmove %s 1 engine, fed on its own core", kib(n)), "MB/s", pulled)
					r.Add(fmt.Sprintf("memmove %s 1 engine, fed on its own core / host copy()", kib(n)), "ratio", pulled/host)
				}
			}
			run.Close()
		}
	}
	if err := engineScaling(ctx, mem, r, 64<<10, dur); err != nil {
		return err
	}
	if err := engineLatency(mem, r); err != nil {
		return err
	}
	if err := engineIdleCPU(mem, r); err != nil {
		return err
	}
	return portalThroughput(ctx, r, dur)
}

// hostCopyGuest is the baseline: copy() of n bytes between the same guest
// memory the engines copy (the host's own memmove of the same bytes).
func hostCopyGuest(mem *guestmem.Memory, src, dst uint64, n int, dur time.Duration) (float64, error) {
	s, err := mem.Slice(src, uint64(n))
	if err != nil {
		return 0, err
	}
	d, err := mem.Slice(dst, uint64(n))
	if err != nil {
		return 0, err
	}
	mbps, _, err := Throughput(n, dur, func() error { copy(d, s); return nil })
	return mbps, err
}

// engineThroughput feeds WQ i of run with descs[i] (one submitter goroutine
// per WQ, each cycling through crSlots completion records from crs[i]) and
// returns the MB/s of all WQs together, every descriptor counted complete.
func engineThroughput(mem *guestmem.Memory, run *dsa.Runner, descs []*[64]byte, crs []uint64, n int, dur time.Duration) (float64, error) {
	seq := make([]int, len(descs))
	mbps, _, err := ThroughputN(n*len(descs), dur, func(k int) error {
		var wg sync.WaitGroup
		for q := range descs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := *descs[q]
				for i := 0; i < k; i++ {
					setCR(&d, crs[q], seq[q])
					seq[q]++
					run.SubmitTo(q, &d)
				}
			}()
		}
		wg.Wait()
		run.Wait() // timed: every descriptor counted has completed
		return nil
	})
	if err != nil {
		return 0, err
	}
	for q := range descs {
		if err := lastCompleted(mem, crs[q], seq[q]); err != nil {
			return 0, err
		}
	}
	return mbps, nil
}

// setCR gives descriptor seq its completion record: a distinct one per
// descriptor in flight, cycling through crSlots records from cr.
func setCR(d *[64]byte, cr uint64, seq int) {
	binary.LittleEndian.PutUint64(d[8:], cr+uint64(crStride*(seq%crSlots)))
}

// lastCompleted checks the completion record of the last of seq
// descriptors given records by setCR.
func lastCompleted(mem *guestmem.Memory, cr uint64, seq int) error {
	if st, _ := mem.ReadU8(cr + uint64(crStride*((seq-1)%crSlots))); st != dsaOK {
		return fmt.Errorf("completion status %#x, want success", st)
	}
	return nil
}

// pullBatch is how many descriptors an engine that runs dry submits for
// itself at a time (enginePulled).
const pullBatch = 64

// enginePulled is engineThroughput with the engine feeding itself
// (dsa.Runner.Pull): it submits pullBatch descriptors through the WQ's portal
// whenever it runs dry, as it takes descriptors from a mapped vfio-user
// portal, so the submissions cost its own core and nothing wakes a thread.
// The same descriptors, WQ, ring and completion records as the submitter
// goroutine's; what it leaves out is the handing of descriptors from one
// core to another and the waking of the submitter.
func enginePulled(mem *guestmem.Memory, run *dsa.Runner, desc *[64]byte, cr uint64, n int, dur time.Duration) (float64, error) {
	seq := 0
	mbps, _, err := ThroughputN(n, dur, func(k int) error {
		run.Pull(0, k, pullBatch, func(_ int, d *[64]byte) {
			*d = *desc
			setCR(d, cr, seq)
			seq++
		})
		return nil
	})
	if err != nil {
		return 0, err
	}
	return mbps, lastCompleted(mem, cr, seq)
}

// engineScaling: memmove of n bytes on 2 independent WQs (each its own
// group, engine, buffers and submitter) against 1, and the host's own copy()
// on 2 goroutines against 1 over the same buffers (what the machine's cores
// and memory allow right now).
func engineScaling(ctx context.Context, mem *guestmem.Memory, r *Recorder, n int, dur time.Duration) error {
	d1 := engineDesc(dsa.OpMemMove, n)
	d2 := engineDesc(dsa.OpMemMove, n)
	binary.LittleEndian.PutUint64(d2[16:], engSrc2)
	binary.LittleEndian.PutUint64(d2[24:], engDst2)
	var rate [3]float64
	for i, wqs := range []int{1, 2} {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		run, err := dsa.NewRunnerWith(mem, dsa.RunnerOptions{WQs: wqs, Engines: 1, WQSize: dsa.MaxWQSize / 2})
		if err != nil {
			return err
		}
		descs, crs := []*[64]byte{d1, d2}[:wqs], []uint64{engCR, engCR2}[:wqs]
		rate[i], err = engineThroughput(mem, run, descs, crs, n, dur)
		run.Close()
		if err != nil {
			return fmt.Errorf("scaling, %d WQs: %w", wqs, err)
		}
	}
	r.Add(fmt.Sprintf("memmove %s 1 WQ×1 engine", kib(n)), "MB/s", rate[0])
	r.Add(fmt.Sprintf("memmove %s 2 WQs×1 engine", kib(n)), "MB/s", rate[1])
	r.Add(fmt.Sprintf("memmove %s 2 engines on 2 cores / 1 engine", kib(n)), "ratio", rate[1]/rate[0])
	// The same two copies on host goroutines.
	pairs := [][2]uint64{{engSrc, engDst}, {engSrc2, engDst2}}
	for i, th := range []int{1, 2} {
		var total float64
		var mu sync.Mutex
		var wg sync.WaitGroup
		var ferr error
		for t := range th {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := hostCopyGuest(mem, pairs[t][0], pairs[t][1], n, dur)
				mu.Lock()
				total += v
				if err != nil {
					ferr = err
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if ferr != nil {
			return ferr
		}
		rate[i] = total
	}
	r.Add(fmt.Sprintf("host copy() %s 2 goroutines / 1", kib(n)), "ratio", rate[1]/rate[0])
	return nil
}

// engineLatency: one 64-byte MEMMOVE at a time, from its submission to its
// completion record's status byte, median of many. "spinning" submits the
// next descriptor as soon as the last completed (the engine is idle but
// still in its spin window); "parked" waits 5 ms between descriptors, so the
// engine has parked and the time includes waking its thread.
func engineLatency(mem *guestmem.Memory, r *Recorder) error {
	run, err := dsa.NewRunner(mem, 1)
	if err != nil {
		return err
	}
	defer run.Close()
	warm, err := descriptorLatency(mem, run, 2000, 0)
	if err != nil {
		return err
	}
	p0 := run.Parks()
	cold, err := descriptorLatency(mem, run, 40, 5*time.Millisecond)
	if err != nil {
		return err
	}
	r.Add("descriptor → completion record, idle engine spinning (memmove 64 B)", "µs", warm.Seconds()*1e6)
	r.Add("descriptor → completion record, engine parked (memmove 64 B)", "µs", cold.Seconds()*1e6)
	r.Info("parked latency", fmt.Sprintf("%d of 40 descriptors found the engine parked", run.Parks()-p0))
	return nil
}

// descriptorLatency submits one small MEMMOVE at a time (gap apart) and
// waits for its completion record's status byte, returning the median time.
func descriptorLatency(mem *guestmem.Memory, run *dsa.Runner, n int, gap time.Duration) (time.Duration, error) {
	d := engineDesc(dsa.OpMemMove, 64)
	m := Metric{}
	for k := 0; k < n; k++ {
		if err := mem.WriteU8(engCR, 0); err != nil {
			return 0, err
		}
		if gap > 0 {
			time.Sleep(gap)
		}
		t0 := time.Now()
		run.Submit(d)
		for {
			st, err := mem.ReadU8(engCR)
			if err != nil {
				return 0, err
			}
			if st != 0 {
				if st != dsaOK {
					return 0, fmt.Errorf("latency probe: completion status %#x", st)
				}
				break
			}
			if time.Since(t0) > time.Second {
				return 0, fmt.Errorf("latency probe: no completion record after 1 s")
			}
		}
		m.Values = append(m.Values, float64(time.Since(t0)))
	}
	m.Summarise()
	return time.Duration(m.Median), nil
}

// engineIdleCPU: the process's CPU time per second of wall time while a
// device that has just worked sits idle (its engines past their spin
// window, parked).
func engineIdleCPU(mem *guestmem.Memory, r *Recorder) error {
	run, err := dsa.NewRunnerWith(mem, dsa.RunnerOptions{WQs: 2, Engines: 1})
	if err != nil {
		return err
	}
	defer run.Close()
	d := engineDesc(dsa.OpMemMove, 4<<10)
	for i := 0; i < 1000; i++ {
		run.SubmitTo(i%2, d)
	}
	run.Wait()
	r.Add("idle CPU, 2 engines after work", "ms/s", idleCPU(20*time.Millisecond, time.Second))
	return nil
}

// idleCPU waits settle, then returns the process's CPU milliseconds per
// second over span.
func idleCPU(settle, span time.Duration) float64 {
	time.Sleep(settle)
	c0, t0 := processCPU(), time.Now()
	time.Sleep(span)
	return float64(processCPU()-c0) / float64(time.Since(t0)) * 1e3
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func kib(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}
