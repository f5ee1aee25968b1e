package dsa

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// BenchmarkRun is the engine's own cost per descriptor, without the WQ, the
// ring and the engine goroutine: executor.run (validation, the operation,
// completion record) on the calling goroutine, as an engine runs it.
func BenchmarkRun(b *testing.B) {
	mem, _ := benchMemory(b)
	x := executor{vectors: 1, opcap: OpCapDSA1, readbackCap: true}
	x.setMem(mem)
	const src, dst, cr = 0, 32 << 20, 60 << 20
	for _, n := range []int{64, 4 << 10} {
		b.Run(map[int]string{64: "memmove-64B", 4 << 10: "memmove-4K"}[n], func(b *testing.B) {
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

// BenchmarkPull: BenchmarkOps' 4 KiB memmove fed by the engine itself
// (Runner.Pull) instead of a submitter goroutine.
func BenchmarkPull(b *testing.B) {
	mem, _ := benchMemory(b)
	const src, dst, cr, n = 0, 32 << 20, 60 << 20, 4 << 10
	for _, c := range [][2]int{{32, 32}, {64, 32}, {64, 64}, {128, 64}, {256, 128}, {1024, 64}} {
		size, batch := c[0], c[1]
		r, err := NewRunnerWith(mem, RunnerOptions{WQSize: size})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		b.Run(fmt.Sprintf("memmove-4K/wq=%d/batch=%d", size, batch), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(n)
			d := *newDesc(OpMemMove, FlagCRAV|FlagRCR, cr, src, dst, n)
			r.Pull(0, b.N, batch, func(i int, p *[64]byte) {
				*p = d
				binary.LittleEndian.PutUint64(p[8:], uint64(cr+32*(i%size)))
			})
		})
	}
}
