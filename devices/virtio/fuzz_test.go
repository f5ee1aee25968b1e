package virtio

import (
	"encoding/binary"
	"io"
	"testing"

	"godvm/guestmem"
)

// Fuzz layout: the first byte picks features, the next 0xa0 bytes are the
// descriptor table (8 entries) and the avail ring, the rest lands at 0x4000
// where descriptors may point (indirect tables, data).
const (
	fzDesc  = 0x1000
	fzAvail = 0x1080
	fzUsed  = 0x1100
	fzData  = 0x4000
	fzMem   = 0x8000
	fzSize  = 8
)

func fuzzSeed(descs [][4]uint64, heads []uint16, extra []byte, flags byte) []byte {
	b := make([]byte, 1+0xa0)
	b[0] = flags
	for i, d := range descs {
		o := 1 + 16*i
		binary.LittleEndian.PutUint64(b[o:], d[0])
		binary.LittleEndian.PutUint32(b[o+8:], uint32(d[1]))
		binary.LittleEndian.PutUint16(b[o+12:], uint16(d[2]))
		binary.LittleEndian.PutUint16(b[o+14:], uint16(d[3]))
	}
	a := 1 + 0x80
	binary.LittleEndian.PutUint16(b[a+2:], uint16(len(heads)))
	for i, h := range heads {
		binary.LittleEndian.PutUint16(b[a+4+2*i:], h)
	}
	return append(b, extra...)
}

// FuzzVirtqueue feeds arbitrary rings to the parser: it must return chains
// that lie in guest RAM or errors, and never panic or loop.
func FuzzVirtqueue(f *testing.F) {
	f.Add(fuzzSeed([][4]uint64{{fzData, 16, DescFNext, 1}, {fzData + 16, 512, DescFWrite, 0}}, []uint16{0}, nil, 3))
	f.Add(fuzzSeed([][4]uint64{{fzData, 32, DescFIndirect, 0}}, []uint16{0},
		fuzzSeed(nil, nil, nil, 0)[1:33], 1))
	f.Add(fuzzSeed([][4]uint64{{fzData, 1, DescFNext, 1}, {fzData, 1, DescFNext, 0}}, []uint16{0}, nil, 0))
	f.Add(fuzzSeed([][4]uint64{{1 << 40, 16, 0, 0}}, []uint16{0, 0, 0}, nil, 2))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		ram := make([]byte, fzMem)
		copy(ram[fzDesc:fzDesc+0xa0], data[1:])
		if len(data) > 1+0xa0 {
			copy(ram[fzData:], data[1+0xa0:])
		}
		mem, err := guestmem.FromBytes(guestmem.NewRegion(0, ram, -1, 0))
		if err != nil {
			t.Fatal(err)
		}
		q, err := NewQueue(mem, fzSize, fzDesc, fzAvail, fzUsed)
		if err != nil {
			t.Fatal(err)
		}
		q.Indirect = data[0]&1 != 0
		q.EventIdx = data[0]&2 != 0
		for i := 0; i < 2*fzSize; i++ {
			c, err := q.Pop()
			if err != nil {
				if !IsChainError(err) {
					t.Fatalf("non-chain error %v", err)
				}
				return
			}
			if c == nil {
				return
			}
			if len(c.Readable)+len(c.Writable) > fzMem/16 {
				t.Fatalf("chain of %d buffers", len(c.Readable)+len(c.Writable))
			}
			for _, b := range append(append([]Buf(nil), c.Readable...), c.Writable...) {
				if !mem.Contains(b.Addr, uint64(b.Len)) {
					t.Fatalf("buffer %#x+%#x outside RAM", b.Addr, b.Len)
				}
			}
			if _, err := io.Copy(io.Discard, c.Reader(mem)); err != nil {
				t.Fatal(err)
			}
			w := c.Writer(mem)
			if _, err := w.Segments(c.WLen); err != nil {
				t.Fatal(err)
			}
			if err := q.Push(c.Head, w.Written); err != nil {
				t.Fatal(err)
			}
			q.NeedInterrupt()
		}
	})
}
