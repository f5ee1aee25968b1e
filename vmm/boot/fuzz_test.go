package boot

import (
	"testing"

	"godvm/vmm/layout"
)

// FuzzParse feeds hostile kernel files to the parser: it must return an error
// or a kernel whose segments lie inside the file and below the 32-bit hole,
// and loading/boot-params building must not panic.
func FuzzParse(f *testing.F) {
	f.Add(makeELF(0x1000000, []testSeg{{paddr: 0x1000000, data: []byte{0x90, 0xf4}, memsz: 0x100}}))
	f.Add(makeBzImage(0x020f, XLFKernel64, 0x1000000, 0x10000, []byte{0x90, 0xf4}))
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := Parse(data)
		if err != nil {
			return
		}
		if k.Entry < k.Start || k.Entry >= k.End || k.End > layout.LowRAMEnd {
			t.Fatalf("entry %#x outside %#x-%#x", k.Entry, k.Start, k.End)
		}
		for _, s := range k.Segments {
			if uint64(len(s.Data)) > s.MemSize || s.Addr+s.MemSize > k.End || s.Addr < k.Start {
				t.Fatalf("segment %#x+%#x/%#x outside %#x-%#x", s.Addr, len(s.Data), s.MemSize, k.Start, k.End)
			}
		}
		ram, _ := layout.RAM(layout.MinMemory)
		mem := testMem(t, int(layout.MinMemory))
		if k.CheckFits(ram) == nil {
			if err := k.Load(mem); err != nil {
				t.Fatalf("kernel fits but does not load: %v", err)
			}
		}
		_, _ = PlaceInitrd(k, 1<<20, ram)
		_, _ = BuildBootParams(k, Params{Cmdline: "console=ttyS0", RAM: ram})
	})
}
