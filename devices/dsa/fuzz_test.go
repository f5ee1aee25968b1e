package dsa

import (
	"bytes"
	"testing"

	"godvm/guestmem"
)

// Fuzz targets for descriptor and batch processing over a small guest
// memory: three regions (two adjacent, one after a hole) carved out of a
// larger buffer whose guard bytes must never change, so an access outside
// guest memory would be caught even if it did not crash.

const (
	fzRegA  = 0x0000 // 32 KiB
	fzRegB  = 0x8000 // 32 KiB, adjacent to A
	fzRegC  = 0x20000
	fzSizeA = 0x8000
	fzSizeC = 0x1000
	guard   = 4096
)

type fuzzMem struct {
	back []byte
	mem  *guestmem.Memory
	regs [][2]int // offsets in back
}

func newFuzzMem(t *testing.T, init []byte) *fuzzMem {
	sizes := []int{fzSizeA, fzSizeA, fzSizeC}
	gpas := []uint64{fzRegA, fzRegB, fzRegC}
	total := guard
	for _, s := range sizes {
		total += s + guard
	}
	back := bytes.Repeat([]byte{0xa5}, total)
	fm := &fuzzMem{back: back}
	var regions []guestmem.Region
	off := guard
	for i, s := range sizes {
		b := back[off : off+s]
		for j := range b {
			if len(init) > 0 {
				b[j] = init[(j+i*7)%len(init)]
			} else {
				b[j] = 0
			}
		}
		regions = append(regions, guestmem.NewRegion(gpas[i], b, -1, 0))
		fm.regs = append(fm.regs, [2]int{off, off + s})
		off += s + guard
	}
	m, err := guestmem.FromBytes(regions...)
	if err != nil {
		t.Fatal(err)
	}
	fm.mem = m
	return fm
}

func (fm *fuzzMem) checkGuards(t *testing.T) {
	prev := 0
	for _, r := range fm.regs {
		for i := prev; i < r[0]; i++ {
			if fm.back[i] != 0xa5 {
				t.Fatalf("write outside guest memory at backing offset %d", i)
			}
		}
		prev = r[1]
	}
	for i := prev; i < len(fm.back); i++ {
		if fm.back[i] != 0xa5 {
			t.Fatalf("write outside guest memory at backing offset %d", i)
		}
	}
}

type intrSink struct{ n int }

func (s *intrSink) Notify(v int) {
	if v < 0 || v >= 3 {
		panic("interrupt vector out of range")
	}
	s.n++
}

func fuzzExec(t *testing.T, fm *fuzzMem, desc *[64]byte, ims bool) byte {
	var errs []SWError
	sink := &intrSink{}
	x := executor{intr: sink, vectors: 3, opcap: OpCapDSA1, readbackCap: true,
		swerr: func(e SWError) { errs = append(errs, e) }}
	x.setMem(fm.mem)
	p := wqParams{dedicated: true, maxXfer: 1 << 21, maxBatch: 32, opcap: [4]uint64{OpCapDSA1}}
	w := work{desc: *desc, p: &p, ims: ims}
	var buf []byte
	st := x.run(&w, &w.desc, -1, &buf)
	if st == 0 || st == 0xff || st&0x80 != 0 {
		t.Fatalf("status %#x", st)
	}
	for _, e := range errs {
		if e.Code == 0 {
			t.Fatal("software error with code 0")
		}
	}
	fm.checkGuards(t)
	return st
}

// fuzzDesc builds a 64-byte descriptor from the input, steering addresses
// into and around guest memory so the interesting paths are reached.
func fuzzDesc(data []byte) [64]byte {
	var d [64]byte
	copy(d[:], data)
	return d
}

func FuzzDescriptor(f *testing.F) {
	for _, d := range fuzzSeeds() {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := fuzzDesc(data)
		var init []byte
		if len(data) > 64 {
			init = data[64:]
		}
		fm := newFuzzMem(t, init)
		fuzzExec(t, fm, &d, len(data)%5 == 0)
	})
}

