package bench

import (
	"math"
	"os"
	"strings"
	"testing"

	"godvm/guestmem"
)

const sampleSmaps = `55d0c0000000-55d0c0200000 r-xp 00000000 fe:01 123   /usr/bin/godvm
Size:               2048 kB
Rss:                1200 kB
Pss:                1200 kB
7f0000000000-7f0020000000 rw-s 00000000 00:01 77    /memfd:godvm-guest-ram (deleted)
Size:             524288 kB
Rss:              100000 kB
7f1000000000-7f1000021000 rw-p 00000000 00:00 0
Size:                132 kB
Rss:                  64 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0     [stack]
Rss:                  12 kB
VmFlags: rd wr mr mw me gd ac
`

func TestParseSmaps(t *testing.T) {
	r, err := ParseSmaps(strings.NewReader(sampleSmaps))
	if err != nil {
		t.Fatal(err)
	}
	want := RSS{TotalKB: 101276, GuestKB: 100000, VMMKB: 1276}
	if r != want {
		t.Fatalf("got %+v want %+v", r, want)
	}
	if _, err := ParseSmaps(strings.NewReader("7f-80 rw-p 0 00:00 0\nRss: lots kB\n")); err == nil {
		t.Fatal("bad Rss accepted")
	}
}

// Guest RAM that the process touches is counted as guest, not VMM, memory.
func TestReadRSSSkipsGuestRAM(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps"); err != nil {
		t.Skip("no /proc/self/smaps:", err)
	}
	before, err := ReadRSS(0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 32 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Fill(0, 32<<20, 1); err != nil { // touch every page
		t.Fatal(err)
	}
	after, err := ReadRSS(0)
	if err != nil {
		t.Fatal(err)
	}
	if g := after.GuestKB - before.GuestKB; g < 30<<10 {
		t.Fatalf("guest RAM grew by %d kB, want about 32768", g)
	}
	if d := math.Abs(float64(after.VMMKB) - float64(before.VMMKB)); d > 8<<10 {
		t.Fatalf("VMM RSS moved by %.0f kB while only guest RAM was touched", d)
	}
}

func TestSummarise(t *testing.T) {
	m := Metric{Values: []float64{5, 1, 3, 2}}
	m.Summarise()
	if m.Median != 2.5 || m.Min != 1 || m.Max != 5 {
		t.Fatalf("%+v", m)
	}
	m = Metric{Values: []float64{7}}
	m.Summarise()
	if m.Median != 7 {
		t.Fatalf("%+v", m)
	}
	m = Metric{}
	m.Summarise()
	if !math.IsNaN(m.Median) {
		t.Fatal("empty metric has a median")
	}
	r := newRecorder()
	if err := r.Add("x", "ms", 1); err != nil {
		t.Fatal(err)
	}
	if err := r.Add("x", "s", 1); err == nil {
		t.Fatal("unit change accepted")
	}
}
