package testkernel

import (
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
