package sysmap

import (
	"strings"
	"testing"
)

const sample = `0000000000000000 D __per_cpu_start
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81001000 t default_idle
ffffffff81001040 T do_one_initcall
ffffffff81002000 d some_data
garbage line
ffffffff81003000 T _etext
`

func TestLookup(t *testing.T) {
	m, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[uint64]string{
		0xffffffff81001012: "default_idle+0x12",
		0xffffffff81001040: "do_one_initcall",
		0xffffffff81002500: "do_one_initcall+0x14c0", // data symbols are skipped
		0x1001012:          "default_idle+0x12",      // physical alias during early boot
	} {
		if got, ok := m.Lookup(addr); !ok || got != want {
			t.Errorf("%#x: %q %v, want %q", addr, got, ok, want)
		}
	}
	for _, addr := range []uint64{0x10, 0xffffffff81003010, 0xffffffff80000000} {
		if got, ok := m.Lookup(addr); ok {
			t.Errorf("%#x resolved to %q", addr, got)
		}
	}
	if _, err := Parse(strings.NewReader("not a map\n")); err == nil {
		t.Error("empty map accepted")
	}
	var nilMap *Map
	if _, ok := nilMap.Lookup(1); ok {
		t.Error("nil map")
	}
}
