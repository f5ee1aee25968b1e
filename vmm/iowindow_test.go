package vmm

import (
	"testing"

	"godvm/addr"
	"godvm/vmm/layout"
)

// TestPCIIOWindow: the PCI root places I/O BARs in vmm/layout's I/O
// window, and the ACPI tables declare the same window.
func TestPCIIOWindow(t *testing.T) {
	want := addr.Range{Base: layout.PCIIOStart, Size: layout.PCIIOSize}
	if got := pciRootConfig(nil).IO; got != want {
		t.Errorf("PCI root I/O window %+v, want %+v", got, want)
	}
	if got := acpiConfig(1).IO; got != want {
		t.Errorf("ACPI I/O window %+v, want %+v", got, want)
	}
}
