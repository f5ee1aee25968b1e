// Package passthrough puts a vfio.Device (kernel VFIO or vfio-user) on the
// guest's PCI bus.
//
//   - Configuration space is read from and written to the device, except the
//     BAR registers (and the ROM BAR), which are virtualised so the guest
//     places BARs in godvm's windows, and the MSI-X capability, which is
//     emulated on the pci MSI-X model at the device's capability offset.
//   - BAR pages the device lets us mmap (sparse-mmap areas: a DSA's portal
//     pages) become KVM memory slots (platform.MemSlots) wherever the guest
//     places the BAR, so guest portal writes never exit. Everything else in
//     a BAR traps and is forwarded with region reads/writes; the MSI-X table
//     and PBA trap to the emulated model.
//   - Each MSI-X vector's eventfd (the platform vector, an irqfd in the VMM)
//     is handed to the device with SetIRQs when the guest enables MSI-X, so
//     the device interrupts the guest without passing through godvm.
//   - All guest RAM is DMA-mapped with IOVA = guest-physical address.
package passthrough

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"godvm/addr"
	"godvm/devices/bus"
	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/vfio"
)

const pageSize = addr.PageSize

// Device is a passthrough PCI function.
type Device struct {
	name string
	dev  vfio.Device
	p    *platform.Platform
	vcs  *pci.ConfigSpace // the virtual side: BARs and the MSI-X capability
	msix *pci.MSIX
	log  *slog.Logger

	msixDev  uint16 // MSI-X capability offset in the device's config space (0: none)
	msixVirt uint16 // the same capability in vcs
	cfgSize  uint64
	// nextOverride replaces capability-list pointer bytes (offset -> value)
	// so the guest does not see the MSI capability: only MSI-X is wired.
	nextOverride map[uint32]byte

	mu      sync.Mutex
	bars    [pci.NumBARs]*bar
	irqOn   bool
	closed  bool
	dmaDone bool
}

// bar is one BAR backed by a device region.
type bar struct {
	d     *Device
	index uint32
	info  vfio.RegionInfo
	// maps are the mmapped pieces that become memory slots.
	maps []mapping
	// msix sub-ranges (offsets in the BAR; size 0 if absent).
	tableOff, tableSize, pbaOff, pbaSize uint64
	// dmwr is the device's region for ENQCMD/ENQCMDS to this BAR
	// (vfio.DMWrRegionType), if hasDMWr.
	dmwr    uint32
	hasDMWr bool
}

type mapping struct {
	off    uint64
	host   []byte
	handle int
	slot   bool
}

