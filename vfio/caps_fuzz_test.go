package vfio

import "testing"

// FuzzDecodeRegionInfo feeds arbitrary region-info buffers (what a kernel
// or a vfio-user server returns) to the capability-chain parser: it must
// return an error or a consistent result, never panic or loop.
func FuzzDecodeRegionInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		info, _, err := DecodeRegionInfo(b)
		if err != nil {
			return
		}
		for _, a := range info.Areas {
			if a.Offset+a.Size < a.Offset || a.Offset+a.Size > info.Size {
				t.Fatalf("area %+v outside region of %#x bytes", a, info.Size)
			}
		}
	})
}
