package guestmem

import (
	"bytes"
	"testing"
)

func newTest(t *testing.T) *Memory {
	t.Helper()
	m, err := New([]Spec{{GPA: 0x100000, Size: 0x2000}, {GPA: 0, Size: 0x1000}, {GPA: 0x1000, Size: 0x1000}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestBounds(t *testing.T) {
	m := newTest(t)
	if m.Size() != 0x4000 {
		t.Fatalf("size %#x", m.Size())
	}
	// Across two adjacent regions.
	p := bytes.Repeat([]byte{0xab}, 0x20)
	if err := m.WriteAt(p, 0xff0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0x20)
	if err := m.ReadAt(got, 0xff0); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read back %x %v", got, err)
	}
	// Slice must stay in one region.
	if _, err := m.Slice(0xff0, 0x20); err == nil {
		t.Fatal("slice across regions allowed")
	}
	// The hole between 0x2000 and 0x100000.
	for _, c := range []struct{ gpa, n uint64 }{{0x1ff0, 0x20}, {0x2000, 1}, {0x101fff, 2}, {^uint64(0), 2}, {0x100000, 0x2001}} {
		err := m.ReadAt(make([]byte, c.n), c.gpa)
		ae, ok := IsAccessError(err)
		if !ok || ae.GPA != c.gpa || ae.Len != c.n {
			t.Errorf("%#x+%#x: err %v", c.gpa, c.n, err)
		}
	}
	// A failing write changes nothing.
	if err := m.WriteAt(bytes.Repeat([]byte{1}, 0x20), 0x1ff0); err == nil {
		t.Fatal("write past end allowed")
	}
	if b, _ := m.ReadU8(0x1ff0); b != 0 {
		t.Fatalf("partial write happened: %#x", b)
	}
}

func TestAtomics(t *testing.T) {
	m := newTest(t)
	if err := m.WriteU32(0x100, 0x11223344); err != nil {
		t.Fatal(err)
	}
	if err := m.StoreU16Release(0x102, 0xbeef); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.ReadU32(0x100); v != 0xbeef3344 {
		t.Fatalf("got %#x", v)
	}
	if v, _ := m.LoadU16Acquire(0x100); v != 0x3344 {
		t.Fatalf("got %#x", v)
	}
	if err := m.StoreU8Release(0x101, 0x99); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.ReadU32(0x100); v != 0xbeef9944 {
		t.Fatalf("got %#x", v)
	}
	if _, err := m.LoadU16Acquire(0x101); err == nil {
		t.Fatal("unaligned acquire allowed")
	}
	if err := m.StoreU16Release(0x5000, 1); err == nil {
		t.Fatal("store outside RAM allowed")
	}
}

func TestFdBacked(t *testing.T) {
	m := newTest(t)
	if m.Fd() < 0 {
		t.Fatal("no memfd")
	}
	rs := m.Regions()
	if rs[0].GPA != 0 || rs[0].FdOffset != 0 || rs[1].FdOffset != 0x1000 || rs[2].FdOffset != 0x2000 {
		t.Fatalf("layout %+v %+v %+v", rs[0], rs[1], rs[2])
	}
	if _, err := New([]Spec{{GPA: 0, Size: 0x2000}, {GPA: 0x1000, Size: 0x1000}}); err == nil {
		t.Fatal("overlap allowed")
	}
	if _, err := New([]Spec{{GPA: 0, Size: 100}}); err == nil {
		t.Fatal("unaligned allowed")
	}
}

func TestFromBytes(t *testing.T) {
	buf := make([]byte, 64)
	m, err := FromBytes(NewRegion(0x1000, buf, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WriteU64(0x1008, 0x0102030405060708); err != nil {
		t.Fatal(err)
	}
	if buf[8] != 8 || buf[15] != 1 {
		t.Fatalf("buf %x", buf[:16])
	}
	if err := m.Fill(0x1000, 64, 7); err != nil || buf[63] != 7 {
		t.Fatal("fill", err)
	}
	if err := m.Fill(0x1000, 65, 7); err == nil {
		t.Fatal("fill past end allowed")
	}
}