// New builds the passthrough function without adding it to a root.
func New(p *platform.Platform, dev vfio.Device, name string) (*Device, error) {
	info := dev.Info()
	if info.Flags&vfio.DeviceFlagPCI == 0 {
		return nil, fmt.Errorf("passthrough: %s is not a PCI device", name)
	}
	if info.NumRegions <= vfio.PCIConfigRegionIndex {
		return nil, fmt.Errorf("passthrough: %s has no configuration-space region", name)
	}
	d := &Device{name: name, dev: dev, p: p, log: slog.Default().With("dev", name)}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	if err := vfio.MapAllRAM(dev, p.Mem); err != nil {
		return nil, err
	}
	d.dmaDone = true
	cri, err := dev.RegionInfo(vfio.PCIConfigRegionIndex)
	if err != nil {
		return nil, err
	}
	d.cfgSize = min(cri.Size, pci.ConfigSize)
	var hdr [64]byte
	if err := dev.ReadRegion(vfio.PCIConfigRegionIndex, 0, hdr[:]); err != nil {
		return nil, fmt.Errorf("passthrough: %s: reading configuration space: %w", name, err)
	}
	le := binary.LittleEndian
	if le.Uint16(hdr[0:]) == 0xffff {
		return nil, fmt.Errorf("passthrough: %s: configuration space reads all-ones (device gone?)", name)
	}
	if hdr[0x0e]&0x7f != 0 {
		return nil, fmt.Errorf("passthrough: %s: header type %#x is not a type-0 endpoint", name, hdr[0x0e])
	}
	d.vcs = pci.NewConfigSpace(p, name, pci.Header{
		VendorID: le.Uint16(hdr[0:]), DeviceID: le.Uint16(hdr[2:]), Revision: hdr[8],
		Class:        uint32(hdr[0x0b])<<16 | uint32(hdr[0x0a])<<8 | uint32(hdr[9]),
		SubsysVendor: le.Uint16(hdr[0x2c:]), SubsysID: le.Uint16(hdr[0x2e:]), InterruptPin: hdr[0x3d],
	})
	d.vcs.OnBARChange = d.barChanged
	d.hideMSI(hdr[:])
	if err := d.setupMSIX(hdr[:]); err != nil {
		return nil, err
	}
	if err := d.setupBARs(hdr[:]); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// findCap walks the device's capability list for id.
func (d *Device) findCap(hdr []byte, id byte) uint16 {
	if binary.LittleEndian.Uint16(hdr[6:])&0x10 == 0 {
		return 0
	}
	off := uint16(hdr[0x34] &^ 3)
	for n := 0; off >= 0x40 && n < 48; n++ {
		var c [2]byte
		if d.dev.ReadRegion(vfio.PCIConfigRegionIndex, uint64(off), c[:]) != nil {
			return 0
		}
		if c[0] == id {
			return off
		}
		off = uint16(c[1] &^ 3)
	}
	return 0
}

// hideMSI unlinks MSI capabilities from the list the guest walks.
func (d *Device) hideMSI(hdr []byte) {
	if binary.LittleEndian.Uint16(hdr[6:])&0x10 == 0 {
		return
	}
	ptr := uint32(0x34) // where the pointer to the current capability lives
	off := uint32(hdr[0x34] &^ 3)
	for n := 0; off >= 0x40 && n < 48; n++ {
		var c [2]byte
		if d.dev.ReadRegion(vfio.PCIConfigRegionIndex, uint64(off), c[:]) != nil {
			return
		}
		next := uint32(c[1] &^ 3)
		if c[0] == pci.CapMSI {
			if d.nextOverride == nil {
				d.nextOverride = map[uint32]byte{}
			}
			d.nextOverride[ptr] = byte(next) // the previous pointer skips it
		} else {
			ptr = off + 1
		}
		off = next
	}
}

func (d *Device) setupMSIX(hdr []byte) error {
	off := d.findCap(hdr, pci.CapMSIX)
	if off == 0 {
		return nil
	}
	var c [12]byte
	if err := d.dev.ReadRegion(vfio.PCIConfigRegionIndex, uint64(off), c[:]); err != nil {
		return err
	}
	le := binary.LittleEndian
	n := int(le.Uint16(c[2:])&0x7ff) + 1
	tbl, pba := le.Uint32(c[4:]), le.Uint32(c[8:])
	if ii, err := d.dev.IRQInfo(vfio.PCIMSIXIRQIndex); err != nil || ii.Count == 0 || ii.Flags&vfio.IRQFlagEventFD == 0 {
		return fmt.Errorf("passthrough: %s: MSI-X capability without eventfd-capable MSI-X IRQs (%v)", d.name, err)
	} else if int(ii.Count) < n {
		n = int(ii.Count)
	}
	m, err := pci.NewMSIX(d.p.IRQ, d.vcs, pci.MSIXConfig{Vectors: n, TableBAR: int(tbl & 7), TableOffset: tbl &^ 7,
		PBABAR: int(pba & 7), PBAOffset: pba &^ 7, External: true})
	if err != nil {
		return err
	}
	d.msix, d.msixDev, d.msixVirt = m, off, m.CapOffset()
	d.vcs.OnWrite(d.msixVirt+pci.MSIXCtl, 2, func(uint16, []byte) { d.msixControl() })
	return nil
}

// msixControl follows the guest's MSI-X Enable bit: all vectors' eventfds go
// to the device when it is set, none when it is cleared.
func (d *Device) msixControl() {
	on := d.msix.Enabled()
	d.mu.Lock()
	defer d.mu.Unlock()
	if on == d.irqOn || d.closed {
		return
	}
	var fds []int
	if on {
		for v := 0; v < d.msix.NumVectors(); v++ {
			fds = append(fds, d.msix.Vector(v).EventFD().Fd())
		}
	}
	if err := d.dev.SetIRQs(vfio.PCIMSIXIRQIndex, 0, fds); err != nil {
		d.log.Error("passthrough: setting MSI-X eventfds", "enable", on, "err", err)
		return
	}
	d.irqOn = on
}

func (d *Device) setupBARs(hdr []byte) error {
	le := binary.LittleEndian
	dmwr := vfio.FindDMWrRegions(d.dev)
	for i := 0; i < pci.NumBARs; i++ {
		reg := le.Uint32(hdr[0x10+4*i:])
		if uint32(i) >= d.dev.Info().NumRegions {
			break
		}
		ri, err := d.dev.RegionInfo(uint32(i))
		if err != nil {
			return err
		}
		if ri.Size == 0 {
			continue
		}
		b := pci.BAR{Size: ri.Size, Prefetchable: reg&8 != 0}
		switch {
		case reg&1 != 0:
			b.Type, b.Prefetchable = pci.BARIO, false
		case reg&6 == 4:
			b.Type = pci.BARMem64
		default:
			b.Type = pci.BARMem32
		}
		if b.Size&(b.Size-1) != 0 {
			return fmt.Errorf("passthrough: %s: BAR%d size %#x is not a power of two", d.name, i, b.Size)
		}
		br := &bar{d: d, index: uint32(i), info: ri}
		br.dmwr, br.hasDMWr = dmwr[uint32(i)]
		if d.msix != nil {
			c := d.msixCfg()
			if c.TableBAR == i {
				br.tableOff, br.tableSize = uint64(c.TableOffset), d.msix.TableSize()
			}
			if c.PBABAR == i {
				br.pbaOff, br.pbaSize = uint64(c.PBAOffset), d.msix.PBASize()
			}
		}
		if b.Type != pci.BARIO {
			if err := br.mapAreas(); err != nil {
				return err
			}
		}
		b.Dev = br
		if err := d.vcs.SetBAR(i, b); err != nil {
			return err
		}
		d.bars[i] = br
		if b.Type == pci.BARMem64 {
			i++
		}
	}
	return nil
}

func (d *Device) msixCfg() pci.MSIXConfig {
	var c [12]byte
	d.vcs.ConfigRead(uint32(d.msixVirt), c[:])
	tbl, pba := binary.LittleEndian.Uint32(c[4:]), binary.LittleEndian.Uint32(c[8:])
	return pci.MSIXConfig{TableBAR: int(tbl & 7), TableOffset: tbl &^ 7, PBABAR: int(pba & 7), PBAOffset: pba &^ 7}
}

// mapAreas mmaps the region's mappable areas, page by page runs, leaving out
// the pages that hold the MSI-X table or PBA (those stay trapped).
func (b *bar) mapAreas() error {
	trapped := func(pg uint64) bool {
		in := func(off, size uint64) bool {
			return size != 0 && pg < off+size && off < pg+pageSize
		}
		return in(b.tableOff, b.tableSize) || in(b.pbaOff, b.pbaSize)
	}
	for _, a := range b.info.Areas {
		start := (a.Offset + pageSize - 1) &^ (pageSize - 1)
		end := (a.Offset + a.Size) &^ (pageSize - 1)
		for pg := start; pg < end; {
			if trapped(pg) {
				pg += pageSize
				continue
			}
			run := pg
			for run < end && !trapped(run) {
				run += pageSize
			}
			host, err := b.d.dev.MapRegion(b.index, pg, run-pg)
			if err != nil {
				return fmt.Errorf("passthrough: %s: BAR%d: %w", b.d.name, b.index, err)
			}
			b.maps = append(b.maps, mapping{off: pg, host: host})
			pg = run
		}
	}
	return nil
}

// barChanged maps or unmaps the BAR's memory slots where the guest put it.
func (d *Device) barChanged(c pci.BARChange) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.bars[c.BAR]
	if b == nil || d.p.Slots == nil {
		return
	}
	for i := range b.maps {
		m := &b.maps[i]
		if m.slot {
			if err := d.p.Slots.UnmapHostMemory(m.handle); err != nil {
				d.log.Error("passthrough: removing BAR memory slot", "bar", c.BAR, "err", err)
			}
			m.slot = false
		}
		if c.Mapped && !d.closed {
			h, err := d.p.Slots.MapHostMemory(c.Addr+m.off, m.host, false)
			if err != nil {
				d.log.Error("passthrough: BAR pages stay trapped", "bar", c.BAR, "gpa", fmt.Sprintf("%#x", c.Addr+m.off), "err", err)
				continue
			}
			m.handle, m.slot = h, true
		}
	}
}

