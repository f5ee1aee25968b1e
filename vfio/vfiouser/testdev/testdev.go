// Package testdev is a tiny DSA-shaped vfio-user backend for tests and
// benchmarks: PCI config space, a BAR0 register file, and a portal BAR whose
// first page can be mapped (a polled shared page) while 64-byte writes
// through REGION_WRITE are trapped submissions. A descriptor copies memory
// and writes a completion record, then (if asked) fires MSI-X vector 0.
//
// Descriptor (64 bytes): byte 7 opcode (OpMemmove), byte 4 flags
// (FlagRCR: write a completion record, FlagRCI: interrupt), 8 completion
// address, 16 source, 24 destination, 32 size (u32). Completion record:
// byte 0 status (1 success, 0x80|n failure), 4 bytes completed (u32).
package testdev

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"

	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
)

// Layout.
const (
	ConfigSize = 256
	BAR0Size   = 4096
	PortalBAR  = 2
	PortalSize = 8192 // page 0 mappable (polled), page 1 trapped only

	RegVersion   = 0x00 // RO 0x100
	RegScratch   = 0x08 // RW
	RegCompleted = 0x10 // RO: descriptors completed

	OpMemmove = 3
	FlagRCR   = 0x08
	FlagRCI   = 0x04

	StatusSuccess   = 1
	StatusFaultAddr = 0x83
)

// Device is the backend.
type Device struct {
	mu      sync.Mutex
	config  [ConfigSize]byte
	scratch uint64
	done    atomic.Uint64
	host    vfiouser.Host

	memMu sync.RWMutex
	mem   *guestmem.Memory

	portal *vfiouser.PortalPage
}

// New makes a device; mapped=true also offers the polled portal page.
func New(mapped bool) (*Device, error) {
	d := &Device{}
	binary.LittleEndian.PutUint16(d.config[0:], 0x8086) // vendor
	binary.LittleEndian.PutUint16(d.config[2:], 0x0b25) // DSA
	d.config[0x0b] = 0x08                               // class: system peripheral
	if mapped {
		p, err := vfiouser.NewPortalPage(4096, func(_ uint64, desc *[64]byte) { d.Submit(desc) })
		if err != nil {
			return nil, err
		}
		d.portal = p
		p.Start()
	}
	return d, nil
}

// Close stops the portal poller.
func (d *Device) Close() error {
	if d.portal != nil {
		return d.portal.Close()
	}
	return nil
}

// Completed counts descriptors completed.
func (d *Device) Completed() uint64 { return d.done.Load() }

// layout is the test device's region and IRQ shape.
var layout = vfiouser.PCILayout{
	Name:    "testdev",
	Regions: map[uint32]uint64{vfio.PCIConfigRegionIndex: ConfigSize, 0: BAR0Size, PortalBAR: PortalSize},
	Mmap:    map[uint32]vfio.Area{PortalBAR: {Offset: 0, Size: 4096}},
	MSIX:    2,
}

func (d *Device) Info() vfio.DeviceInfo { return layout.Info() }

func (d *Device) RegionInfo(index uint32) (vfio.RegionInfo, error) {
	return layout.RegionInfo(index, d.portal != nil)
}

func (d *Device) RegionFD(index uint32) (int, uint64, bool) {
	if index == PortalBAR && d.portal != nil {
		return d.portal.FD(), 0, true
	}
	return -1, 0, false
}

func (d *Device) IRQInfo(index uint32) (vfio.IRQInfo, error) { return layout.IRQInfo(index) }

func (d *Device) ReadRegion(index uint32, off uint64, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch index {
	case vfio.PCIConfigRegionIndex:
		copy(p, d.config[off:])
	case 0:
		var regs [24]byte
		binary.LittleEndian.PutUint64(regs[RegVersion:], 0x100)
		binary.LittleEndian.PutUint64(regs[RegScratch:], d.scratch)
		binary.LittleEndian.PutUint64(regs[RegCompleted:], d.done.Load())
		clear(p)
		if off < uint64(len(regs)) {
			copy(p, regs[off:])
		}
	default:
		for i := range p {
			p[i] = 0xff
		}
	}
	return nil
}

func (d *Device) WriteRegion(index uint32, off uint64, p []byte) error {
	switch index {
	case vfio.PCIConfigRegionIndex:
		d.mu.Lock()
		if off >= 4 { // IDs are read-only
			copy(d.config[off:], p)
		}
		d.mu.Unlock()
	case 0:
		if off == RegScratch && len(p) == 8 {
			d.mu.Lock()
			d.scratch = binary.LittleEndian.Uint64(p)
			d.mu.Unlock()
		}
	case PortalBAR:
		if len(p) != 64 || off%64 != 0 {
			return errors.New("testdev: portal writes are 64 bytes, aligned")
		}
		d.Submit((*[64]byte)(p))
	}
	return nil
}

func (d *Device) Reset() error {
	d.mu.Lock()
	d.scratch = 0
	d.mu.Unlock()
	return nil
}

func (d *Device) Attach(h vfiouser.Host) { d.host = h }

func (d *Device) SetMemory(m *guestmem.Memory) {
	d.memMu.Lock()
	d.mem = m
	d.memMu.Unlock()
}

// Submit executes one descriptor.
func (d *Device) Submit(desc *[64]byte) {
	d.memMu.RLock()
	defer d.memMu.RUnlock()
	flags, op := desc[4], desc[7]
	comp := binary.LittleEndian.Uint64(desc[8:])
	src := binary.LittleEndian.Uint64(desc[16:])
	dst := binary.LittleEndian.Uint64(desc[24:])
	n := binary.LittleEndian.Uint32(desc[32:])
	status := byte(StatusSuccess)
	var done uint32
	m := d.mem
	if op == OpMemmove {
		if m == nil {
			status = StatusFaultAddr
		} else if s, err := m.Slice(src, uint64(n)); err != nil {
			status = StatusFaultAddr
		} else if err := m.WriteAt(s, dst); err != nil {
			status = StatusFaultAddr
		} else {
			done = n
		}
	}
	if flags&FlagRCR != 0 && m != nil {
		var rec [8]byte
		binary.LittleEndian.PutUint32(rec[4:], done)
		if m.WriteAt(rec[1:], comp+1) == nil {
			m.StoreU8Release(comp, status)
		}
	}
	d.done.Add(1)
	if flags&FlagRCI != 0 && d.host != nil {
		d.host.Trigger(vfio.PCIMSIXIRQIndex, 0)
	}
}

// Descriptor builds a memmove descriptor.
func Descriptor(src, dst uint64, n uint32, comp uint64, flags byte) [64]byte {
	var d [64]byte
	d[4], d[7] = flags, OpMemmove
	binary.LittleEndian.PutUint64(d[8:], comp)
	binary.LittleEndian.PutUint64(d[16:], src)
	binary.LittleEndian.PutUint64(d[24:], dst)
	binary.LittleEndian.PutUint32(d[32:], n)
	return d
}

var _ vfiouser.Backend = (*Device)(nil)
