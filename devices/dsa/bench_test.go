package dsa

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"godvm/guestmem"
)

// Benchmarks of the engine (no guest). Each size reports MB/s for the DSA
// operation through the full path (portal -> queue -> engine goroutine ->
// operation -> completion record) and, in the same run, the host's own
// copy() of the same size (the host-copy sub-benchmark), with the ratio
// operation/copy() as the "x_memcpy" metric.

const benchMem = 64 << 20

func benchMemory(b *testing.B) (*guestmem.Memory, []byte) {
	ram := make([]byte, benchMem)
	m, err := guestmem.FromBytes(guestmem.NewRegion(0, ram, -1, 0))
	if err != nil {
		b.Fatal(err)
	}
	fillRand(ram[:8<<20], 9)
	return m, ram
}

func BenchmarkOps(b *testing.B) {
	mem, ram := benchMemory(b)
	r, err := NewRunner(mem, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	const src, dst, cr = 0, 32 << 20, 60 << 20
	for _, n := range []int{4 << 10, 64 << 10, 1 << 20} {
		var host float64 // MB/s of copy() for this size, from the sub-benchmark below
		b.Run(fmt.Sprintf("size=%dK/host-copy", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				copy(ram[dst:dst+n], ram[src:src+n])
			}
			host = float64(n) * float64(b.N) / b.Elapsed().Seconds() / 1e6
		})
		ops := []struct {
			name string
			d    *[64]byte
		}{
			{"memmove", newDesc(OpMemMove, FlagCRAV|FlagRCR, cr, src, dst, uint32(n))},
			{"fill", newDesc(OpFill, FlagCRAV|FlagRCR, cr, 0x0102030405060708, dst, uint32(n))},
			{"compare", newDesc(OpCompare, FlagCRAV|FlagRCR, cr, src, dst, uint32(n))},
			{"crcgen", newDesc(OpCRCGen, FlagCRAV|FlagRCR, cr, src, 0, uint32(n))},
		}
		for _, op := range ops {
			b.Run(fmt.Sprintf("size=%dK/%s", n>>10, op.name), func(b *testing.B) {
				b.SetBytes(int64(n))
				copy(ram[dst:dst+n], ram[src:src+n]) // compare finds equal data
				b.ResetTimer()
				start := time.Now()
				i := 0
				for ; i < b.N; i++ {
					// distinct completion records so the queue stays busy
					binary.LittleEndian.PutUint64(op.d[8:], uint64(cr+32*(i%1024)))
					r.Submit(op.d)
				}
				r.Wait() // timed: the benchmark ends when the last record is written
				mbps := float64(n) * float64(i) / time.Since(start).Seconds() / 1e6
				b.ReportMetric(mbps/host, "x_memcpy")
				if ram[cr] != StatusSuccess {
					b.Fatalf("status %#x", ram[cr])
				}
			})
		}
	}
}

// BenchmarkEngines: 64 KiB copies with 1, 2 and 4 engines in the group.
func BenchmarkEngines(b *testing.B) {
	mem, _ := benchMemory(b)
	const n = 64 << 10
	for _, e := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("engines=%d/memmove-64K", e), func(b *testing.B) {
			r, err := NewRunner(mem, e)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			b.SetBytes(n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// 64 source/destination pairs to spread over the engines
				k := uint64(i % 64)
				r.Submit(newDesc(OpMemMove, FlagCRAV|FlagRCR, 60<<20+32*k, k*n, 32<<20+k*n, n))
			}
			r.Wait()
		})
	}
}

// BenchmarkLatency: descriptor submitted at the portal to its completion
// record's status byte, polled as a driver would (one in flight).
func BenchmarkLatency(b *testing.B) {
	mem, ram := benchMemory(b)
	r, err := NewRunner(mem, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for _, c := range []struct {
		name string
		d    *[64]byte
	}{
		{"noop", newDesc(OpNOOP, FlagCRAV|FlagRCR, 60<<20, 0, 0, 0)},
		{"memmove-64B", newDesc(OpMemMove, FlagCRAV|FlagRCR, 60<<20, 0, 32<<20, 64)},
		{"memmove-4K", newDesc(OpMemMove, FlagCRAV|FlagRCR, 60<<20, 0, 32<<20, 4096)},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				ram[60<<20] = 0
				r.Submit(c.d)
				for {
					v, _ := mem.LoadU32Acquire(60 << 20)
					if v&0xff != 0 {
						break
					}
				}
			}
			r.Wait()
		})
	}
	// The same with the poller yielding its P: the engine goroutine then
	// runs on the submitter's thread, so this is the model's own cost
	// without an OS thread wake-up (which dominates the busy-poll numbers
	// on a loaded host).
	b.Run("noop-yield", func(b *testing.B) {
		d := newDesc(OpNOOP, FlagCRAV|FlagRCR, 60<<20, 0, 0, 0)
		for b.Loop() {
			ram[60<<20] = 0
			r.Submit(d)
			for {
				v, _ := mem.LoadU32Acquire(60 << 20)
				if v&0xff != 0 {
					break
				}
				runtime.Gosched()
			}
		}
		r.Wait()
	})
	b.Run("execute-sync-noop", func(b *testing.B) {
		d := newDesc(OpNOOP, FlagCRAV|FlagRCR, 60<<20, 0, 0, 0)
		for b.Loop() {
			Execute(mem, d)
		}
	})
}
