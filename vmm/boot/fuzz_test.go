package boot

import (
	"bytes"
	"errors"
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
	f.Add(makeBzImagePayload(goCompress(f, CompressionLZ4, makeELF(0x1000000, []testSeg{{paddr: 0x1000000, data: []byte{0x90, 0xf4}, memsz: 0x100}}))))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseWith(data, Options{Limit: fuzzLimit})
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

// fuzzLimit keeps a fuzzed payload's output small.
const fuzzLimit = 4 << 20

// FuzzDecompressPayload feeds hostile payloads to the format dispatch and
// the decoders (the kernel's formats as godvm frames them: xz container
// and BCJ, LZ4 legacy blocks, the size trailer). They must return the
// input's format and at most the limit, or a *PayloadError; never panic
// or allocate without bound. Seeds: testdata/fuzz/FuzzDecompressPayload
// holds a 136-byte ELF compressed by the system's tools as the kernel's
// build does (see fixtureELF), each also cut short, with a byte flipped
// and declaring 2 GiB; an .lzma header asking for a 4 GiB dictionary; an
// LZO stream; the bare ELF. They are small on purpose: the fuzzer
// minimises every new input, which takes minutes for the 12-17 KiB
// fixtures of testdata/payload.
func FuzzDecompressPayload(f *testing.F) {
	f.Add(goCompress(f, CompressionXZ, []byte("\x7fELF small")))
	f.Add(goCompress(f, CompressionLZMA, []byte("\x7fELF small")))
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, p []byte) {
		format, out, err := DecompressPayload(p, fuzzLimit)
		if format != PayloadFormat(p) {
			t.Fatalf("format %q, PayloadFormat %q", format, PayloadFormat(p))
		}
		if err != nil {
			var pe *PayloadError
			if !errors.As(err, &pe) || out != nil {
				t.Fatalf("error %T %v with %d bytes", err, err, len(out))
			}
			return
		}
		if format == CompressionNone {
			if !bytes.Equal(out, p) {
				t.Fatal("uncompressed payload changed")
			}
			return
		}
		if len(out) > fuzzLimit || len(out) == 0 {
			t.Fatalf("%d bytes out", len(out))
		}
	})
}
