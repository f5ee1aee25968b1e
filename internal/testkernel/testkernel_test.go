package testkernel

import (
	"bytes"
	"compress/gzip"
	"testing"

	"godvm/vmm/boot"
)

// The loader takes it as a 64-bit ELF kernel entered at 16 MiB.
func TestTinyELFParses(t *testing.T) {
	k, err := boot.Parse(TinyELF())
	if err != nil {
		t.Fatal(err)
	}
	if k.Entry != 0x1000000 {
		t.Fatalf("entry %#x", k.Entry)
	}
}

// A gzip-compressed TinyELF in a BzImage is decompressed by the loader and
// entered as the ELF; a payload it cannot decode is left to the guest.
func TestBzImage(t *testing.T) {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write(TinyELF())
	w.Close()
	k, err := boot.Parse(BzImage(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if k.Format != boot.FormatBzImageELF || k.Compression != boot.CompressionGzip || k.Entry != 0x1000000 || k.Note != "" {
		t.Fatalf("%v %q entry %#x note %q", k.Format, k.Compression, k.Entry, k.Note)
	}
	k, err = boot.Parse(BzImage([]byte("not compressed at all")))
	if err != nil || k.Format != boot.FormatBzImage || k.Entry != 0x1000200 || k.Note == "" {
		t.Fatalf("fallback: %+v %v", k, err)
	}
}
