package bus

import (
	"bytes"
	"testing"
)

func TestRegisterImages(t *testing.T) {
	img := []byte{0, 1, 2, 3, 4, 5, 6, 7}
	// A read that starts before the image and ends inside it.
	data := []byte{0xff, 0xff, 0xff, 0xff}
	ReadRegs(img, 0x10, 0x0e, data)
	if !bytes.Equal(data, []byte{0xff, 0xff, 0, 1}) {
		t.Errorf("read across the start % x", data)
	}
	// A 4-byte read of the high half of a 64-bit register.
	data = make([]byte, 4)
	ReadRegs(img, 0x10, 0x14, data)
	if !bytes.Equal(data, []byte{4, 5, 6, 7}) {
		t.Errorf("high half % x", data)
	}
	// Writes: the low half, then a byte past the end (ignored).
	if !WriteRegs(img, 0x10, 0x10, []byte{0xa0, 0xa1, 0xa2, 0xa3}) || !bytes.Equal(img, []byte{0xa0, 0xa1, 0xa2, 0xa3, 4, 5, 6, 7}) {
		t.Errorf("low-half write % x", img)
	}
	if WriteRegs(img, 0x10, 0x18, []byte{9}) {
		t.Error("a write past the image overlapped")
	}
	if WriteRegs(img, 0x10, ^uint64(0), []byte{1, 2}) {
		t.Error("a wrapping write overlapped")
	}
	for _, c := range []struct {
		off  uint64
		n    int
		want bool
	}{{0x0, 2, false}, {0x0, 4, true}, {0x2, 2, true}, {0x3, 1, true}, {0x4, 4, false}, {0x0, 8, true}} {
		if got := Touches(c.off, c.n, 2, 2); got != c.want {
			t.Errorf("Touches(%#x, %d, reg 2+2) = %v", c.off, c.n, got)
		}
	}
}