// MappedSlots reports how many BAR pieces are currently memory slots.
func (d *Device) MappedSlots() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, b := range d.bars {
		if b != nil {
			for _, m := range b.maps {
				if m.slot {
					n++
				}
			}
		}
	}
	return n
}

// MSIX is the emulated MSI-X model (nil without an MSI-X capability).
func (d *Device) MSIX() *pci.MSIX { return d.msix }

// Read serves trapped BAR reads.
func (b *bar) Read(off uint64, data []byte) {
	switch {
	case b.tableSize != 0 && off >= b.tableOff && off+uint64(len(data)) <= b.tableOff+b.tableSize:
		b.d.msix.Table().Read(off-b.tableOff, data)
	case b.pbaSize != 0 && off >= b.pbaOff && off+uint64(len(data)) <= b.pbaOff+b.pbaSize:
		b.d.msix.PBA().Read(off-b.pbaOff, data)
	default:
		if err := b.d.dev.ReadRegion(b.index, off, data); err != nil && !errors.Is(err, vfio.ErrFailed) {
			b.d.log.Debug("passthrough: BAR read", "bar", b.index, "off", off, "err", err)
		}
	}
}

// Write serves trapped BAR writes.
func (b *bar) Write(off uint64, data []byte) {
	switch {
	case b.tableSize != 0 && off >= b.tableOff && off+uint64(len(data)) <= b.tableOff+b.tableSize:
		b.d.msix.Table().Write(off-b.tableOff, data)
	case b.pbaSize != 0 && off >= b.pbaOff && off+uint64(len(data)) <= b.pbaOff+b.pbaSize:
	default:
		if err := b.d.dev.WriteRegion(b.index, off, data); err != nil && !errors.Is(err, vfio.ErrFailed) {
			b.d.log.Debug("passthrough: BAR write", "bar", b.index, "off", off, "err", err)
		}
	}
}

