package pci_test

import (
	"fmt"

	"godvm/addr"
	"godvm/devices/bus"
	"godvm/devices/pci"
	"godvm/devices/platform/fake"
)

// regs is a device's register file (BAR0 offsets 0..0xfff).
type regs struct{ last uint64 }

func (r *regs) Read(off uint64, data []byte)  { clear(data) }
func (r *regs) Write(off uint64, data []byte) { r.last = off }

var _ bus.Device = (*regs)(nil)

// A PCI Express endpoint with registers and MSI-X in one 64-bit BAR,
// placed on the root by the VMM.
func Example() {
	f, p := fake.New(nil)
	root, err := pci.NewRoot(p, pci.RootConfig{
		ECAM:  addr.Range{Base: 0xe000_0000, Size: 0x1000_0000},
		Mem32: addr.Range{Base: 0xc000_0000, Size: 0x2000_0000},
		Mem64: addr.Range{Base: 0x10_0000_0000, Size: 0x10_0000_0000},
	})
	if err != nil {
		panic(err)
	}
	cs := pci.NewConfigSpace(p, "example", pci.Header{VendorID: 0x1234, DeviceID: 0x5678, Class: 0x088000})
	cs.AddPCIeCapability(pci.PCIeRCiEP, 0)
	msix, _ := pci.NewMSIX(f, cs, pci.MSIXConfig{Vectors: 4, TableBAR: 0, TableOffset: 0x2000, PBABAR: 0, PBAOffset: 0x3000})
	var bar0 pci.Mux
	bar0.Add(0, 0x1000, "regs", &regs{})
	bar0.Add(0x2000, msix.TableSize(), "msix-table", msix.Table())
	bar0.Add(0x3000, msix.PBASize(), "msix-pba", msix.PBA())
	cs.SetBAR(0, pci.BAR{Type: pci.BARMem64, Size: 0x4000, Dev: &bar0})
	cs.OnBARChange = func(ch pci.BARChange) { fmt.Printf("BAR%d mapped=%v at %#x\n", ch.BAR, ch.Mapped, ch.Addr) }

	slot, _ := root.Add("example", cs)
	fmt.Println("slot", slot)
	// The device raises vector 2 (pending until the guest unmasks it).
	msix.Notify(2)
	// Output:
	// BAR0 mapped=true at 0x1000000000
	// slot 1
}
