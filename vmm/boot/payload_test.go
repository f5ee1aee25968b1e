package boot

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"

	"godvm/internal/testkernel"
	"godvm/vmm/layout"
)

// fixtureELF is the ELF that testdata/payload/* were made from with the
// system's compressors, the way the kernel's build makes its payloads
// (scripts/Makefile.lib, scripts/xz_wrap.sh), each followed by the
// decompressed size (size_append) except gzip:
//
//	gzip -n -9                                    elf.gz
//	bzip2 -9                                      elf.bz2
//	lzma -9                                       elf.lzma
//	xz --check=crc32 --x86 --lzma2=,dict=32MiB    elf.xz
//	lz4 -l -9 (from a pipe)                       elf.lz4
//	zstd -22 --ultra (from a pipe)                elf.zst
//
// Do not change it: the fixtures would no longer match. Its text is
// x86-like code full of e8/e9 rel32 calls and jumps, so that the x86 BCJ
// filter rewrites many of them.
func fixtureELF() []byte {
	text := make([]byte, 0, 24<<10)
	x := uint32(12345)
	rnd := func() uint32 { x = x*1103515245 + 12345; return x >> 8 }
	for len(text) < 24<<10-16 {
		switch rnd() % 6 {
		case 0, 1: // call rel32, near target (msb 00 or ff)
			rel := int32(rnd()%0x20000) - 0x10000
			text = append(text, 0xe8)
			text = binary.LittleEndian.AppendUint32(text, uint32(rel))
		case 2: // jmp rel32
			text = append(text, 0xe9)
			text = binary.LittleEndian.AppendUint32(text, rnd()%0x4000)
		case 3: // mov rdi, rax; nop
			text = append(text, 0x48, 0x89, 0xc7, 0x90)
		case 4: // e8 not followed by a plausible rel32
			text = append(text, 0xe8, byte(rnd()), 0x12, 0x34, 0x56)
		default:
			text = append(text, byte(rnd()), byte(rnd()), 0x0f, 0x1f, 0x00)
		}
	}
	data := bytes.Repeat([]byte("godvm fixture data "), 200)
	return makeELF(0x1000000, []testSeg{
		{paddr: 0x1000000, data: text, memsz: 0x8000},
		{paddr: 0x1200000, data: data, memsz: 0x10000},
	})
}

func TestFixtureELFStable(t *testing.T) {
	sum := fmt.Sprintf("%x", sha256.Sum256(fixtureELF()))
	if want := readFixtureSum(t); sum != want {
		t.Fatalf("fixtureELF changed (sha256 %s, the fixtures were made from %s): restore it or remake testdata/payload", sum, want)
	}
}

