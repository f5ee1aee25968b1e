package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"godvm/guestmem"
)

// Split virtqueue descriptor flags.
const (
	DescFNext     = 1
	DescFWrite    = 2
	DescFIndirect = 4
)

// Ring flags and limits.
const (
	availFNoInterrupt = 1
	usedFNoNotify     = 1
	MaxQueueSize      = 32768
	descSize          = 16
	maxIndirect       = MaxQueueSize // descriptors in one indirect table
	maxChainBytes     = 1 << 32      // per direction
)

// ChainError is a malformed descriptor chain or ring: the driver broke the
// virtio rules. The device goes to DEVICE_NEEDS_RESET; the VMM carries on.
type ChainError struct {
	Head   uint16
	Reason string
	Err    error // underlying cause (a *guestmem.AccessError), may be nil
}

func (e *ChainError) Error() string {
	s := fmt.Sprintf("virtqueue: chain %d: %s", e.Head, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ChainError) Unwrap() error { return e.Err }

// IsChainError reports whether err is a driver error (as opposed to a host
// I/O error).
func IsChainError(err error) bool {
	var ce *ChainError
	return errors.As(err, &ce)
}

// Buf is one guest buffer of a chain.
type Buf struct {
	Addr uint64
	Len  uint32
}

// Chain is a parsed descriptor chain: the device-readable buffers, then the
// device-writable ones.
type Chain struct {
	Head     uint16
	Readable []Buf
	Writable []Buf
	RLen     uint64 // total readable bytes
	WLen     uint64 // total writable bytes
}

// Queue is a split virtqueue as the device sees it. It is used by one
// goroutine at a time (the device's worker).
type Queue struct {
	mem       *guestmem.Memory
	Size      uint16
	Desc      uint64 // descriptor table
	Avail     uint64 // driver area
	Used      uint64 // device area
	EventIdx  bool   // VIRTIO_F_EVENT_IDX negotiated
	Indirect  bool   // VIRTIO_F_INDIRECT_DESC negotiated
	lastAvail uint16
	usedIdx   uint16
	lastSig   uint16 // used index at the last interrupt decision
}

// NewQueue makes a queue over rings the driver placed in mem.
func NewQueue(mem *guestmem.Memory, size uint16, desc, avail, used uint64) (*Queue, error) {
	q := &Queue{mem: mem, Size: size, Desc: desc, Avail: avail, Used: used}
	return q, q.Validate()
}

// Validate checks the ring geometry: a power-of-two size, alignment, and
// every ring inside guest RAM.
func (q *Queue) Validate() error {
	n := uint64(q.Size)
	switch {
	case n == 0 || n > MaxQueueSize || n&(n-1) != 0:
		return fmt.Errorf("virtqueue: size %d is not a power of two up to %d", n, MaxQueueSize)
	case q.Desc%16 != 0 || q.Avail%2 != 0 || q.Used%4 != 0:
		return fmt.Errorf("virtqueue: misaligned rings (desc %#x avail %#x used %#x)", q.Desc, q.Avail, q.Used)
	case !q.mem.Contains(q.Desc, n*descSize):
		return &guestmem.AccessError{GPA: q.Desc, Len: n * descSize}
	case !q.mem.Contains(q.Avail, 6+2*n):
		return &guestmem.AccessError{GPA: q.Avail, Len: 6 + 2*n}
	case !q.mem.Contains(q.Used, 6+8*n):
		return &guestmem.AccessError{GPA: q.Used, Len: 6 + 8*n}
	}
	return nil
}

// LastAvail is the next available-ring position the device will read.
func (q *Queue) LastAvail() uint16 { return q.lastAvail }

// UsedIdx is the device's used index.
func (q *Queue) UsedIdx() uint16 { return q.usedIdx }

// Pop returns the next available chain, or nil when the ring is empty.
func (q *Queue) Pop() (*Chain, error) {
	idx, err := q.mem.LoadU16Acquire(q.Avail + 2)
	if err != nil {
		return nil, &ChainError{Head: 0, Reason: "avail ring unreadable", Err: err}
	}
	if idx == q.lastAvail {
		return nil, nil
	}
	if uint16(idx-q.lastAvail) > q.Size {
		return nil, &ChainError{Reason: fmt.Sprintf("avail index %d is more than %d ahead of %d", idx, q.Size, q.lastAvail)}
	}
	head, err := q.mem.ReadU16(q.Avail + 4 + 2*uint64(q.lastAvail%q.Size))
	if err != nil {
		return nil, &ChainError{Reason: "avail ring unreadable", Err: err}
	}
	c, err := q.parse(head)
	if err != nil {
		return nil, err
	}
	q.lastAvail++
	if q.EventIdx {
		// avail_event: kick me when you publish past this index.
		if err := q.mem.StoreU16Release(q.Used+4+8*uint64(q.Size), q.lastAvail); err != nil {
			return nil, &ChainError{Head: head, Reason: "used ring unwritable", Err: err}
		}
	}
	return c, nil
}

func (q *Queue) readDesc(table uint64, i uint16) (addr uint64, n uint32, flags, next uint16, err error) {
	var b [descSize]byte
	if err = q.mem.ReadAt(b[:], table+uint64(i)*descSize); err != nil {
		return
	}
	le := binary.LittleEndian
	return le.Uint64(b[0:]), le.Uint32(b[8:]), le.Uint16(b[12:]), le.Uint16(b[14:]), nil
}

// parse walks the chain starting at head, following at most one indirect
// table, and rejects every rule violation with a *ChainError.
func (q *Queue) parse(head uint16) (*Chain, error) {
	if head >= q.Size {
		return nil, &ChainError{Head: head, Reason: fmt.Sprintf("head index %d >= queue size %d", head, q.Size)}
	}
	c := &Chain{Head: head}
	table, tableLen := q.Desc, uint32(q.Size)
	idx := head
	indirect := false
	for count := uint32(1); ; count++ {
		if count > tableLen {
			return nil, &ChainError{Head: head, Reason: fmt.Sprintf("chain longer than %d descriptors (loop?)", tableLen)}
		}
		addr, n, flags, next, err := q.readDesc(table, idx)
		if err != nil {
			return nil, &ChainError{Head: head, Reason: "descriptor unreadable", Err: err}
		}
		if flags&DescFIndirect != 0 {
			switch {
			case !q.Indirect:
				return nil, &ChainError{Head: head, Reason: "indirect descriptor without VIRTIO_F_INDIRECT_DESC"}
			case indirect:
				return nil, &ChainError{Head: head, Reason: "nested indirect descriptor"}
			case flags&DescFNext != 0:
				return nil, &ChainError{Head: head, Reason: "indirect descriptor with NEXT set"}
			case n == 0 || n%descSize != 0 || n/descSize > maxIndirect:
				return nil, &ChainError{Head: head, Reason: fmt.Sprintf("indirect table of %d bytes", n)}
			case !q.mem.Contains(addr, uint64(n)):
				return nil, &ChainError{Head: head, Reason: "indirect table outside guest RAM", Err: &guestmem.AccessError{GPA: addr, Len: uint64(n)}}
			case len(c.Readable)+len(c.Writable) > 0:
				return nil, &ChainError{Head: head, Reason: "indirect descriptor after direct buffers"}
			}
			table, tableLen, idx, indirect, count = addr, n/descSize, 0, true, 0
			continue
		}
		if n > 0 && (addr+uint64(n) < addr || !q.mem.Contains(addr, uint64(n))) {
			return nil, &ChainError{Head: head, Reason: "buffer outside guest RAM", Err: &guestmem.AccessError{GPA: addr, Len: uint64(n)}}
		}
		if flags&DescFWrite != 0 {
			c.Writable = append(c.Writable, Buf{addr, n})
			c.WLen += uint64(n)
		} else {
			if len(c.Writable) > 0 {
				return nil, &ChainError{Head: head, Reason: "device-readable buffer after a device-writable one"}
			}
			c.Readable = append(c.Readable, Buf{addr, n})
			c.RLen += uint64(n)
		}
		if c.RLen > maxChainBytes || c.WLen > maxChainBytes {
			return nil, &ChainError{Head: head, Reason: "chain larger than 4 GiB"}
		}
		if flags&DescFNext == 0 {
			return c, nil
		}
		if uint32(next) >= tableLen {
			return nil, &ChainError{Head: head, Reason: fmt.Sprintf("next index %d >= %d", next, tableLen)}
		}
		idx = next
	}
}

// Push returns a chain to the driver with written bytes of device-written
// data.
func (q *Queue) Push(head uint16, written uint32) error {
	var b [8]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(head))
	binary.LittleEndian.PutUint32(b[4:], written)
	if err := q.mem.WriteAt(b[:], q.Used+4+8*uint64(q.usedIdx%q.Size)); err != nil {
		return &ChainError{Head: head, Reason: "used ring unwritable", Err: err}
	}
	q.usedIdx++
	if err := q.mem.StoreU16Release(q.Used+2, q.usedIdx); err != nil {
		return &ChainError{Head: head, Reason: "used ring unwritable", Err: err}
	}
	return nil
}