// Write64B forwards a trapped 64-byte portal write (MOVDIR64B/ENQCMD that
// exited because the page is not a memory slot).
//
// MOVDIR64B is a posted write: a region write. ENQCMD/ENQCMDS are not (a
// shared WQ ignores posted writes, a dedicated one refuses DMWr), and a
// region write carries no answer: they go through the device's DMWr region
// for the BAR (vfio.DMWrRegionType), whose write result is the device's
// accept/Retry. A device without one cannot take a DMWr through this path,
// so the answer is Retry, never an "accepted" for a descriptor that was
// turned into a posted write and dropped.
func (b *bar) Write64B(off uint64, data *[64]byte, kind bus.WideKind) bool {
	if kind == bus.MOVDIR64B {
		return b.d.dev.WriteRegion(b.index, off, data[:]) == nil
	}
	if !b.hasDMWr {
		return false
	}
	o := vfio.DMWrOffset(off, b.info.Size, kind == bus.ENQCMDS)
	return b.d.dev.WriteRegion(b.dmwr, o, data[:]) == nil
}

// virtual reports whether config offset off is served by vcs, and where.
func (d *Device) virtual(off uint32) (uint32, bool) {
	switch {
	case off >= pci.RegBAR0 && off < pci.RegBAR0+4*pci.NumBARs, off >= 0x30 && off < 0x34:
		return off, true
	case d.msix != nil && off >= uint32(d.msixDev)+2 && off < uint32(d.msixDev)+12:
		return off - uint32(d.msixDev) + uint32(d.msixVirt), true
	}
	return 0, false
}