func readFixtureSum(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/payload/elf.sha256")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// sizeAppend is the kernel build's size_append: the size, LE32.
func sizeAppend(b []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(b, uint32(size))
}

// lz4Legacy frames data as `lz4 -l` does (8 MiB blocks), with the size
// appended.
func lz4Legacy(t testing.TB, data []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, lz4LegacyMagic)
	for rest := data; len(rest) > 0; {
		n := min(len(rest), lz4LegacyChunk)
		buf := make([]byte, lz4.CompressBlockBound(n))
		m, err := lz4.CompressBlock(rest[:n], buf, nil)
		if err != nil || m == 0 {
			t.Fatalf("lz4: %d %v", m, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(m))
		out = append(out, buf[:m]...)
		rest = rest[n:]
	}
	return sizeAppend(out, len(data))
}

// goCompress compresses data in the named format with Go libraries, as
// the kernel's build lays the payload out.
func goCompress(t testing.TB, format string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch format {
	case CompressionGzip:
		w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		w.Write(data)
		w.Close()
		return b.Bytes()
	case CompressionXZ:
		w, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case CompressionLZMA:
		w, err := lzma.WriterConfig{EOSMarker: true, Size: -1}.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case CompressionZstd:
		w, _ := zstd.NewWriter(&b, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
		w.Write(data)
		w.Close()
	case CompressionLZ4:
		return lz4Legacy(t, data)
	case CompressionNone:
		return data
	default:
		t.Fatalf("no Go compressor for %s", format)
	}
	return sizeAppend(b.Bytes(), len(data))
}

// makeBzImagePayload builds a bzImage whose protected-mode part is some
// decompressor-like bytes, the payload at payload_offset, then more code
// (as in a real bzImage, the payload is not the end of the file).
func makeBzImagePayload(comp []byte) []byte {
	const off = 0x123
	pm := bytes.Repeat([]byte{0x90}, off)
	pm = append(pm, comp...)
	pm = append(pm, bytes.Repeat([]byte{0xcc}, 200)...)
	img := makeBzImage(0x020f, XLFKernel64|XLFAbove4G, 0x1000000, 0x2000000, pm)
	le := binary.LittleEndian
	le.PutUint32(img[0x248:], off)
	le.PutUint32(img[0x24c:], uint32(len(comp)))
	le.PutUint32(img[0x238:], 1000) // cmdline_size
	le.PutUint32(img[0x22c:], 0x3fffffff)
	return img
}

var allFormats = []string{CompressionGzip, CompressionBzip2, CompressionLZMA, CompressionXZ, CompressionLZ4, CompressionZstd}

var fixtureFile = map[string]string{
	CompressionGzip: "elf.gz", CompressionBzip2: "elf.bz2", CompressionLZMA: "elf.lzma",
	CompressionXZ: "elf.xz", CompressionLZ4: "elf.lz4", CompressionZstd: "elf.zst",
}

func readFixture(t testing.TB, format string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata/payload", fixtureFile[format]))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPayloadFixtures decompresses what the system's compressors made,
// with the kernel's options, and gets fixtureELF back.
func TestPayloadFixtures(t *testing.T) {
	want := fixtureELF()
	for _, f := range allFormats {
		p := readFixture(t, f)
		if got := PayloadFormat(p); got != f {
			t.Errorf("%s: format %q", f, got)
			continue
		}
		format, out, err := DecompressPayload(p, 0)
		if err != nil || format != f || !bytes.Equal(out, want) {
			t.Errorf("%s: format %q, %d bytes (want %d), equal %v: %v", f, format, len(out), len(want), bytes.Equal(out, want), err)
		}
	}
	// The xz fixture really uses the x86 BCJ filter (the kernel's), and
	// the filter really changed bytes: without undoing it the check fails.
	p := readFixture(t, CompressionXZ)
	if hdr := p[12:]; hdr[1]&3 != 1 || hdr[2] != xzFilterX86 || hdr[4] != xzFilterLZMA2 {
		t.Fatalf("elf.xz block header % x: not x86 BCJ + LZMA2", hdr[:8])
	}
	out := &capWriter{max: len(want)}
	r, _ := lzma.Reader2Config{DictCap: 1 << 20}.NewReader2(bytes.NewReader(p[12+int(p[12]+1)*4:]))
	buf := new(bytes.Buffer)
	buf.ReadFrom(r)
	out.Write(buf.Bytes())
	if bytes.Equal(out.b, want) {
		t.Fatal("the BCJ filter changed nothing in the fixture")
	}
	bcjX86Decode(out.b, 0)
	if !bytes.Equal(out.b, want) {
		t.Fatal("bcjX86Decode does not undo xz --x86")
	}
}

// TestPayloadGoCompressed round-trips payloads made with the Go libraries,
// one large enough for several LZMA2 chunks and LZ4 blocks.
func TestPayloadGoCompressed(t *testing.T) {
	small := testkernel.TinyELF()
	big := make([]byte, 9<<20) // two LZ4 legacy blocks, many LZMA2 chunks
	for i := range big {
		big[i] = byte(i/7) ^ byte(i>>13)
	}
	for _, f := range []string{CompressionGzip, CompressionLZMA, CompressionXZ, CompressionLZ4, CompressionZstd, CompressionNone} {
		for _, data := range [][]byte{small, big} {
			if f == CompressionNone && len(data) > 1<<20 {
				continue // not an ELF
			}
			if f == CompressionXZ || f == CompressionLZMA {
				if len(data) > 1<<20 {
					data = data[:3<<20] // the Go LZMA encoder is slow
				}
			}
			p := goCompress(t, f, data)
			format, out, err := DecompressPayload(p, 0)
			if err != nil || format != f || !bytes.Equal(out, data) {
				t.Errorf("%s, %d bytes: got %q, %d bytes: %v", f, len(data), format, len(out), err)
			}
		}
	}
}

func TestParseBzImageHostDecompressed(t *testing.T) {
	elf := fixtureELF()
	want, err := Parse(elf)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range allFormats {
		img := makeBzImagePayload(readFixture(t, f))
		k, err := Parse(img)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if k.Format != FormatBzImageELF || k.Compression != f || k.Note != "" || k.Decompressed != len(elf) {
			t.Errorf("%s: format %v compression %q note %q size %d", f, k.Format, k.Compression, k.Note, k.Decompressed)
		}
		// Loaded as the vmlinux inside is: same entry, extent, segments.
		if k.Entry != want.Entry || k.Start != want.Start || k.End != want.End || len(k.Segments) != len(want.Segments) {
			t.Errorf("%s: entry %#x %#x-%#x, %d segments; want %#x %#x-%#x", f, k.Entry, k.Start, k.End, len(k.Segments), want.Entry, want.Start, want.End)
		}
		mem, wmem := testMem(t, 32<<20), testMem(t, 32<<20)
		if err := k.Load(mem); err != nil {
			t.Fatal(err)
		}
		want.Load(wmem)
		a, b := make([]byte, 0x300000), make([]byte, 0x300000)
		mem.ReadAt(a, 0x1000000)
		wmem.ReadAt(b, 0x1000000)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: loaded memory differs from the vmlinux's", f)
		}
		// The image's own setup header goes to the zero page; its limits
		// apply.
		if k.Hdr == nil || k.Hdr.Version != 0x020f || k.CmdlineMax != 1000 || k.InitrdAddrMax != 0x3fffffff {
			t.Errorf("%s: header %+v cmdline max %d initrd max %#x", f, k.Hdr, k.CmdlineMax, k.InitrdAddrMax)
		}
		ram, _ := layout.RAM(64 << 20)
		bp, err := BuildBootParams(k, Params{Cmdline: "quiet", RAM: ram})
		if err != nil || bp.Hdr.Version != 0x020f || bp.Hdr.CmdlineSize != 1000 || bp.Hdr.Loadflags&LoadedHigh == 0 || bp.Hdr.PayloadLength == 0 {
			t.Errorf("%s: boot params %+v: %v", f, bp.Hdr, err)
		}
		if err := k.CheckCmdline(strings.Repeat("x", 1001)); err == nil {
			t.Errorf("%s: a command line over cmdline_size accepted", f)
		}
	}
	// An uncompressed payload (CONFIG_KERNEL_UNCOMPRESSED) is the ELF.
	k, err := Parse(makeBzImagePayload(elf))
	if err != nil || k.Format != FormatBzImageELF || k.Compression != CompressionNone || k.Entry != want.Entry {
		t.Errorf("uncompressed payload: %+v %v", k, err)
	}
	// Asked to, the bzImage is left to decompress itself.
	img := makeBzImagePayload(readFixture(t, CompressionXZ))
	k, err = ParseWith(img, Options{GuestDecompress: true})
	if err != nil || k.Format != FormatBzImage || k.Entry != 0x1000000+Entry64Offset || k.Note != "" {
		t.Errorf("guest decompress: %+v %v", k, err)
	}
	// HeaderOnly finds the payload without decompressing it.
	k, err = ParseWith(img, Options{HeaderOnly: true})
	if err != nil || k.Format != FormatBzImage || k.Compression != CompressionXZ {
		t.Errorf("header only: %+v %v", k, err)
	}
}

// TestParseBzImageFallback: payloads godvm cannot decode leave the
// bzImage to its own decompressor, with a one-line note saying why.
func TestParseBzImageFallback(t *testing.T) {
	xzp := readFixture(t, CompressionXZ)
	corruptXZ := bytes.Clone(xzp)
	corruptXZ[len(corruptXZ)/2] ^= 0x55
	corruptGzip := bytes.Clone(readFixture(t, CompressionGzip))
	corruptGzip[len(corruptGzip)/2] ^= 0x55
	lied := sizeAppend(bytes.Clone(xzp[:len(xzp)-4]), len(fixtureELF())-100) // declares less than it holds
	arm := bytes.Clone(xzp)
	arm[12+2] = 0x07 // the ARM BCJ filter
	le := binary.LittleEndian
	le.PutUint32(arm[12+int(arm[12]+1)*4-4:], crc32IEEE(arm[12:12+int(arm[12]+1)*4-4]))
	cases := []struct {
		name, payload, note string
	}{
		{"unknown", "\x01\x02\x03\x04 not compressed at all....", "unknown compression (payload starts 01 02 03 04"},
		{"lzo", "\x89LZO\x00\r\n\x1a\n some lzo data ....", "no LZO decoder"},
		{"corrupt xz", string(corruptXZ), "xz payload: xz: block 0"},
		{"corrupt gzip", string(corruptGzip), "gzip payload"},
		{"declared size too small", string(lied), "more than the size its last 4 bytes declare"},
		{"xz filter godvm lacks", string(arm), "unsupported filter 0x7"},
		{"truncated stream", string(sizeAppend(bytes.Clone(xzp[:len(xzp)/2]), len(fixtureELF()))), "xz payload"},
	}
	for _, c := range cases {
		k, err := Parse(makeBzImagePayload([]byte(c.payload)))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if k.Format != FormatBzImage || k.Entry != 0x1000000+Entry64Offset || !strings.Contains(k.Note, c.note) ||
			!strings.Contains(k.Note, "decompresses itself in the guest") || strings.Contains(k.Note, "\n") {
			t.Errorf("%s: format %v entry %#x note %q", c.name, k.Format, k.Entry, k.Note)
		}
	}
	// No payload_length: nothing to decompress.
	k, err := Parse(makeBzImage(0x020f, XLFKernel64, 0x1000000, 0x100000, make([]byte, 0x300)))
	if err != nil || k.Format != FormatBzImage || !strings.Contains(k.Note, "payload_length 0") {
		t.Errorf("no payload_length: %+v %v", k, err)
	}
}

func crc32IEEE(b []byte) uint32 {
	var x uint32 = 0xffffffff
	for _, c := range b {
		x ^= uint32(c)
		for i := 0; i < 8; i++ {
			x = x>>1 ^ 0xedb88320&-(x&1)
		}
	}
	return ^x
}

// TestParseBzImageBadPayload: what is bad input stays an error.
func TestParseBzImageBadPayload(t *testing.T) {
	le := binary.LittleEndian
	good := makeBzImagePayload(readFixture(t, CompressionLZ4))
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	var zeros bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zeros, gzip.BestCompression)
	zw.Write(make([]byte, 2<<20))
	zw.Close()
	cases := []struct {
		name string
		img  []byte
		want string
	}{
		{"payload_offset beyond the file", mod(func(b []byte) { le.PutUint32(b[0x248:], 1<<30) }), "beyond the end of the file"},
		{"payload_length beyond the file", mod(func(b []byte) { le.PutUint32(b[0x24c:], 0xffffffff) }), "truncated?"},
		{"truncated file", good[:len(good)-1000], "beyond the end of the file"},
		{"not an ELF", makeBzImagePayload(goCompress(t, CompressionGzip, []byte("hello, not a kernel"))), "not a loadable vmlinux"},
		{"ELF for another machine", makeBzImagePayload(goCompress(t, CompressionZstd, func() []byte {
			b := testkernel.TinyELF()
			le.PutUint16(b[18:], 183) // arm64
			return b
		}())), "not a loadable vmlinux"},
		{"bomb", makeBzImagePayload(zeros.Bytes()), "more than godvm's limit of 1 MiB"},
		{"bomb declared", makeBzImagePayload(sizeAppend([]byte("\xfd7zXZ\x00...."), 0xffffffff)), "more than godvm's limit"},
	}
	for _, c := range cases {
		_, err := ParseWith(c.img, Options{Limit: 1 << 20})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v (want %q)", c.name, err, c.want)
		}
	}
	// The bomb refused before any output: the declared size decides.
	_, _, err := DecompressPayload(zeros.Bytes(), 1<<20)
	var pe *PayloadError
	if !errors.As(err, &pe) || !pe.Fatal || pe.Format != CompressionGzip {
		t.Errorf("bomb: %#v", err)
	}
	// Real limit: MaxDecompressed.
	_, _, err = DecompressPayload(sizeAppend([]byte("\x02\x21\x4c\x18...."), MaxDecompressed+1), 0)
	if !errors.As(err, &pe) || !pe.Fatal || !strings.Contains(err.Error(), "1024 MiB") {
		t.Errorf("1 GiB limit: %v", err)
	}
}

