package kvm

import (
	"testing"
	"unsafe"
)

// FuzzRunAccessors fills a kvm_run page with arbitrary bytes (standing for
// a kernel that reports nonsense) and calls every accessor: none may panic
// or reach outside the page.
func FuzzRunAccessors(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0}, uint64(4090))
	f.Add([]byte{}, uint64(0xffff_ffff_ffff_ffff))
	f.Fuzz(func(t *testing.T, head []byte, dataOffset uint64) {
		w := make([]uint64, 4096/8)
		b := unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4096)
		copy(b, head)
		for i := range 8 {
			b[40+i] = byte(dataOffset >> (8 * i))
		}
		r, err := NewRun(b)
		if err != nil {
			t.Fatal(err)
		}
		_ = r.ExitReason().String()
		_ = r.IO()
		if d, err := r.IOData(); err == nil && len(d) > 0 {
			d[0] = 1
		}
		_ = r.MMIO()
		if d := r.MMIOData(); len(d) > 8 {
			t.Fatalf("mmio data %d bytes", len(d))
		}
		ie := r.InternalError()
		if len(ie.Data) > 16 || len(ie.InsnBytes) > 15 {
			t.Fatalf("internal error %d data, %d bytes", len(ie.Data), len(ie.InsnBytes))
		}
		_, _ = r.FailEntry()
		if se := r.SystemEvent(); len(se.Data) > 16 {
			t.Fatal("system event data")
		}
		_ = r.Debug()
	})
}
