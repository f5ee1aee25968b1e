package pci

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"

	"godvm/addr"
	"godvm/devices/platform"
)

// Device is a PCI endpoint function on bus 0. ConfigRead/ConfigWrite cover
// the full 4 KiB extended configuration space (offsets 0..4095, widths 1, 2
// and 4); BARs describes the base address registers so the root can place
// them. Embedding a *ConfigSpace provides all three.
type Device interface {
	ConfigRead(off uint32, data []byte)
	ConfigWrite(off uint32, data []byte)
	BARs() [NumBARs]BAR
}

// RootConfig is what the VMM tells the root about the machine (the numbers
// come from vmm/layout).
type RootConfig struct {
	ECAM  addr.Range // ECAM (MMCONFIG); Size is a multiple of 1 MiB (one bus each)
	Mem32 addr.Range // 32-bit BARs
	Mem64 addr.Range // 64-bit BARs (empty: they go into Mem32)
	IO    addr.Range // I/O BARs (empty: devices with I/O BARs are refused)
	// ConfigPort is the first of the eight ports of configuration
	// mechanism #1: the address latch at ConfigPort+ConfigAddrOff, the reset
	// control register at +ResetOff, data at +ConfigDataOff..+7 (godvm:
	// layout.PortPCIConfig). 0: no port mechanism, ECAM only.
	ConfigPort uint64
	// Reset is called when the guest writes the reset control register
	// with the reset bit (ResetValue from the FADT, or any value with bit 2
	// set). nil: such writes are ignored.
	Reset func()
}

// Offsets in the configuration mechanism #1 port block (RootConfig.ConfigPort),
// and the value of a hard reset through its reset control register.
const (
	ConfigAddrOff = 0
	ResetOff      = 1
	ConfigDataOff = 4
	ConfigPorts   = 8
	ResetValue    = 0x6 // full reset, system reset (bits 2 and 1)
	MaxSlots      = 32
)

// Host bridge identity (Red Hat's generic PCIe host bridge, which Linux
// binds no driver to and applies no quirks for).
const (
	HostBridgeVendor = 0x1b36
	HostBridgeDevice = 0x0008
)

type slot struct {
	dev  Device
	name string
}

// Root is the PCI root complex: a host bridge at 00:00.0 and up to 31
// endpoints on bus 0, reached through the configuration ports and ECAM.
type Root struct {
	mu    sync.Mutex
	cfg   RootConfig
	slots [MaxSlots]*slot
	addr  uint32 // the address latch (ConfigAddrOff)
	next  map[string]uint64

	bridge *ConfigSpace
}

// NewRoot creates the root and registers its config ports on p.PIO and its
// ECAM on p.MMIO.
func NewRoot(p *platform.Platform, cfg RootConfig) (*Root, error) {
	if cfg.ECAM.Size == 0 || cfg.ECAM.Size%(1<<20) != 0 || cfg.ECAM.Size > 256<<20 || cfg.ECAM.Base%(1<<20) != 0 {
		return nil, fmt.Errorf("pci: bad ECAM window %#x+%#x", cfg.ECAM.Base, cfg.ECAM.Size)
	}
	if cfg.Mem32.Size == 0 || cfg.Mem32.End() > 1<<32 {
		return nil, fmt.Errorf("pci: bad 32-bit MMIO window %#x+%#x", cfg.Mem32.Base, cfg.Mem32.Size)
	}
	if cfg.IO.End() > 1<<16 {
		return nil, fmt.Errorf("pci: bad I/O window %#x+%#x", cfg.IO.Base, cfg.IO.Size)
	}
	r := &Root{cfg: cfg, next: map[string]uint64{
		"mem32": cfg.Mem32.Base, "mem64": cfg.Mem64.Base, "io": cfg.IO.Base,
	}}
	r.bridge = NewConfigSpace(nil, "00:00.0 host bridge", Header{
		VendorID: HostBridgeVendor, DeviceID: HostBridgeDevice,
		Class: 0x060000, SubsysVendor: HostBridgeVendor, SubsysID: 0x1100,
	})
	r.slots[0] = &slot{dev: r.bridge, name: "host bridge"}
	if p != nil {
		if cfg.ConfigPort != 0 {
			if err := p.PIO.Register(cfg.ConfigPort, ConfigPorts, "pci config", (*pioConfig)(r)); err != nil {
				return nil, err
			}
		}
		if err := p.MMIO.Register(cfg.ECAM.Base, cfg.ECAM.Size, "pci ecam", (*ecam)(r)); err != nil {
			if cfg.ConfigPort != 0 {
				p.PIO.Unregister(cfg.ConfigPort)
			}
			return nil, err
		}
	}
	return r, nil
}