// FuzzBatch places the input's descriptors in guest memory as a batch list
// and runs a batch descriptor over them.
func FuzzBatch(f *testing.F) {
	for _, d := range fuzzSeeds() {
		var in []byte
		for range 3 {
			in = append(in, d[:64]...)
		}
		f.Add(append([]byte{3, 0}, in...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		count, listOff := uint32(data[0]), uint64(data[1])*64
		fm := newFuzzMem(t, nil)
		list := data[2:]
		if len(list) > 32*64 {
			list = list[:32*64]
		}
		fm.mem.WriteAt(list, fzRegB+listOff%0x4000)
		d := newDesc(OpBatch, FlagCRAV|FlagRCR, 0x100, fzRegB+listOff%0x4000, 0, count)
		if data[1]&1 != 0 {
			put64(d, 16, fzRegB+listOff) // sometimes misaligned / out of range
		}
		fuzzExec(t, fm, d, false)
	})
}

func fuzzSeeds() [][]byte {
	var out [][]byte
	add := func(d *[64]byte) { out = append(out, append([]byte(nil), d[:]...)) }
	rcr := uint32(FlagCRAV | FlagRCR)
	add(newDesc(OpNOOP, rcr, 0x100, 0, 0, 0))
	add(newDesc(OpMemMove, rcr, 0x100, 0x1000, 0x9000, 0x2000))
	add(newDesc(OpMemMove, rcr, 0x100, 0x7000, 0x7800, 0x2000))  // overlap across A/B
	add(newDesc(OpMemMove, rcr, 0x100, 0x1000, 0x20800, 0x2000)) // runs into the hole
	add(newDesc(OpFill, rcr, 0x100, 0x1122334455667788, 0x20000, 0x1000))
	add(newDesc(OpCompare, rcr|FlagCheckRes, 0x100, 0x1000, 0x9000, 0x100))
	add(newDesc(OpCompVal, rcr, 0x100, 0x1000, 0, 0x100))
	d := newDesc(OpCRDelta, rcr, 0x100, 0x1000, 0x9000, 0x800)
	put64(d, 40, 0x20000)
	put32(d, 48, 800)
	add(d)
	d = newDesc(OpAPDelta, rcr, 0x100, 0x20000, 0x9000, 0x800)
	put32(d, 40, 20)
	add(d)
	d = newDesc(OpDualcast, rcr, 0x100, 0x1000, 0x9000, 0x100)
	put64(d, 40, 0x20000)
	add(d)
	add(newDesc(OpCRCGen, rcr|FlagCRCBypassDataRef, 0x100, 0x1000, 0, 0x1000))
	add(newDesc(OpCopyCRC, rcr, 0x100, 0x1000, 0x9000, 0x1000))
	add(newDesc(OpDIFInsert, rcr, 0x100, 0x1000, 0x9000, 0x800))
	add(newDesc(OpDIFCheck, rcr, 0x100, 0x9000, 0, 520*2))
	add(newDesc(OpDIFStrip, rcr, 0x100, 0x9000, 0x1000, 520*2))
	add(newDesc(OpDIFUpdate, rcr, 0x100, 0x9000, 0x20000, 520*2))
	add(newDesc(OpCFlush, rcr, 0x100, 0, 0x20000, 0x2000))
	add(newDesc(OpBatch, rcr, 0x100, 0x9000, 0, 4))
	add(newDesc(OpDrain, rcr|FlagRCI, 0x100, 0, 0, 0))
	add(newDesc(OpMemMove, FlagCRAV, 0x107, 0x1000, 0x9000, 0x10))
	add(newDesc(OpMemMove, 0, 0, 0xfffffffffffffff0, 0x9000, 0x100))
	return out
}

// TestFuzzSeeds runs the seeds in ordinary `go test` runs too.
func TestFuzzSeeds(t *testing.T) {
	for _, s := range fuzzSeeds() {
		fm := newFuzzMem(t, []byte{1, 2, 3, 4, 5})
		d := fuzzDesc(s)
		fuzzExec(t, fm, &d, false)
	}
}
