package abi

import (
	"encoding/binary"
	"testing"
)

func TestBytesAndFrom(t *testing.T) {
	type hdr struct {
		A uint32
		B uint16
		C uint16
	}
	h := hdr{A: 0x11223344, B: 0x5566, C: 0x7788}
	b := Bytes(&h)
	if len(b) != 8 || binary.LittleEndian.Uint32(b) != 0x11223344 || binary.LittleEndian.Uint16(b[6:]) != 0x7788 {
		t.Fatalf("% x", b)
	}
	b[4] = 0xaa
	if h.B != 0x55aa {
		t.Errorf("writes through the view: %#x", h.B)
	}
	if g := From[hdr](b[:6]); g.A != h.A || g.B != h.B || g.C != 0 {
		t.Errorf("From of a short buffer %+v", g)
	}
}