// NeedInterrupt says whether the driver wants an interrupt for the chains
// pushed since the last call (used_event with EVENT_IDX, else the avail
// ring's NO_INTERRUPT flag).
func (q *Queue) NeedInterrupt() bool {
	old, cur := q.lastSig, q.usedIdx
	q.lastSig = cur
	if old == cur {
		return false
	}
	if q.EventIdx {
		ev, err := q.mem.LoadU16Acquire(q.Avail + 4 + 2*uint64(q.Size))
		if err != nil {
			return true
		}
		return uint16(cur-ev-1) < uint16(cur-old)
	}
	flags, err := q.mem.LoadU16Acquire(q.Avail)
	return err != nil || flags&availFNoInterrupt == 0
}

// Reader returns an io.Reader over the chain's readable buffers.
func (c *Chain) Reader(mem *guestmem.Memory) *ChainReader {
	return &ChainReader{mem: mem, bufs: c.Readable}
}

// Writer returns an io.Writer over the chain's writable buffers.
func (c *Chain) Writer(mem *guestmem.Memory) *ChainWriter {
	return &ChainWriter{mem: mem, bufs: c.Writable}
}

// ChainReader reads the device-readable part of a chain in order.
type ChainReader struct {
	mem  *guestmem.Memory
	bufs []Buf
	off  uint32 // into bufs[0]
}

