package bench

import (
	"bytes"
	"testing"
	"time"

	"godvm/vmm"
)

// The bench reads godvm's own --boot-trace text: render one with the vmm
// package's writer and read it back, so the two cannot drift apart.
func TestParseTraceRoundTrip(t *testing.T) {
	tr := &vmm.Trace{
		BootTime:     41500 * time.Millisecond,
		Wall:         63 * time.Second,
		OutsideShare: 0.125,
		Exits:        map[string]uint64{"IO": 86000, "MMIO": 1200, "INTERNAL_ERROR": 310},
		Emulated:     "int3=1 movdir64b=1012",
	}
	var b bytes.Buffer
	tr.Write(&b)
	got, err := ParseTrace("console line\n" + b.String())
	if err != nil {
		t.Fatalf("%v in:\n%s", err, b.String())
	}
	if got.BootTime != tr.BootTime || got.Wall != tr.Wall || got.OutsideShare != 0.125 {
		t.Fatalf("got %+v from:\n%s", got, b.String())
	}
	if got.TotalExits() != 87510 || got.Exits["MMIO"] != 1200 {
		t.Fatalf("exits %+v", got.Exits)
	}
	if len(got.Emulated) != 2 || got.Emulated["movdir64b"] != 1012 || got.Emulated["int3"] != 1 {
		t.Fatalf("emulated %+v", got.Emulated)
	}
	tr.BootTime = 0
	tr.Emulated = "none"
	b.Reset()
	tr.Write(&b)
	if got, err := ParseTrace(b.String()); err != nil || got.BootTime != 0 || len(got.Emulated) != 0 {
		t.Fatalf("no boot time, nothing emulated: %+v %v", got, err)
	}
	if _, err := ParseTrace("no trace here"); err == nil {
		t.Fatal("missing trace accepted")
	}
}

func TestParseDmatest(t *testing.T) {
	out := `[   61.2] dmatest: Added 1 threads using dma0chan0
[  190.0] dmatest: dma0chan0-copy0: summary 1000 tests, 0 failures 35.41 iops 283 KB/s (0)
[  191.0] dmatest: dma0chan1-copy0: summary 500 tests, 2 failures 10.5 iops 100.5 KB/s (0)
`
	d, ok := ParseDmatest(out)
	if !ok || d.Tests != 1500 || d.Failures != 2 || d.IOPS != 45.91 || d.KBps != 383.5 {
		t.Fatalf("%+v %v", d, ok)
	}
	if _, ok := ParseDmatest("nothing"); ok {
		t.Fatal("found a summary in nothing")
	}
}
