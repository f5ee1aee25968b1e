package virtio

import (
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
		mem, q := fuzzQueue(t, data)
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

// FuzzBlockRequests runs virtio-blk over arbitrary rings and request
// contents (the same layout as FuzzVirtqueue; descriptors may point at
// headers and data at 0x4000): requests complete with a status or the
// device reports a driver error; the image never grows.
func FuzzBlockRequests(f *testing.F) {
	hdr := func(typ uint32, sector uint64) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint32(b[0:], typ)
		binary.LittleEndian.PutUint64(b[8:], sector)
		return b
	}
	read := fuzzSeed([][4]uint64{{fzData, 16, DescFNext, 1}, {fzData + 0x100, 512, DescFNext | DescFWrite, 2}, {fzData + 0x400, 1, DescFWrite, 0}},
		[]uint16{0}, hdr(BlkTIn, 3), 3)
	write := fuzzSeed([][4]uint64{{fzData, 16, DescFNext, 1}, {fzData + 0x100, 1024, DescFNext, 2}, {fzData + 0x600, 1, DescFWrite, 0}},
		[]uint16{0}, hdr(BlkTOut, 120), 0)
	discard := fuzzSeed([][4]uint64{{fzData, 32, DescFNext, 1}, {fzData + 0x600, 1, DescFWrite, 0}},
		[]uint16{0}, append(hdr(BlkTWriteZeroes, 0), hdr(4, 8)...), 0)
	f.Add(read)
	f.Add(write)
	f.Add(discard)
	f.Add(fuzzSeed([][4]uint64{{fzData, 16, DescFNext, 1}, {fzData + 0x100, 20, DescFNext | DescFWrite, 2}, {fzData + 0x400, 1, DescFWrite, 0}},
		[]uint16{0, 0}, hdr(BlkTGetID, 0), 0))
	img := filepath.Join(f.TempDir(), "fuzz.img")
	if err := os.WriteFile(img, make([]byte, 64<<10), 0o644); err != nil {
		f.Fatal(err)
	}
	be, err := NewBlock(BlockOptions{Path: img})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { be.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		mem, q := fuzzQueue(t, data)
		interrupts := 0
		be.Activate(&Env{Mem: mem, Queues: []*Queue{q}, Interrupt: func(int) { interrupts++ }})
		if err := be.Kick(0); err != nil && !IsChainError(err) {
			t.Fatalf("host error from a guest request: %v", err)
		}
		if interrupts != 1 {
			t.Fatalf("%d interrupt calls per kick", interrupts)
		}
		if q.UsedIdx() > fzSize {
			t.Fatalf("used %d > queue size", q.UsedIdx())
		}
		if st, _ := os.Stat(img); st.Size() != 64<<10 {
			t.Fatalf("image is %d bytes", st.Size())
		}
	})
}

// FuzzTransport writes arbitrary values at arbitrary offsets of a
// virtio-rng device's BAR (common config, ISR, device config, notify,
// MSI-X) and into guest memory, in any order: the transport must not panic
// whatever the status sequence, ring addresses or vector numbers. Records
// are 12 bytes: kind, width, offset u16, value u64.
func FuzzTransport(f *testing.F) {
	rec := func(kind, width byte, off uint16, v uint64) []byte {
		b := []byte{kind, width, 0, 0}
		binary.LittleEndian.PutUint16(b[2:], off)
		return binary.LittleEndian.AppendUint64(b, v)
	}
	var init []byte
	for _, r := range [][]byte{
		rec(0, 0, ccStatus, 1), rec(0, 0, ccStatus, 3),
		rec(0, 2, ccDrvFeatSel, 1), rec(0, 2, ccDrvFeat, 1),
		rec(0, 0, ccStatus, 11), rec(0, 1, ccQueueSel, 0),
		rec(0, 3, ccQueueDesc, 0x10000), rec(0, 3, ccQueueDriver, 0x11000), rec(0, 3, ccQueueDevice, 0x12000),
		rec(0, 1, ccQueueVec, 1), rec(0, 1, ccQueueEnable, 1), rec(0, 0, ccStatus, 15),
		rec(1, 3, 0x1100, 0x20000), rec(1, 3, 0x1108, 0x0002_0000_0040), rec(1, 3, 0x2000, 0x0001_0000),
		rec(0, 1, offNotify, 0), rec(0, 0, ccStatus, 0),
	} {
		init = append(init, r...)
	}
	f.Add(init)
	f.Add(rec(0, 0, ccStatus, 0xff))
	f.Add(append(rec(0, 1, ccConfigVec, 7), rec(0, 0, offISR, 0)...))
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := newMachine(t)
		dev, err := addDevice(m.p, m.root, "rng", &RNG{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		bar, _ := dev.BARAddress(0)
		for ; len(data) >= 12; data = data[12:] {
			width := []int{1, 2, 4, 8}[data[1]%4]
			off := uint64(binary.LittleEndian.Uint16(data[2:]))
			val := data[4:12]
			switch data[0] % 3 {
			case 0:
				m.p.MMIO.Write(bar+off%barSize, val[:width])
			case 1:
				m.mem.WriteAt(val, off*16)
			case 2:
				buf := make([]byte, width)
				m.p.MMIO.Read(bar+off%barSize, buf)
			}
		}
	})
}

// fuzzQueue lays a fuzz input out as guest RAM (byte 0: feature bits, then
// the ring area, then buffer data) and makes a queue over it.
func fuzzQueue(t *testing.T, data []byte) (*guestmem.Memory, *Queue) {
	t.Helper()
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
	return mem, q
}
