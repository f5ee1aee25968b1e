package virtio

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"godvm/guestmem"
)

const (
	qSize   = 8
	qDesc   = 0x1000
	qAvail  = 0x2000
	qUsed   = 0x3000
	qData   = 0x4000
	qMemLen = 0x10000
)

func newQueueMem(t testing.TB) *guestmem.Memory {
	t.Helper()
	mem, err := guestmem.FromBytes(guestmem.NewRegion(0, make([]byte, qMemLen), -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	return mem
}

func putDesc(mem *guestmem.Memory, table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	mem.WriteAt(b[:], table+16*uint64(i))
}

func publishHead(mem *guestmem.Memory, slot uint16, head uint16) {
	mem.WriteU16(qAvail+4+2*uint64(slot%qSize), head)
	mem.StoreU16Release(qAvail+2, slot+1)
}

func newTestQueue(t *testing.T) (*guestmem.Memory, *Queue) {
	mem := newQueueMem(t)
	q, err := NewQueue(mem, qSize, qDesc, qAvail, qUsed)
	if err != nil {
		t.Fatal(err)
	}
	q.Indirect = true
	return mem, q
}

func TestQueueChain(t *testing.T) {
	mem, q := newTestQueue(t)
	if c, err := q.Pop(); c != nil || err != nil {
		t.Fatal("empty ring returned a chain")
	}
	mem.WriteAt([]byte("hello, "), qData)
	mem.WriteAt([]byte("world"), qData+0x100)
	putDesc(mem, qDesc, 3, qData, 7, DescFNext, 5)
	putDesc(mem, qDesc, 5, qData+0x100, 5, DescFNext, 1)
	putDesc(mem, qDesc, 1, qData+0x200, 16, DescFWrite, 0)
	publishHead(mem, 0, 3)
	c, err := q.Pop()
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	if c.Head != 3 || len(c.Readable) != 2 || len(c.Writable) != 1 || c.RLen != 12 || c.WLen != 16 {
		t.Fatalf("chain %+v", c)
	}
	got, _ := io.ReadAll(c.Reader(mem))
	if string(got) != "hello, world" {
		t.Fatalf("read %q", got)
	}
	w := c.Writer(mem)
	if _, err := w.Write([]byte("0123456789abcdefX")); err != io.ErrShortWrite || w.Written != 16 {
		t.Fatalf("overlong write: %v, %d", err, w.Written)
	}
	if err := q.Push(c.Head, w.Written); err != nil {
		t.Fatal(err)
	}
	if idx, _ := mem.ReadU16(qUsed + 2); idx != 1 {
		t.Fatalf("used idx %d", idx)
	}
	if id, _ := mem.ReadU32(qUsed + 4); id != 3 {
		t.Fatalf("used id %d", id)
	}
	if n, _ := mem.ReadU32(qUsed + 8); n != 16 {
		t.Fatalf("used len %d", n)
	}
	if !q.NeedInterrupt() {
		t.Fatal("no interrupt wanted")
	}
	if q.NeedInterrupt() {
		t.Fatal("interrupt wanted with nothing new")
	}
}

func TestQueueIndirect(t *testing.T) {
	mem, q := newTestQueue(t)
	const table = 0x5000
	putDesc(mem, table, 0, qData, 16, DescFNext, 1)
	putDesc(mem, table, 1, qData+0x10, 512, DescFNext|DescFWrite, 2)
	putDesc(mem, table, 2, qData+0x300, 1, DescFWrite, 0)
	putDesc(mem, qDesc, 0, table, 48, DescFIndirect, 0)
	publishHead(mem, 0, 0)
	c, err := q.Pop()
	if err != nil || c == nil || len(c.Readable) != 1 || len(c.Writable) != 2 || c.WLen != 513 {
		t.Fatalf("indirect chain %+v %v", c, err)
	}
}

func TestQueueEventIdx(t *testing.T) {
	mem, q := newTestQueue(t)
	q.EventIdx = true
	for i := uint16(0); i < 3; i++ {
		putDesc(mem, qDesc, i, qData, 1, DescFWrite, 0)
		publishHead(mem, i, i)
	}
	// used_event = 2: interrupt only once used idx passes 2.
	mem.WriteU16(qAvail+4+2*qSize, 2)
	for i := 0; i < 3; i++ {
		c, _ := q.Pop()
		q.Push(c.Head, 1)
		want := i == 2
		if got := q.NeedInterrupt(); got != want {
			t.Errorf("after %d pushes: interrupt %v", i+1, got)
		}
	}
	if ev, _ := mem.ReadU16(qUsed + 4 + 8*qSize); ev != 3 {
		t.Fatalf("avail_event %d", ev)
	}
	// NO_INTERRUPT without event idx.
	q.EventIdx = false
	mem.WriteU16(qAvail, availFNoInterrupt)
	putDesc(mem, qDesc, 3, qData, 1, DescFWrite, 0)
	publishHead(mem, 3, 3)
	c, _ := q.Pop()
	q.Push(c.Head, 1)
	if q.NeedInterrupt() {
		t.Fatal("interrupt despite NO_INTERRUPT")
	}
}

func TestQueueValidate(t *testing.T) {
	mem := newQueueMem(t)
	for _, c := range []struct {
		size              uint16
		desc, avail, used uint64
	}{
		{0, qDesc, qAvail, qUsed},
		{6, qDesc, qAvail, qUsed},
		{qSize, qDesc + 8, qAvail, qUsed},
		{qSize, qDesc, qAvail + 1, qUsed},
		{qSize, qDesc, qAvail, qUsed + 2},
		{qSize, qMemLen - 16, qAvail, qUsed},
		{qSize, qDesc, qMemLen - 4, qUsed},
		{qSize, qDesc, qAvail, 1 << 40},
		{32768, qDesc, qAvail, qUsed}, // rings do not fit in RAM
	} {
		if _, err := NewQueue(mem, c.size, c.desc, c.avail, c.used); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}

// Every malformed chain is a *ChainError, never a panic.
func TestQueueMalformed(t *testing.T) {
	cases := []struct {
		name  string
		setup func(mem *guestmem.Memory, q *Queue)
	}{
		{"head out of range", func(mem *guestmem.Memory, q *Queue) {
			publishHead(mem, 0, qSize)
		}},
		{"loop", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, qData, 1, DescFNext, 1)
			putDesc(mem, qDesc, 1, qData, 1, DescFNext, 0)
			publishHead(mem, 0, 0)
		}},
		{"self loop", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 2, qData, 1, DescFNext, 2)
			publishHead(mem, 0, 2)
		}},
		{"next out of range", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, qData, 1, DescFNext, 99)
			publishHead(mem, 0, 0)
		}},
		{"buffer outside RAM", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, 1<<40, 16, 0, 0)
			publishHead(mem, 0, 0)
		}},
		{"buffer crosses end of RAM", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, qMemLen-8, 16, 0, 0)
			publishHead(mem, 0, 0)
		}},
		{"address wraps", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, ^uint64(0)-4, 16, 0, 0)
			publishHead(mem, 0, 0)
		}},
		{"readable after writable", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, qData, 1, DescFNext|DescFWrite, 1)
			putDesc(mem, qDesc, 1, qData, 1, 0, 0)
			publishHead(mem, 0, 0)
		}},
		{"avail index jump", func(mem *guestmem.Memory, q *Queue) {
			mem.StoreU16Release(qAvail+2, qSize+1)
		}},
		{"indirect not negotiated", func(mem *guestmem.Memory, q *Queue) {
			q.Indirect = false
			putDesc(mem, qDesc, 0, 0x5000, 16, DescFIndirect, 0)
			publishHead(mem, 0, 0)
		}},
		{"indirect bad size", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, 0x5000, 24, DescFIndirect, 0)
			publishHead(mem, 0, 0)
		}},
		{"indirect empty", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, 0x5000, 0, DescFIndirect, 0)
			publishHead(mem, 0, 0)
		}},
		{"indirect huge", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, 0, 0xfffffff0, DescFIndirect, 0)
			publishHead(mem, 0, 0)
		}},
		{"indirect outside RAM", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, 1<<40, 32, DescFIndirect, 0)
			publishHead(mem, 0, 0)
		}},
		{"indirect with next", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, qDesc, 0, 0x5000, 32, DescFIndirect|DescFNext, 1)
			publishHead(mem, 0, 0)
		}},
		{"nested indirect", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, 0x5000, 0, 0x6000, 16, DescFIndirect, 0)
			putDesc(mem, qDesc, 0, 0x5000, 16, DescFIndirect, 0)
			publishHead(mem, 0, 0)
		}},
		{"indirect loop", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, 0x5000, 0, qData, 1, DescFNext, 1)
			putDesc(mem, 0x5000, 1, qData, 1, DescFNext, 0)
			putDesc(mem, qDesc, 0, 0x5000, 32, DescFIndirect, 0)
			publishHead(mem, 0, 0)
		}},
		{"indirect after direct", func(mem *guestmem.Memory, q *Queue) {
			putDesc(mem, 0x5000, 0, qData, 1, 0, 0)
			putDesc(mem, qDesc, 0, qData, 1, DescFNext, 1)
			putDesc(mem, qDesc, 1, 0x5000, 16, DescFIndirect, 0)
			publishHead(mem, 0, 0)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem, q := newTestQueue(t)
			c.setup(mem, q)
			ch, err := q.Pop()
			if err == nil || ch != nil {
				t.Fatalf("accepted: %+v", ch)
			}
			if !IsChainError(err) {
				t.Fatalf("not a ChainError: %v", err)
			}
			if errors.Is(err, io.EOF) {
				t.Fatal("odd error")
			}
		})
	}
}

func TestChainSegments(t *testing.T) {
	// Two RAM regions: a buffer that straddles them is split.
	a, b := make([]byte, 0x1000), make([]byte, 0x1000)
	mem, err := guestmem.FromBytes(guestmem.NewRegion(0, a, -1, 0), guestmem.NewRegion(0x1000, b, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	c := &Chain{Writable: []Buf{{0xf00, 0x200}, {0x1800, 0}, {0x1900, 8}}, WLen: 0x208}
	w := c.Writer(mem)
	segs, err := w.Segments(0x204)
	if err != nil {
		t.Fatal(err)
	}
	var total int
	for _, s := range segs {
		total += len(s)
	}
	if total != 0x204 || len(segs) < 3 || w.Remaining() != 4 || w.Written != 0x204 {
		t.Fatalf("segments %d bytes in %d pieces, remaining %d", total, len(segs), w.Remaining())
	}
	if _, err := w.Write([]byte{1, 2, 3, 4}); err != nil || b[0x907] != 4 || b[0x904] != 1 {
		t.Fatal("tail write")
	}
}
