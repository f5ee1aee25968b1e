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
// copy() of the same bytes (the host-copy sub-benchmark), with the ratio
// operation/copy() as the "x_memcpy" metric; ns/op is per descriptor and
// allocs/op counts allocations per descriptor (0 on the hot path). The
// Runner's WQ is deep (MaxWQSize) so that the submitter, parked on a full
// WQ, is woken while the engine still has work.

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
	r, err := NewRunnerWith(mem, RunnerOptions{WQSize: MaxWQSize})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	const src, dst, cr = 0, 32 << 20, 60 << 20
	const dst2, patSrc, pattern = 48 << 20, 40 << 20, 0x0102030405060708
	// A batch of 32 memmoves of n/32 bytes (the batch moves n bytes).
	const batchN, list = 32, 56 << 20
	for _, n := range []int{4 << 10, 64 << 10, 1 << 20} {
		for i := 0; i < n; i += 8 {
			binary.LittleEndian.PutUint64(ram[patSrc+i:], pattern)
		}
		for i := range batchN {
			m := *newDesc(OpMemMove, 0, 0, uint64(src+i*n/batchN), uint64(dst+i*n/batchN), uint32(n/batchN))
			copy(ram[list+64*i:], m[:])
		}
		host := benchHostCopy(b, ram, src, dst, n)
		ops := []struct {
			name string
			d    *[64]byte
		}{
			{"memmove", newDesc(OpMemMove, FlagCRAV|FlagRCR, cr, src, dst, uint32(n))},
			{"fill", newDesc(OpFill, FlagCRAV|FlagRCR, cr, 0x0102030405060708, dst, uint32(n))},
			{"compare", newDesc(OpCompare, FlagCRAV|FlagRCR, cr, src, dst, uint32(n))},
			{"crcgen", newDesc(OpCRCGen, FlagCRAV|FlagRCR, cr, src, 0, uint32(n))},
			{"compval", newDesc(OpCompVal, FlagCRAV|FlagRCR, cr, patSrc, pattern, uint32(n))},
			{"copycrc", newDesc(OpCopyCRC, FlagCRAV|FlagRCR, cr, src, dst, uint32(n))},
			{"dualcast", dualcast(cr, src, dst, dst2, uint32(n))},
			{"batch32", newDesc(OpBatch, FlagCRAV|FlagRCR, cr, list, 0, batchN)},
		}
		for _, op := range ops {
			b.Run(fmt.Sprintf("size=%dK/%s", n>>10, op.name), func(b *testing.B) {
				b.ReportAllocs()
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
				if st := ram[cr+32*((i-1)%1024)]; st != StatusSuccess && st != StatusSuccessPred {
					b.Fatalf("status %#x", st)
				}
			})
		}
	}
}

// benchHostCopy runs the size=nK/host-copy sub-benchmark, the host's copy()
// of n bytes from src to dst in ram, and returns its MB/s.
func benchHostCopy(b *testing.B, ram []byte, src, dst, n int) (mbps float64) {
	b.Run(fmt.Sprintf("size=%dK/host-copy", n>>10), func(b *testing.B) {
		b.SetBytes(int64(n))
		for b.Loop() {
			copy(ram[dst:dst+n], ram[src:src+n])
		}
		mbps = float64(n) * float64(b.N) / b.Elapsed().Seconds() / 1e6
	})
	return mbps
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

func dualcast(cr, src, d1, d2 uint64, n uint32) *[64]byte {
	d := newDesc(OpDualcast, FlagCRAV|FlagRCR, cr, src, d1, n)
	put64(d, 40, d2)
	return d
}
