package testdev

import (
	"encoding/binary"
	"errors"
	"sync"

	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
)

// IOBar is a vfio-user test device whose only BAR is in I/O space, for
// tests of port I/O BARs (a third-party device's kind, which godvm's own
// devices never use). It identifies as 1b36:0005, class 0xff (unclassified):
// QEMU's PCI test device ID, which no Linux driver binds, so the guest
// kernel enumerates it, places nothing else there and leaves the ports to
// the test. It has no interrupts and does no DMA.
//
// BAR0 is IOBarSize ports; 1-, 2- and 4-byte accesses anywhere:
//
//	0x00 RO  IOMagic
//	0x04 RW  scratch
//	0x08 RO  the scratch register inverted (the device computes it)
//	0x0c RO  writes the BAR has received (any width, any offset)
//
// Other offsets read as zero and ignore writes.
type IOBar struct {
	mu      sync.Mutex
	config  [ConfigSize]byte
	scratch uint32
	reads   uint64
	writes  uint64
}

// IOBar's identity and registers.
const (
	IOBarVendor   = 0x1b36
	IOBarDeviceID = 0x0005
	IOBarClass    = 0xff0000
	IOBarSize     = 0x100

	IORegMagic   = 0x00
	IORegScratch = 0x04
	IORegInvert  = 0x08
	IORegWrites  = 0x0c

	IOMagic = 0x7664_6f67 // the bytes "godv"
)

// NewIOBar makes the device.
func NewIOBar() *IOBar {
	d := &IOBar{}
	le := binary.LittleEndian
	le.PutUint16(d.config[0x00:], IOBarVendor)
	le.PutUint16(d.config[0x02:], IOBarDeviceID)
	d.config[0x0a], d.config[0x0b] = IOBarClass>>8&0xff, IOBarClass>>16 // prog-if 0 at 0x09
	le.PutUint32(d.config[0x10:], 1)                                    // BAR0: I/O space
	le.PutUint16(d.config[0x2c:], IOBarVendor)
	le.PutUint16(d.config[0x2e:], 0x1100)
	return d
}

// Accesses counts the BAR reads and writes the device has served.
func (d *IOBar) Accesses() (reads, writes uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reads, d.writes
}

// Scratch is the scratch register's value.
func (d *IOBar) Scratch() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.scratch
}

var ioBarLayout = vfiouser.PCILayout{
	Name:    "testdev",
	Regions: map[uint32]uint64{vfio.PCIConfigRegionIndex: ConfigSize, 0: IOBarSize},
}

func (d *IOBar) Info() vfio.DeviceInfo { return ioBarLayout.Info() }

func (d *IOBar) RegionInfo(index uint32) (vfio.RegionInfo, error) {
	return ioBarLayout.RegionInfo(index, false)
}

func (d *IOBar) RegionFD(uint32) (int, uint64, bool) { return -1, 0, false }

func (d *IOBar) IRQInfo(index uint32) (vfio.IRQInfo, error) { return ioBarLayout.IRQInfo(index) }

// regs is the register file as bytes.
func (d *IOBar) regs() [16]byte {
	var r [16]byte
	le := binary.LittleEndian
	le.PutUint32(r[IORegMagic:], IOMagic)
	le.PutUint32(r[IORegScratch:], d.scratch)
	le.PutUint32(r[IORegInvert:], ^d.scratch)
	le.PutUint32(r[IORegWrites:], uint32(d.writes))
	return r
}

func (d *IOBar) ReadRegion(index uint32, off uint64, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch index {
	case vfio.PCIConfigRegionIndex:
		if off+uint64(len(p)) > ConfigSize {
			return errors.New("testdev: config read past the end")
		}
		copy(p, d.config[off:])
	case 0:
		if off+uint64(len(p)) > IOBarSize {
			return errors.New("testdev: BAR0 read past the end")
		}
		d.reads++
		r := d.regs()
		for i := range p {
			p[i] = 0
			if o := off + uint64(i); o < uint64(len(r)) {
				p[i] = r[o]
			}
		}
	default:
		return errors.New("testdev: no such region")
	}
	return nil
}

func (d *IOBar) WriteRegion(index uint32, off uint64, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch index {
	case vfio.PCIConfigRegionIndex:
		// Command and status only: identity, BARs and the rest read-only.
		if off+uint64(len(p)) > ConfigSize {
			return errors.New("testdev: config write past the end")
		}
		for i, v := range p {
			if o := off + uint64(i); o >= 0x04 && o < 0x08 {
				d.config[o] = v
			}
		}
	case 0:
		if off+uint64(len(p)) > IOBarSize {
			return errors.New("testdev: BAR0 write past the end")
		}
		d.writes++
		var s [4]byte
		binary.LittleEndian.PutUint32(s[:], d.scratch)
		for i, v := range p {
			if o := off + uint64(i); o >= IORegScratch && o < IORegScratch+4 {
				s[o-IORegScratch] = v
			}
		}
		d.scratch = binary.LittleEndian.Uint32(s[:])
	default:
		return errors.New("testdev: no such region")
	}
	return nil
}

func (d *IOBar) Reset() error {
	d.mu.Lock()
	d.scratch = 0
	d.mu.Unlock()
	return nil
}

func (d *IOBar) Attach(vfiouser.Host)       {}
func (d *IOBar) SetMemory(*guestmem.Memory) {}

var _ vfiouser.Backend = (*IOBar)(nil)
