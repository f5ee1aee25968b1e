package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"godvm/devices/dsa"
	"godvm/guestmem"
)

// DSAEngineScenario measures the software DSA's engines without a guest:
// descriptors go through the portal, the WQ and the engine goroutines into
// memfd-backed guest memory, as a guest's would. Next to each size, the
// host's own memcpy of the same size is measured in the same run.
func DSAEngineScenario() Scenario {
	return Scenario{
		Name:        "dsa-engine",
		Description: "software DSA engines, no guest: MB/s per operation, size and engine count, vs host memcpy; descriptor latency",
		Run:         runDSAEngine,
	}
}

const (
	engSrc   = 0
	engDst   = 16 << 20
	engCR    = 48 << 20
	engMem   = 64 << 20
	dsaOK    = 0x01 // completion status: success
	crStride = 32
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
	sizes, engines, dur := []int{4 << 10, 64 << 10, 1 << 20}, []int{1, 2, 4}, 300*time.Millisecond
	if env.Quick {
		sizes, engines, dur = []int{4 << 10, 64 << 10}, []int{1, 2}, 60*time.Millisecond
	}
	ops := []struct {
		name string
		op   byte
	}{{"memmove", dsa.OpMemMove}, {"fill", dsa.OpFill}, {"compare", dsa.OpCompare}, {"crcgen", dsa.OpCRCGen}}

	for _, n := range sizes {
		host, _ := HostMemcpy(n, dur)
		r.Add(fmt.Sprintf("host memcpy %s", kib(n)), "MB/s", host)
		for _, e := range engines {
			run, err := dsa.NewRunner(mem, e)
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
				d := engineDesc(o.op, n)
				i := 0
				mbps, _, err := ThroughputN(n, dur, func(k int) error {
					for ; k > 0; k-- {
						// A distinct completion record per descriptor in flight.
						binary.LittleEndian.PutUint64(d[8:], engCR+uint64(crStride*(i%1024)))
						i++
						run.Submit(d)
					}
					run.Wait() // timed: every descriptor counted has completed
					return nil
				})
				if err != nil {
					run.Close()
					return err
				}
				if st, _ := mem.ReadU8(engCR + uint64(crStride*((i-1)%1024))); st != dsaOK {
					run.Close()
					return fmt.Errorf("%s %s: completion status %#x, want success", o.name, kib(n), st)
				}
				r.Add(fmt.Sprintf("%s %s %d engine(s)", o.name, kib(n), e), "MB/s", mbps)
				if o.op == dsa.OpMemMove && e == 1 {
					r.Add(fmt.Sprintf("memmove/memcpy %s", kib(n)), "ratio", mbps/host)
				}
			}
			run.Close()
		}
	}
	lat, err := descriptorLatency(mem, 200)
	if err != nil {
		return err
	}
	r.Add("descriptor to completion record (memmove 64 B)", "µs", lat.Seconds()*1e6)
	return nil
}

// descriptorLatency submits one small MEMMOVE at a time and waits for its
// completion record's status byte, returning the median time.
func descriptorLatency(mem *guestmem.Memory, n int) (time.Duration, error) {
	run, err := dsa.NewRunner(mem, 1)
	if err != nil {
		return 0, err
	}
	defer run.Close()
	d := engineDesc(dsa.OpMemMove, 64)
	m := Metric{}
	for k := 0; k < n; k++ {
		if err := mem.WriteU8(engCR, 0); err != nil {
			return 0, err
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

func kib(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}
