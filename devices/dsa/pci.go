package dsa

import (
	"fmt"

	"godvm/devices/pci"
	"godvm/devices/platform"
)

// PCI identity of a Sapphire Rapids DSA (the ID Linux idxd binds, PCI_DEVICE_ID_INTEL_DSA_SPR0).
const (
	VendorIntel = 0x8086
	DeviceDSA   = 0x0b25
	ClassDSA    = 0x088000 // system peripheral, other
)

// Function is the DSA's PCI face: a type-0 configuration space with a PCIe
// capability (root-complex integrated endpoint), MSI-X (table and PBA in
// BAR0), a 64-bit BAR0 with the registers and a 64-bit BAR2 with the portals.
// It holds nothing KVM-specific: the vmm adds it to its pci.Root (AddPCI),
// and a vfio-user server can serve its ConfigRead/ConfigWrite, BAR0(),
// Portals() and MSIX vectors instead.
type Function struct {
	*pci.ConfigSpace
	Dev  *Device
	MSIX *pci.MSIX
}

// NewFunction builds the device and its PCI function. Interrupts come from
// irq (one platform MSI vector per MSI-X entry); BARs are mapped on p's MMIO
// bus when the guest (or the root, as firmware) enables them. p is required:
// its Mem is the guest memory the engines reach (a vfio-user server passes a
// Platform over the client's DMA mappings and maps the BARs itself).
func NewFunction(p *platform.Platform, irq platform.Interrupts, cfg Config) (*Function, error) {
	if p == nil || p.Mem == nil {
		return nil, fmt.Errorf("dsa: no guest memory")
	}
	d, err := New(p.Mem, cfg, nil)
	if err != nil {
		return nil, err
	}
	cs := pci.NewConfigSpace(p, "dsa", pci.Header{
		VendorID: VendorIntel, DeviceID: DeviceDSA, Class: ClassDSA,
		SubsysVendor: VendorIntel, SubsysID: 0,
	})
	pcie, err := cs.AddPCIeCapability(pci.PCIeRCiEP, pci.DevCapFLR)
	if err != nil {
		return nil, err
	}
	m, err := pci.NewMSIX(irq, cs, pci.MSIXConfig{
		Vectors: cfg.Vectors(), TableBAR: 0, TableOffset: MSIXTableOffset, PBABAR: 0, PBAOffset: MSIXPBAOffset,
	})
	if err != nil {
		return nil, err
	}
	d.SetMSIX(m.Table(), m.PBA())
	d.SetInterrupter(m)
	d.closers = append(d.closers, func() { m.Close() })
	if err := cs.SetBAR(0, pci.BAR{Type: pci.BARMem64, Size: BAR0Size, Prefetchable: true, Dev: d.BAR0()}); err != nil {
		m.Close()
		return nil, err
	}
	if err := cs.SetBAR(2, pci.BAR{Type: pci.BARMem64, Size: cfg.PortalBARSize(), Prefetchable: true, Dev: d.Portals()}); err != nil {
		m.Close()
		return nil, err
	}
	cs.OnWrite(pci.RegCommand, 2, func(uint16, []byte) { d.SetBusMaster(cs.BusMaster()) })
	// Function-level reset: Initiate FLR (DevCtl bit 15) resets the device
	// registers and the MSI-X table; the bit reads back as 0.
	cs.OnWrite(pcie+pci.PCIeDevCtl, 2, func(uint16, []byte) {
		ctl := cs.U16(pcie + pci.PCIeDevCtl)
		if ctl&0x8000 == 0 {
			return
		}
		cs.SetU16(pcie+pci.PCIeDevCtl, ctl&^0x8000)
		d.Reset()
		m.Reset()
	})
	return &Function{ConfigSpace: cs, Dev: d, MSIX: m}, nil
}

// Close stops the engines and frees the MSI-X vectors (Dev.Close does the same).
func (f *Function) Close() error {
	f.Dev.Close()
	return nil
}

// AddPCI creates a DSA with shape cfg and adds it to root (the vmm's --dsa).
func AddPCI(p *platform.Platform, root *pci.Root, cfg Config) (*Device, error) {
	f, err := NewFunction(p, p.IRQ, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := root.Add("dsa", f); err != nil {
		f.Close()
		return nil, err
	}
	return f.Dev, nil
}
