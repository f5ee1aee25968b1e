package sysmap

import (
	"bytes"
	"testing"
)

// FuzzParse: any System.map-ish input parses or is refused; lookups never
// panic and name a symbol at or below the address.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample), uint64(0xffffffff81001012))
	f.Add([]byte("ffffffffffffffff T end\n0 T start\n"), uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, addr uint64) {
		m, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		m.Lookup(addr)
		m.Lookup(^addr)
	})
}
