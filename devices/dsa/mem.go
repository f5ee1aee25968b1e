package dsa

import (
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
