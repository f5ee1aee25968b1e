// Package pci is godvm's PCI bus: a host bridge with configuration access
// through the configuration ports (0xCF8/0xCFC) and ECAM, BAR allocation from the layout's MMIO
// windows, a reusable type-0 configuration-space model (header, BAR sizing and
// relocation, capability lists, write masks) and the MSI-X model that every
// device (virtio, the DSA model, VFIO passthrough) interrupts through.
//
// A device is anything implementing Device. Most embed a *ConfigSpace, whose
// ConfigRead/ConfigWrite/BARs methods satisfy Device directly.
package pci

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"

	"godvm/devices/bus"
	"godvm/devices/platform"
)

// ConfigSize is the size of a function's (extended) configuration space.
const ConfigSize = 4096

// NumBARs is the number of BAR registers in a type-0 header.
const NumBARs = 6

// Type-0 header offsets.
const (
	RegVendorID      = 0x00
	RegDeviceID      = 0x02
	RegCommand       = 0x04
	RegStatus        = 0x06
	RegRevision      = 0x08
	RegProgIF        = 0x09
	RegSubclass      = 0x0a
	RegClass         = 0x0b
	RegCacheLine     = 0x0c
	RegLatency       = 0x0d
	RegHeaderType    = 0x0e
	RegBAR0          = 0x10
	RegSubsysVendor  = 0x2c
	RegSubsysID      = 0x2e
	RegROM           = 0x30
	RegCapPtr        = 0x34
	RegInterruptLine = 0x3c
	RegInterruptPin  = 0x3d
)

// Command register bits.
const (
	CmdIO          = 1 << 0
	CmdMemory      = 1 << 1
	CmdBusMaster   = 1 << 2
	CmdParity      = 1 << 6
	CmdSERR        = 1 << 8
	CmdIntxDisable = 1 << 10
)

// Status register bits.
const (
	StatusIntx    = 1 << 3
	StatusCapList = 1 << 4
	statusW1C     = 0xf900 // parity, target/master aborts, SERR, parity error
)

// Capability IDs.
const (
	CapPM    = 0x01
	CapMSI   = 0x05
	CapVndr  = 0x09
	CapPCIe  = 0x10
	CapMSIX  = 0x11
	ExtPASID = 0x1b
)

// BARType is the kind of address space a BAR decodes.
type BARType uint8

const (
	BARMem32 BARType = iota // 32-bit memory BAR
	BARMem64                // 64-bit memory BAR (uses this register and the next)
	BARIO                   // I/O port BAR
)

func (t BARType) String() string {
	switch t {
	case BARMem32:
		return "mem32"
	case BARMem64:
		return "mem64"
	case BARIO:
		return "io"
	}
	return fmt.Sprintf("BARType(%d)", int(t))
}

// BAR describes one base address register of a device.
type BAR struct {
	Type         BARType
	Size         uint64 // power of two: >= 16 for memory, >= 4 for I/O; 0 = unused
	Prefetchable bool   // memory BARs only
	// Dev serves accesses to the BAR (offsets relative to the BAR start). It
	// is registered on the MMIO or PIO bus while the BAR is mapped. nil: the
	// device maps the BAR itself in OnBARChange (passthrough with KVM slots).
	Dev bus.Device
}

// Header holds the identity fields of a type-0 header.
type Header struct {
	VendorID, DeviceID     uint16
	Revision               uint8
	Class                  uint32 // base<<16 | sub<<8 | prog-if
	SubsysVendor, SubsysID uint16
	InterruptPin           uint8 // 0: none (MSI-X only); 1..4: INTA..INTD
}

// BARChange is delivered to a ConfigSpace's OnBARChange hook whenever a BAR
// becomes unmapped (Mapped=false, Addr = where it was) or mapped
// (Mapped=true, Addr = where it now is). A move is an unmap then a map.
// Decode being switched off in the command register unmaps every BAR of that
// kind; switching it on maps them again.
type BARChange struct {
	BAR    int
	Type   BARType
	Addr   uint64
	Size   uint64
	Mapped bool
}

type barState struct {
	BAR
	mapped bool
	addr   uint64 // where it is registered when mapped
}

type writeHook struct {
	off, n uint16
	fn     func(off uint16, data []byte)
}