func (r *ChainReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.bufs) > 0 {
		b := r.bufs[0]
		k := min(uint32(len(p)-n), b.Len-r.off)
		if err := r.mem.ReadAt(p[n:n+int(k)], b.Addr+uint64(r.off)); err != nil {
			return n, err
		}
		n += int(k)
		r.off += k
		if r.off == b.Len {
			r.bufs, r.off = r.bufs[1:], 0
		}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Segments returns up to n bytes of the remaining readable data as host
// slices of guest memory (for vectored I/O) and consumes them.
func (r *ChainReader) Segments(n uint64) ([][]byte, error) {
	return segments(r.mem, &r.bufs, &r.off, n)
}

// ChainWriter fills the device-writable part of a chain in order.
type ChainWriter struct {
	mem     *guestmem.Memory
	bufs    []Buf
	off     uint32
	Written uint32 // bytes written so far
}

func (w *ChainWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(w.bufs) > 0 {
		b := w.bufs[0]
		k := min(uint32(len(p)-n), b.Len-w.off)
		if err := w.mem.WriteAt(p[n:n+int(k)], b.Addr+uint64(w.off)); err != nil {
			return n, err
		}
		n += int(k)
		w.off += k
		w.Written += k
		if w.off == b.Len {
			w.bufs, w.off = w.bufs[1:], 0
		}
	}
	if n < len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// Segments returns up to n bytes of the remaining writable space as host
// slices of guest memory and consumes them (counting them as written).
func (w *ChainWriter) Segments(n uint64) ([][]byte, error) {
	s, err := segments(w.mem, &w.bufs, &w.off, n)
	for _, b := range s {
		w.Written += uint32(len(b))
	}
	return s, err
}

// Remaining is the writable space left.
func (w *ChainWriter) Remaining() uint64 {
	var n uint64
	for i, b := range w.bufs {
		n += uint64(b.Len)
		if i == 0 {
			n -= uint64(w.off)
		}
	}
	return n
}

func segments(mem *guestmem.Memory, bufs *[]Buf, off *uint32, n uint64) ([][]byte, error) {
	var out [][]byte
	for n > 0 && len(*bufs) > 0 {
		b := (*bufs)[0]
		k := min(uint64(b.Len-*off), n)
		gpa := b.Addr + uint64(*off)
		// A buffer may straddle two RAM regions: split at region ends.
		for k > 0 {
			part := k
			s, err := mem.Slice(gpa, part)
			for err != nil && part > 1 {
				part /= 2
				s, err = mem.Slice(gpa, part)
			}
			if err != nil {
				return out, err
			}
			out = append(out, s)
			gpa += part
			k -= part
			n -= part
			*off += uint32(part)
		}
		if *off == b.Len {
			*bufs, *off = (*bufs)[1:], 0
		}
	}
	return out, nil
}

// Unpop gives the last chain returned by Pop back to the ring (the device
// could not use it yet); the next Pop returns it again.
func (q *Queue) Unpop() { q.lastAvail-- }
