package vmm

import (
	"testing"

	"godvm/devices/pci"
	"godvm/vmm/layout"
)

// TestPCIIOWindow: the PCI root places I/O BARs in vmm/layout's I/O
// window, and the ACPI tables declare the same window.
func TestPCIIOWindow(t *testing.T) {
	want := pci.Window{Base: layout.PCIIOStart, Size: layout.PCIIOSize}
	if got := pciRootConfig(nil).IO; got != want {
		t.Errorf("PCI root I/O window %+v, want %+v", got, want)
	}
	if got := acpiConfig(1).IO; got.Base != want.Base || got.Size != want.Size {
		t.Errorf("ACPI I/O window %+v, want %+v", got, want)
	}
}
