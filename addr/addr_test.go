package addr

import (
	"testing"
	"unsafe"
)

func TestRange(t *testing.T) {
	r := Range{Base: 0x1000, Size: 0x2000}
	if r.End() != 0x3000 {
		t.Fatalf("End %#x", r.End())
	}
	for _, c := range []struct {
		o    Range
		want bool
	}{
		{Range{0, 0x1000}, false},      // ends where r starts
		{Range{0x3000, 0x1000}, false}, // starts where r ends
		{Range{0x2fff, 1}, true},
		{Range{0, 0x1001}, true},
		{Range{0x1800, 0x100}, true}, // inside
		{Range{0, 0x10000}, true},    // around
	} {
		if got := r.Overlaps(c.o); got != c.want || c.o.Overlaps(r) != c.want {
			t.Errorf("%+v overlaps %+v: %v, want %v", r, c.o, got, c.want)
		}
	}
}

func TestHost(t *testing.T) {
	if Host(nil) != 0 {
		t.Error("empty slice")
	}
	b := make([]byte, 16)
	if Host(b[4:]) != uint64(uintptr(unsafe.Pointer(&b[0])))+4 {
		t.Error("address of b[4:]")
	}
	if !PageAligned(3*PageSize) || PageAligned(PageSize+8) {
		t.Error("PageAligned")
	}
}
