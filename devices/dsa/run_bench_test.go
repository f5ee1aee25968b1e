package dsa

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"
)

// BenchmarkRun is the engine's own cost per descriptor, without the WQ, the
// ring and the engine goroutine: executor.run (validation, the operation,
// completion record) on the calling goroutine, as an engine runs it.
func BenchmarkRun(b *testing.B) {
	mem, _ := benchMemory(b)
	x := standaloneExecutor(mem)
	const src, dst, cr = 0, 32 << 20, 60 << 20
	for _, c := range []struct {
		name string
		n    int
	}{{"memmove-64B", 64}, {"memmove-4K", 4 << 10}} {
		n := c.n
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			w := work{p: &defaultParams, guarded: true}
			w.desc = *newDesc(OpMemMove, FlagCRAV|FlagRCR, cr, src, dst, uint32(n))
			var buf []byte
			i := 0
			for b.Loop() {
				binary.LittleEndian.PutUint64(w.desc[8:], uint64(cr+32*(i%1024)))
				i++
				if st := x.run(&w, &w.desc, -1, &buf); st != StatusSuccess {
					b.Fatalf("status %#x", st)
				}
			}
		})
	}
}

// BenchmarkPull: BenchmarkOps' memmove with the engine feeding itself
// (Runner.Pull, the bench's "fed on its own core" rows): the same WQ, ring
// and completion records, no submitter goroutine to hand descriptors over
// from another core or to wake. x_memcpy is the ratio to the host's copy()
// of the same bytes in the same run.
func BenchmarkPull(b *testing.B) {
	mem, ram := benchMemory(b)
	r, err := NewRunnerWith(mem, RunnerOptions{WQSize: MaxWQSize})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	const src, dst, cr = 0, 32 << 20, 60 << 20
	for _, n := range []int{4 << 10, 64 << 10} {
		host := benchHostCopy(b, ram, src, dst, n)
		b.Run(fmt.Sprintf("size=%dK/memmove", n>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			d := *newDesc(OpMemMove, FlagCRAV|FlagRCR, cr, src, dst, uint32(n))
			start := time.Now()
			r.Pull(0, b.N, 64, func(i int, p *[64]byte) {
				*p = d
				binary.LittleEndian.PutUint64(p[8:], uint64(cr+32*(i%1024)))
			})
			mbps := float64(n) * float64(b.N) / time.Since(start).Seconds() / 1e6
			b.ReportMetric(mbps/host, "x_memcpy")
			if st := ram[cr+32*((b.N-1)%1024)]; st != StatusSuccess {
				b.Fatalf("status %#x", st)
			}
		})
	}
}