// ConfigSpace emulates a type-0 configuration space of 4 KiB: the header with
// write masks (read-only fields stay read-only, status bits are
// write-1-to-clear), BAR sizing and mapping on the platform's buses, and the
// standard and extended capability lists.
//
// Set up everything (SetBAR, Add*Capability, OnBARChange) before the device
// is added to a Root. Read-side methods may be called from any goroutine.
type ConfigSpace struct {
	mu    sync.RWMutex // guards data and bars
	wmu   sync.Mutex   // serializes writes and hook delivery
	data  [ConfigSize]byte
	wmask [ConfigSize]byte
	w1c   [ConfigSize]byte
	bars  [NumBARs]barState
	hooks []writeHook
	reads []writeHook // read hooks: registered before use, never changed after

	capEnd  uint16 // next free offset for a standard capability
	lastCap uint16 // offset of the last standard capability (0: none)
	extEnd  uint16 // next free offset for an extended capability
	lastExt uint16 // offset of the last extended capability (0: none)

	pio, mmio *bus.Bus
	name      string

	// OnBARChange, if set, is called (outside the config-space locks, but
	// while config writes are serialized) after each BAR map/unmap. It must
	// not call ConfigWrite.
	OnBARChange func(BARChange)
}

// NewConfigSpace makes a configuration space with header h. BARs are mapped
// on p's PIO and MMIO buses; p may be nil (nothing is mapped).
func NewConfigSpace(p *platform.Platform, name string, h Header) *ConfigSpace {
	c := &ConfigSpace{name: name, capEnd: 0x40, extEnd: 0x100}
	if p != nil {
		c.pio, c.mmio = p.PIO, p.MMIO
	}
	le := binary.LittleEndian
	le.PutUint16(c.data[RegVendorID:], h.VendorID)
	le.PutUint16(c.data[RegDeviceID:], h.DeviceID)
	c.data[RegRevision] = h.Revision
	c.data[RegProgIF] = byte(h.Class)
	c.data[RegSubclass] = byte(h.Class >> 8)
	c.data[RegClass] = byte(h.Class >> 16)
	le.PutUint16(c.data[RegSubsysVendor:], h.SubsysVendor)
	le.PutUint16(c.data[RegSubsysID:], h.SubsysID)
	c.data[RegInterruptPin] = h.InterruptPin
	if h.InterruptPin == 0 {
		c.data[RegInterruptLine] = 0xff // "unknown / no connection"
	}
	le.PutUint16(c.wmask[RegCommand:], CmdIO|CmdMemory|CmdBusMaster|CmdParity|CmdSERR|CmdIntxDisable)
	le.PutUint16(c.w1c[RegStatus:], statusW1C)
	c.wmask[RegCacheLine] = 0xff
	c.wmask[RegLatency] = 0xff
	c.wmask[RegInterruptLine] = 0xff
	return c
}

// Name is the name given at creation (used for bus registrations and logs).
func (c *ConfigSpace) Name() string { return c.name }