// Config returns the root's configuration (for the ACPI tables).
func (r *Root) Config() RootConfig { return r.cfg }

// Add places dev in the lowest free slot, assigns its BARs from the
// windows and enables decoding, as firmware would. It returns the slot
// (device number; function 0, bus 0).
func (r *Root) Add(name string, dev Device) (int, error) {
	r.mu.Lock()
	n := -1
	for i := 1; i < MaxSlots; i++ {
		if r.slots[i] == nil {
			n = i
			break
		}
	}
	r.mu.Unlock()
	if n < 0 {
		return 0, fmt.Errorf("pci: %s: bus 0 is full", name)
	}
	return n, r.AddAt(n, name, dev)
}

// AddAt places dev in slot n (1..31).
func (r *Root) AddAt(n int, name string, dev Device) error {
	if n < 1 || n >= MaxSlots {
		return fmt.Errorf("pci: %s: slot %d out of range 1..31", name, n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.slots[n] != nil {
		return fmt.Errorf("pci: %s: slot %d is taken by %s", name, n, r.slots[n].name)
	}
	bars := dev.BARs()
	type asg struct {
		i    int
		addr uint64
	}
	// Place the largest BARs first so alignment wastes little space.
	order := make([]int, 0, NumBARs)
	for i, b := range bars {
		if b.Size != 0 {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return bars[order[a]].Size > bars[order[b]].Size })
	saved := map[string]uint64{}
	for k, v := range r.next {
		saved[k] = v
	}
	var out []asg
	var cmd uint16
	for _, i := range order {
		b := bars[i]
		addr, err := r.alloc(b)
		if err != nil {
			r.next = saved
			return fmt.Errorf("pci: %s: BAR%d: %w", name, i, err)
		}
		out = append(out, asg{i, addr})
		if b.Type == BARIO {
			cmd |= CmdIO
		} else {
			cmd |= CmdMemory
		}
	}
	var w [4]byte
	for _, a := range out {
		binary.LittleEndian.PutUint32(w[:], uint32(a.addr))
		dev.ConfigWrite(uint32(RegBAR0+4*a.i), w[:])
		if bars[a.i].Type == BARMem64 {
			binary.LittleEndian.PutUint32(w[:], uint32(a.addr>>32))
			dev.ConfigWrite(uint32(RegBAR0+4*a.i+4), w[:])
		}
	}
	if cmd != 0 {
		var c [2]byte
		dev.ConfigRead(RegCommand, c[:])
		binary.LittleEndian.PutUint16(c[:], binary.LittleEndian.Uint16(c[:])|cmd)
		dev.ConfigWrite(RegCommand, c[:])
	}
	r.slots[n] = &slot{dev: dev, name: name}
	return nil
}

func (r *Root) alloc(b BAR) (uint64, error) {
	var key string
	var w addr.Range
	align := b.Size
	switch b.Type {
	case BARIO:
		key, w = "io", r.cfg.IO
	case BARMem64:
		key, w = "mem64", r.cfg.Mem64
		if w.Size == 0 {
			key, w = "mem32", r.cfg.Mem32
		}
	default:
		key, w = "mem32", r.cfg.Mem32
	}
	if b.Type != BARIO && align < 4096 {
		align = 4096 // keep every MMIO BAR on its own page(s)
	}
	if w.Size == 0 {
		return 0, fmt.Errorf("no %s window", key)
	}
	addr := (r.next[key] + align - 1) &^ (align - 1)
	if addr < r.next[key] || addr+b.Size > w.End() || addr+b.Size < addr {
		return 0, fmt.Errorf("%s window %#x+%#x exhausted (need %#x)", key, w.Base, w.Size, b.Size)
	}
	r.next[key] = addr + b.Size
	return addr, nil
}

// Device returns the device in slot n, or nil.
func (r *Root) Device(n int) Device {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n < 0 || n >= MaxSlots || r.slots[n] == nil {
		return nil
	}
	return r.slots[n].dev
}

// Slots lists the occupied slots with the names given to Add.
func (r *Root) Slots() map[int]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[int]string{}
	for i, s := range r.slots {
		if s != nil {
			out[i] = s.name
		}
	}
	return out
}

// find resolves bus/device/function to a device (nil: nothing there).
func (r *Root) find(busNo, dev, fn uint32) Device {
	if busNo != 0 || fn != 0 || dev >= MaxSlots {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.slots[dev]; s != nil {
		return s.dev
	}
	return nil
}

// ConfigRead reads configuration space of bus:dev.fn at off; absent
// functions read as all-ones.
func (r *Root) ConfigRead(busNo, dev, fn, off uint32, data []byte) {
	d := r.find(busNo, dev, fn)
	if d == nil || off >= ConfigSize || uint64(off)+uint64(len(data)) > ConfigSize {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	d.ConfigRead(off, data)
}

// ConfigWrite writes configuration space; writes to absent functions are
// dropped.
func (r *Root) ConfigWrite(busNo, dev, fn, off uint32, data []byte) {
	d := r.find(busNo, dev, fn)
	if d == nil || off >= ConfigSize || uint64(off)+uint64(len(data)) > ConfigSize {
		return
	}
	d.ConfigWrite(off, data)
}

// pioConfig serves the eight ports at RootConfig.ConfigPort (0xCF8-0xCFF on
// a PC): the 32-bit address latch, the reset control register (byte
// accesses) and four data ports.
type pioConfig Root

func (p *pioConfig) Read(off uint64, data []byte) {
	r := (*Root)(p)
	switch {
	case off == ConfigAddrOff && len(data) == 4:
		r.mu.Lock()
		binary.LittleEndian.PutUint32(data, r.addr)
		r.mu.Unlock()
	case off >= ConfigDataOff && off+uint64(len(data)) <= ConfigPorts:
		r.mu.Lock()
		a := r.addr
		r.mu.Unlock()
		if a&(1<<31) == 0 {
			fill(data, 0xff)
			return
		}
		r.ConfigRead(a>>16&0xff, a>>11&0x1f, a>>8&7, a&0xfc+uint32(off-ConfigDataOff), data)
	case off == ResetOff && len(data) == 1:
		data[0] = 0
	default:
		fill(data, 0xff)
	}
}

func (p *pioConfig) Write(off uint64, data []byte) {
	r := (*Root)(p)
	switch {
	case off == ConfigAddrOff && len(data) == 4:
		r.mu.Lock()
		r.addr = binary.LittleEndian.Uint32(data) &^ 0x7f000003
		r.mu.Unlock()
	case off >= ConfigDataOff && off+uint64(len(data)) <= ConfigPorts:
		r.mu.Lock()
		a := r.addr
		r.mu.Unlock()
		if a&(1<<31) == 0 {
			return
		}
		r.ConfigWrite(a>>16&0xff, a>>11&0x1f, a>>8&7, a&0xfc+uint32(off-ConfigDataOff), data)
	case off == ResetOff && len(data) == 1:
		if data[0]&4 != 0 && r.cfg.Reset != nil {
			r.cfg.Reset()
		}
	}
}

// ecam serves the memory-mapped configuration space: bus<<20 | dev<<15 |
// fn<<12 | register.
type ecam Root

func split(off uint64) (busNo, dev, fn, reg uint32) {
	return uint32(off >> 20 & 0xff), uint32(off >> 15 & 0x1f), uint32(off >> 12 & 7), uint32(off & 0xfff)
}

func (e *ecam) Read(off uint64, data []byte) {
	r := (*Root)(e)
	b, d, f, reg := split(off)
	if uint64(reg)+uint64(len(data)) > ConfigSize {
		fill(data, 0xff)
		return
	}
	r.ConfigRead(b, d, f, reg, data)
}

func (e *ecam) Write(off uint64, data []byte) {
	r := (*Root)(e)
	b, d, f, reg := split(off)
	if uint64(reg)+uint64(len(data)) > ConfigSize {
		return
	}
	r.ConfigWrite(b, d, f, reg, data)
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}
