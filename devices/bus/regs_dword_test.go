package bus

import (
	"fmt"
	"testing"
)

// A 16-byte register file of four dwords, accessed at every offset and
// width, through ReadDwords/WriteDwords, must behave as the same bytes
// accessed directly.
func TestDwords(t *testing.T) {
	for _, width := range []int{1, 2, 4, 8} {
		for off := uint64(0); off+uint64(width) <= 16; off++ {
			regs := [4]uint32{0x03020100, 0x07060504, 0x0b0a0908, 0x0f0e0d0c}
			data := make([]byte, width)
			ReadDwords(off, data, func(dw uint64) uint32 { return regs[dw/4] })
			for i := range data {
				if data[i] != byte(off)+byte(i) {
					t.Fatalf("read %d@%d: % x", width, off, data)
				}
			}
			for i := range data {
				data[i] = 0xf0 | byte(i)
			}
			var seen []string
			WriteDwords(off, data, func(dw uint64, v, mask uint32) {
				seen = append(seen, fmt.Sprintf("%d:%08x/%08x", dw, v, mask))
				regs[dw/4] = regs[dw/4]&^mask | v&mask
			})
			for b := uint64(0); b < 16; b++ {
				got := byte(regs[b/4] >> (8 * (b % 4)))
				want := byte(b)
				if b >= off && b < off+uint64(width) {
					want = 0xf0 | byte(b-off)
				}
				if got != want {
					t.Fatalf("write %d@%d (%v): byte %d = %#x, want %#x", width, off, seen, b, got, want)
				}
			}
			if first, last := off/4, (off+uint64(width)-1)/4; len(seen) != int(last-first+1) {
				t.Fatalf("write %d@%d touched %v", width, off, seen)
			}
		}
	}
}
