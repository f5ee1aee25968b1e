package bus

import "testing"

type rec struct {
	lastOff  uint64
	lastData []byte
	wide     int
}

func (r *rec) Read(off uint64, d []byte) {
	r.lastOff = off
	for i := range d {
		d[i] = byte(off) + byte(i)
	}
}
func (r *rec) Write(off uint64, d []byte) { r.lastOff, r.lastData = off, append([]byte(nil), d...) }

type wide struct{ rec }

func (w *wide) Write64B(off uint64, d *[64]byte, k WideKind) bool { w.wide++; return k != ENQCMDS }

func TestBus(t *testing.T) {
	var b Bus
	a, c := &rec{}, &wide{}
	if err := b.Register(0x1000, 0x100, "a", a); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(0x2000, 0x1000, "c", c); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]uint64{{0x10ff, 2}, {0xf00, 0x101}, {0x1fff, 2}, {0x2fff, 0x10}} {
		if err := b.Register(r[0], r[1], "bad", a); err == nil {
			t.Errorf("overlap %#x+%#x accepted", r[0], r[1])
		}
	}
	if err := b.Register(5, 0, "zero", a); err == nil {
		t.Error("empty range accepted")
	}
	d := make([]byte, 4)
	if !b.Read(0x1010, d) || d[0] != 0x10 || d[3] != 0x13 {
		t.Fatalf("read %x", d)
	}
	if b.Read(0x10fe, d) {
		t.Fatal("read straddling the end dispatched")
	}
	if b.Read(0x1100, d) || b.Read(0xfff, d[:1]) {
		t.Fatal("read outside dispatched")
	}
	if !b.Write(0x1004, []byte{1, 2}) || a.lastOff != 4 || a.lastData[1] != 2 {
		t.Fatal("write")
	}
	var p [64]byte
	if f, acc := b.Write64B(0x2040, &p, ENQCMD); !f || !acc || c.wide != 1 {
		t.Fatal("wide")
	}
	if f, acc := b.Write64B(0x2040, &p, ENQCMDS); !f || acc {
		t.Fatal("wide answer not passed on")
	}
	if f, acc := b.Write64B(0x1000, &p, MOVDIR64B); !f || !acc || len(a.lastData) != 64 {
		t.Fatal("fallback to Write")
	}
	if f, _ := b.Write64B(0x10c1, &p, MOVDIR64B); f {
		t.Fatal("wide write past the end dispatched")
	}
	// Wide64At: only a Wide64 device takes 64-byte writes itself.
	if !b.Wide64At(0x2000) || !b.Wide64At(0x2fc0) || b.Wide64At(0x2fc1) || b.Wide64At(0x1000) || b.Wide64At(0x3000) {
		t.Fatal("Wide64At")
	}
	if err := b.Unregister(0x1000); err != nil || b.Read(0x1000, d) {
		t.Fatal("unregister")
	}
	if err := b.Unregister(0x1000); err == nil {
		t.Fatal("double unregister")
	}
	if rs := b.Ranges(); len(rs) != 1 || rs[0].Name != "c" {
		t.Fatalf("ranges %+v", rs)
	}
}
