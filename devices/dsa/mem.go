package dsa

import (
	"bytes"
	"encoding/binary"
	"math/bits"

	"godvm/guestmem"
)

// Guest-memory helpers for the engines: every access goes through
// *guestmem.Memory; ranges are checked up front so an operation can report
// how many bytes it completed before the first address outside RAM.

// validPrefix is how many bytes of [gpa, gpa+n) are guest RAM from the start.
func validPrefix(m *guestmem.Memory, gpa, n uint64) uint64 {
	var done uint64
	for done < n {
		a := gpa + done
		if a < gpa { // wrapped
			return done
		}
		var r *guestmem.Region
		for _, x := range m.Regions() {
			if x.GPA <= a && a < x.End() {
				r = x
				break
			}
		}
		if r == nil {
			return done
		}
		done += min(n-done, r.End()-a)
	}
	return n
}

// ramRange is one region of guest memory as the engines look it up: the
// executor keeps them in one flat table (setMem), so a lookup reads one
// array instead of following the memory's region pointers.
type ramRange struct {
	gpa, size uint64
	host      []byte // len(host) == size
}

// setMem makes m the memory the executor's descriptors address.
func (x *executor) setMem(m *guestmem.Memory) {
	x.mem = m
	x.ram = nil // a new table: the copies already published keep theirs
	for _, r := range m.Regions() {
		h := r.Host()
		x.ram = append(x.ram, ramRange{gpa: r.GPA, size: min(r.Size, uint64(len(h))), host: h})
	}
}

// slice is the host view of [gpa, gpa+n) when it lies in one region (n > 0):
// the one bounds check of an operand on the engines' fast paths. It walks
// the (few) regions in place instead of guestmem's binary search with its
// error value.
func (x *executor) slice(gpa, n uint64) ([]byte, bool) {
	for i := range x.ram {
		r := &x.ram[i]
		off := gpa - r.gpa
		if gpa >= r.gpa && off < r.size && n <= r.size-off {
			return r.host[off : off+n : off+n], true
		}
	}
	return nil, false
}

// comparePattern compares b with the 8-byte pattern repeated from phase off
// (byte i against pat[(off+i)&7]) and returns the index of the first
// difference, or ok=true.
func comparePattern(b []byte, pat *[8]byte, off uint64) (int, bool) {
	// The common case, a match: b's first 8 bytes are the pattern at this
	// phase and every later byte equals the one 8 before it (one memcmp).
	if len(b) >= 8 {
		ok := true
		for i := range 8 {
			if b[i] != pat[(off+uint64(i))&7] {
				ok = false
				break
			}
		}
		if ok && bytes.Equal(b[8:], b[:len(b)-8]) {
			return 0, true
		}
	}
	i := 0
	for ; i < len(b) && (off+uint64(i))&7 != 0; i++ {
		if b[i] != pat[(off+uint64(i))&7] {
			return i, false
		}
	}
	p := binary.LittleEndian.Uint64(pat[:])
	for ; i+8 <= len(b); i += 8 {
		if v := binary.LittleEndian.Uint64(b[i:]) ^ p; v != 0 {
			return i + bits.TrailingZeros64(v)/8, false
		}
	}
	for ; i < len(b); i++ {
		if b[i] != pat[(off+uint64(i))&7] {
			return i, false
		}
	}
	return 0, true
}

const chunk = 64 << 10

// copyGuest copies n bytes from src to dst with memmove semantics. Both ranges
// must be RAM (checked by the caller).
func copyGuest(m *guestmem.Memory, dst, src, n uint64, buf *[]byte) {
	if n == 0 {
		return
	}
	if d, err := m.Slice(dst, n); err == nil {
		if s, err := m.Slice(src, n); err == nil {
			copy(d, s)
			return
		}
	}
	// Ranges crossing a region boundary: bounce through a bounded buffer,
	// backwards when dst overlaps the tail of src.
	if len(*buf) < chunk {
		*buf = make([]byte, chunk)
	}
	b := *buf
	if dst > src && dst < src+n {
		for left := n; left > 0; {
			k := min(left, chunk)
			left -= k
			m.ReadAt(b[:k], src+left)
			m.WriteAt(b[:k], dst+left)
		}
		return
	}
	for done := uint64(0); done < n; {
		k := min(n-done, chunk)
		m.ReadAt(b[:k], src+done)
		m.WriteAt(b[:k], dst+done)
		done += k
	}
}

// forEach calls f on successive host views of [gpa, gpa+n) (RAM, checked by
// the caller) in order; off is the offset of b in the range.
func forEach(m *guestmem.Memory, gpa, n uint64, f func(b []byte, off uint64) bool) {
	for done := uint64(0); done < n; {
		a := gpa + done
		var r *guestmem.Region
		for _, x := range m.Regions() {
			if x.GPA <= a && a < x.End() {
				r = x
				break
			}
		}
		if r == nil {
			return
		}
		k := min(n-done, r.End()-a)
		b, err := m.Slice(a, k)
		if err != nil {
			return
		}
		if !f(b, done) {
			return
		}
		done += k
	}
}

func overlaps(a, an, b, bn uint64) bool {
	return an > 0 && bn > 0 && a < b+bn && b < a+an
}