// SetBAR declares BAR i. A 64-bit BAR also takes register i+1.
func (c *ConfigSpace) SetBAR(i int, b BAR) error {
	if i < 0 || i >= NumBARs {
		return fmt.Errorf("pci: %s: BAR index %d out of range", c.name, i)
	}
	if b.Size == 0 || b.Size&(b.Size-1) != 0 {
		return fmt.Errorf("pci: %s: BAR%d size %#x is not a power of two", c.name, i, b.Size)
	}
	switch b.Type {
	case BARIO:
		if b.Size < 4 || b.Size > 1<<16 || b.Prefetchable {
			return fmt.Errorf("pci: %s: bad I/O BAR%d (size %#x)", c.name, i, b.Size)
		}
	case BARMem32:
		if b.Size < 16 || b.Size > 1<<31 {
			return fmt.Errorf("pci: %s: bad 32-bit BAR%d size %#x", c.name, i, b.Size)
		}
	case BARMem64:
		if b.Size < 16 || i == NumBARs-1 {
			return fmt.Errorf("pci: %s: bad 64-bit BAR%d (size %#x)", c.name, i, b.Size)
		}
	default:
		return fmt.Errorf("pci: %s: BAR%d: unknown type %d", c.name, i, b.Type)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bars[i].Size != 0 || (i > 0 && c.bars[i-1].Type == BARMem64 && c.bars[i-1].Size != 0) ||
		(b.Type == BARMem64 && c.bars[i+1].Size != 0) {
		return fmt.Errorf("pci: %s: BAR%d already in use", c.name, i)
	}
	c.bars[i] = barState{BAR: b}
	le := binary.LittleEndian
	off := RegBAR0 + 4*i
	switch b.Type {
	case BARIO:
		le.PutUint32(c.data[off:], 1)
		le.PutUint32(c.wmask[off:], ^uint32(b.Size-1)&^3)
	case BARMem32:
		flags := uint32(0)
		if b.Prefetchable {
			flags |= 8
		}
		le.PutUint32(c.data[off:], flags)
		le.PutUint32(c.wmask[off:], ^uint32(b.Size-1)&^0xf)
	case BARMem64:
		flags := uint32(4)
		if b.Prefetchable {
			flags |= 8
		}
		m := ^(b.Size - 1)
		le.PutUint32(c.data[off:], flags)
		le.PutUint32(c.wmask[off:], uint32(m)&^0xf)
		le.PutUint32(c.wmask[off+4:], uint32(m>>32))
	}
	return nil
}

// BARs returns the declared BARs (Size 0 for unused registers and for the
// upper half of a 64-bit BAR).
func (c *ConfigSpace) BARs() [NumBARs]BAR {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out [NumBARs]BAR
	for i, b := range c.bars {
		out[i] = b.BAR
	}
	return out
}

// BARAddress returns the address programmed in BAR i (flags stripped) and
// whether the BAR is currently mapped (address set, decode enabled).
func (c *ConfigSpace) BARAddress(i int) (addr uint64, mapped bool) {
	if i < 0 || i >= NumBARs {
		return 0, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.barAddrLocked(i), c.bars[i].mapped
}

func (c *ConfigSpace) barAddrLocked(i int) uint64 {
	le := binary.LittleEndian
	off := RegBAR0 + 4*i
	v := uint64(le.Uint32(c.data[off:]))
	switch c.bars[i].Type {
	case BARIO:
		return v &^ 3
	case BARMem64:
		return (v &^ 0xf) | uint64(le.Uint32(c.data[off+4:]))<<32
	}
	return v &^ 0xf
}

// ConfigRead reads len(data) bytes at off. Accesses beyond 4 KiB read as
// all-ones.
func (c *ConfigSpace) ConfigRead(off uint32, data []byte) {
	end := uint64(off) + uint64(len(data))
	for _, h := range c.reads {
		if uint64(off) < uint64(h.off+h.n) && end > uint64(h.off) {
			h.fn(uint16(off), nil)
		}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for i := range data {
		o := uint64(off) + uint64(i)
		if o < ConfigSize {
			data[i] = c.data[o]
		} else {
			data[i] = 0xff
		}
	}
}

// ConfigWrite writes data at off through the write masks, then applies BAR
// and decode changes and calls the write hooks of the ranges touched.
func (c *ConfigSpace) ConfigWrite(off uint32, data []byte) {
	if uint64(off)+uint64(len(data)) > ConfigSize || len(data) == 0 {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	for i, v := range data {
		o := int(off) + i
		m := c.wmask[o]
		c.data[o] = c.data[o]&^m | v&m
		c.data[o] &^= v & c.w1c[o]
	}
	var changes []BARChange
	end := int(off) + len(data)
	if int(off) < RegBAR0+4*NumBARs && end > RegCommand {
		changes = c.remapLocked()
	}
	c.mu.Unlock()

	for _, ch := range changes {
		if c.OnBARChange != nil {
			c.OnBARChange(ch)
		}
	}
	for _, h := range c.hooks {
		if int(off) < int(h.off+h.n) && end > int(h.off) {
			h.fn(uint16(off), data)
		}
	}
}

// remapLocked brings the bus registrations in line with the BAR registers
// and the command register's decode bits.
func (c *ConfigSpace) remapLocked() []BARChange {
	var out []BARChange
	cmd := binary.LittleEndian.Uint16(c.data[RegCommand:])
	for i := range c.bars {
		b := &c.bars[i]
		if b.Size == 0 {
			continue
		}
		addr := c.barAddrLocked(i)
		// A 32-bit/I/O BAR holding its size mask is being sized, not placed.
		sizing := b.Type != BARMem64 &&
			binary.LittleEndian.Uint32(c.data[RegBAR0+4*i:])&^0xf == binary.LittleEndian.Uint32(c.wmask[RegBAR0+4*i:])&^0xf
		want := addr != 0 && !sizing && b.fits(addr)
		if b.Type == BARIO {
			want = want && cmd&CmdIO != 0
		} else {
			want = want && cmd&CmdMemory != 0
		}
		if b.mapped && (!want || addr != b.addr) {
			c.unregister(i)
			out = append(out, BARChange{i, b.Type, b.addr, b.Size, false})
		}
		if want && !b.mapped {
			if err := c.register(i, addr); err != nil {
				slog.Warn("pci: BAR not mapped", "dev", c.name, "bar", i, "addr", fmt.Sprintf("%#x", addr), "err", err)
				continue
			}
			out = append(out, BARChange{i, b.Type, addr, b.Size, true})
		}
	}
	return out
}

// fits rejects addresses that run past the end of the BAR's address space
// (what a BAR holds while the guest sizes it with decode on).
func (b *barState) fits(addr uint64) bool {
	switch b.Type {
	case BARIO:
		return addr+b.Size <= 1<<16
	case BARMem32:
		return addr+b.Size <= 1<<32
	}
	return addr+b.Size > addr && addr+b.Size <= 1<<52
}

func (c *ConfigSpace) busFor(t BARType) *bus.Bus {
	if t == BARIO {
		return c.pio
	}
	return c.mmio
}

func (c *ConfigSpace) register(i int, addr uint64) error {
	b := &c.bars[i]
	if bb := c.busFor(b.Type); bb != nil && b.Dev != nil {
		if err := bb.Register(addr, b.Size, fmt.Sprintf("%s BAR%d", c.name, i), b.Dev); err != nil {
			return err
		}
	}
	b.mapped, b.addr = true, addr
	return nil
}

func (c *ConfigSpace) unregister(i int) {
	b := &c.bars[i]
	if bb := c.busFor(b.Type); bb != nil && b.Dev != nil {
		if err := bb.Unregister(b.addr); err != nil {
			slog.Warn("pci: BAR unregister", "dev", c.name, "bar", i, "err", err)
		}
	}
	b.mapped = false
}

// Unmap removes every BAR from the buses (device teardown).
func (c *ConfigSpace) Unmap() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	var out []BARChange
	for i := range c.bars {
		if b := &c.bars[i]; b.mapped {
			c.unregister(i)
			out = append(out, BARChange{i, b.Type, b.addr, b.Size, false})
		}
	}
	c.mu.Unlock()
	for _, ch := range out {
		if c.OnBARChange != nil {
			c.OnBARChange(ch)
		}
	}
}

// OnWrite calls fn after every config write that touches [off, off+n). fn
// receives the written offset and bytes; it runs with writes serialized and
// must not call ConfigWrite.
func (c *ConfigSpace) OnWrite(off, n uint16, fn func(off uint16, data []byte)) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hooks = append(c.hooks, writeHook{off, n, fn})
}

// OnRead calls fn before every config read that touches [off, off+n), so
// the device can refresh those bytes with Set (fn's data argument is nil).
// Register read hooks before the device is added to a Root.
func (c *ConfigSpace) OnRead(off, n uint16, fn func(off uint16, data []byte)) {
	c.reads = append(c.reads, writeHook{off, n, fn})
}

// Set stores bytes at off without masks (device-side update of read-only
// state such as a capability's status).
func (c *ConfigSpace) Set(off uint16, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(off)+len(b) <= ConfigSize {
		copy(c.data[off:], b)
	}
}

// SetWriteMask sets the writable-bits mask of the bytes at off.
func (c *ConfigSpace) SetWriteMask(off uint16, mask []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(off)+len(mask) <= ConfigSize {
		copy(c.wmask[off:], mask)
	}
}

// SetW1C marks bits at off as write-1-to-clear.
func (c *ConfigSpace) SetW1C(off uint16, mask []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(off)+len(mask) <= ConfigSize {
		copy(c.w1c[off:], mask)
	}
}

// U8, U16 and U32 read the current value at off.
func (c *ConfigSpace) U8(off uint16) uint8 {
	var b [1]byte
	c.ConfigRead(uint32(off), b[:])
	return b[0]
}

func (c *ConfigSpace) U16(off uint16) uint16 {
	var b [2]byte
	c.ConfigRead(uint32(off), b[:])
	return binary.LittleEndian.Uint16(b[:])
}

func (c *ConfigSpace) U32(off uint16) uint32 {
	var b [4]byte
	c.ConfigRead(uint32(off), b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// SetU16 and SetU32 store a value without masks.
func (c *ConfigSpace) SetU16(off uint16, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	c.Set(off, b[:])
}

func (c *ConfigSpace) SetU32(off uint16, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	c.Set(off, b[:])
}

// Command returns the command register.
func (c *ConfigSpace) Command() uint16 { return c.U16(RegCommand) }

// BusMaster reports whether the guest enabled DMA for the device.
func (c *ConfigSpace) BusMaster() bool { return c.Command()&CmdBusMaster != 0 }