// TestReadKernelBzImage goes through the file path: the mapping is let go
// once the payload is decompressed, and Close is still safe.
func TestReadKernelBzImage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(path, makeBzImagePayload(readFixture(t, CompressionZstd)), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := ReadKernel(path)
	if err != nil {
		t.Fatal(err)
	}
	if k.Format != FormatBzImageELF || k.unmap != nil {
		t.Errorf("format %v, mapping kept %v", k.Format, k.unmap != nil)
	}
	if err := k.Load(testMem(t, 32<<20)); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	k, err = ReadKernelWith(path, Options{GuestDecompress: true})
	if err != nil || k.Format != FormatBzImage || k.unmap == nil {
		t.Fatalf("guest decompress: %v", err)
	}
	k.Close()
}

func TestBCJX86Decode(t *testing.T) {
	// e8 with an absolute target the encoder made from rel32 at offset 0:
	// the decoder subtracts the position after the instruction.
	b := []byte{0xe8, 0x10, 0x00, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90}
	bcjX86Decode(b, 0)
	if got := binary.LittleEndian.Uint32(b[1:]); got != 0x10-5 {
		t.Errorf("rel %#x, want %#x", got, 0x10-5)
	}
	// With a start offset, and e9; the msb byte 0x12 is not converted.
	b = []byte{0x90, 0xe9, 0x00, 0x10, 0x00, 0x00, 0xe8, 0x00, 0x00, 0x00, 0x12, 0x90, 0x90, 0x90, 0x90}
	bcjX86Decode(b, 0x1000)
	if got := int32(binary.LittleEndian.Uint32(b[2:])); got != 0x1000-(0x1000+1+5) {
		t.Errorf("e9 rel %#x", got)
	}
	if !bytes.Equal(b[6:11], []byte{0xe8, 0, 0, 0, 0x12}) {
		t.Errorf("converted a non-call: % x", b[6:11])
	}
	// The last 4 bytes are never touched; short buffers are left alone.
	short := []byte{0xe8, 1, 0, 0}
	bcjX86Decode(short, 0)
	if !bytes.Equal(short, []byte{0xe8, 1, 0, 0}) {
		t.Error("short buffer changed")
	}
}

// TestRealBzImage decompresses a real kernel named by GODVM_TEST_BZIMAGE
// (e.g. Debian's /boot/vmlinuz-*, XZ with the x86 BCJ filter, or the test
// kernel's LZ4 bzImage) and checks that a loadable vmlinux comes out.
func TestRealBzImage(t *testing.T) {
	path := os.Getenv("GODVM_TEST_BZIMAGE")
	if path == "" {
		t.Skip("GODVM_TEST_BZIMAGE not set")
	}
	k, err := ReadKernel(path)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.Format != FormatBzImageELF || k.Note != "" {
		t.Fatalf("format %v, note %q", k.Format, k.Note)
	}
	t.Logf("%s payload, %d bytes decompressed; entry %#x, %#x-%#x, %d segments", k.Compression, k.Decompressed, k.Entry, k.Start, k.End, len(k.Segments))
}