// ConfigRead implements pci.Device, byte-run by byte-run.
func (d *Device) ConfigRead(off uint32, data []byte) {
	d.configAccess(off, data, false)
}

// ConfigWrite implements pci.Device. Command-register writes reach both the
// device (bus master, memory enable) and the virtual side (BAR decode).
func (d *Device) ConfigWrite(off uint32, data []byte) {
	if off < pci.RegCommand+2 && off+uint32(len(data)) > pci.RegCommand {
		d.vcs.ConfigWrite(off, data)
	}
	d.configAccess(off, data, true)
}

func (d *Device) configAccess(off uint32, data []byte, write bool) {
	for i := 0; i < len(data); {
		o := off + uint32(i)
		v, virt := d.virtual(o)
		j := i + 1
		for j < len(data) {
			v2, virt2 := d.virtual(off + uint32(j))
			if virt2 != virt || (virt && v2 != v+uint32(j-i)) {
				break
			}
			j++
		}
		part := data[i:j]
		if !virt && !write && len(d.nextOverride) > 0 {
			d.dev.ReadRegion(vfio.PCIConfigRegionIndex, uint64(o), part)
			for k := range part {
				if v, ok := d.nextOverride[o+uint32(k)]; ok {
					part[k] = v
				}
			}
			i = j
			continue
		}
		switch {
		case virt && write:
			d.vcs.ConfigWrite(v, part)
		case virt:
			d.vcs.ConfigRead(v, part)
		case uint64(o)+uint64(len(part)) > d.cfgSize:
			if !write {
				clear(part)
			}
		case write:
			if err := d.dev.WriteRegion(vfio.PCIConfigRegionIndex, uint64(o), part); err != nil && !errors.Is(err, vfio.ErrFailed) {
				d.log.Debug("passthrough: config write", "off", o, "err", err)
			}
		default:
			d.dev.ReadRegion(vfio.PCIConfigRegionIndex, uint64(o), part) // all-ones on failure
		}
		i = j
	}
}

// BARs implements pci.Device.
func (d *Device) BARs() [pci.NumBARs]pci.BAR { return d.vcs.BARs() }

// Close removes slots, disables interrupts, unmaps DMA and closes the device.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for _, b := range d.bars {
		if b == nil {
			continue
		}
		for i := range b.maps {
			m := &b.maps[i]
			if m.slot && d.p.Slots != nil {
				d.p.Slots.UnmapHostMemory(m.handle)
			}
			// Cleared so that the BAR unmap below (vcs.Unmap) does not
			// remove the slot a second time.
			m.slot = false
			d.dev.UnmapRegion(m.host)
		}
	}
	irqOn := d.irqOn
	d.mu.Unlock()
	if d.vcs != nil {
		d.vcs.Unmap()
	}
	if irqOn {
		d.dev.SetIRQs(vfio.PCIMSIXIRQIndex, 0, nil)
	}
	if d.msix != nil {
		d.msix.Close()
	}
	if d.dmaDone {
		for _, r := range d.p.Mem.Regions() {
			d.dev.DMAUnmap(r)
		}
	}
	return d.dev.Close()
}

var _ pci.Device = (*Device)(nil)
