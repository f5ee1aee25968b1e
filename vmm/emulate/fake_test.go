package emulate

import (
	"encoding/binary"
	"errors"
	"testing"

	"godvm/devices/bus"
	"godvm/guestmem"
	"godvm/kvm"
)

// fakeCPU is a vCPU with recorded injections and MSRs. Its page tables
// are real ones in guest RAM, written by pageTables from pages (virtual
// page -> physical page and PTE flags; nil means an identity map).
type fakeCPU struct {
	regs     kvm.Regs
	sregs    kvm.Sregs
	pages    map[uint64]uint64
	injected []injection
	msrs     map[uint32]uint64
	setRegs  int
	setSregs int
	failRegs bool
	// xsave is the x87/SSE state (nil: the init state, made on first
	// use); setXSave counts KVM_SET_XSAVE calls.
	xsave     *kvm.XSave
	setXSave  int
	failXSave bool
}

// injection is one injected exception, with CR2 as it was when it was
// injected.
type injection struct {
	vector  uint8
	hasCode bool
	code    uint32
	cr2     uint64
}

func (f *fakeCPU) Regs() (kvm.Regs, error) {
	if f.failRegs {
		return kvm.Regs{}, errors.New("KVM_GET_REGS: bad file descriptor")
	}
	return f.regs, nil
}
func (f *fakeCPU) SetRegs(r kvm.Regs) error   { f.regs = r; f.setRegs++; return nil }
func (f *fakeCPU) Sregs() (kvm.Sregs, error)  { return f.sregs, nil }
func (f *fakeCPU) SetSregs(s kvm.Sregs) error { f.sregs = s; f.setSregs++; return nil }
func (f *fakeCPU) InjectException(v uint8, code *uint32) error {
	in := injection{vector: v, cr2: f.sregs.CR2}
	if code != nil {
		in.hasCode, in.code = true, *code
	}
	f.injected = append(f.injected, in)
	return nil
}

// initXSave is the x87/SSE init state as KVM_GET_XSAVE returns it, with
// this project's kvm_pvm host's MXCSR_MASK (0x2ffff: with AMD's MM bit).
func initXSave() *kvm.XSave {
	x := new(kvm.XSave)
	b := x.Bytes()
	binary.LittleEndian.PutUint16(b[kvm.FXFCW:], 0x37f)
	binary.LittleEndian.PutUint32(b[kvm.FXMXCSR:], 0x1f80)
	binary.LittleEndian.PutUint32(b[kvm.FXMXCSRMask:], 0x2ffff)
	return x
}

func (f *fakeCPU) XSave() (*kvm.XSave, error) {
	if f.failXSave {
		return nil, errors.New("KVM_GET_XSAVE: bad file descriptor")
	}
	if f.xsave == nil {
		f.xsave = initXSave()
	}
	x := *f.xsave
	return &x, nil
}

func (f *fakeCPU) SetXSave(x *kvm.XSave) error {
	c := *x
	f.xsave = &c
	f.setXSave++
	return nil
}

func (f *fakeCPU) MSRs(e []kvm.MSREntry) error {
	for i := range e {
		v, ok := f.msrs[e[i].Index]
		if !ok {
			return errors.New("KVM_GET_MSRS: read 0 of 1 MSRs")
		}
		e[i].Data = v
	}
	return nil
}

// Flags for fakeCPU.pages values (a 4 KiB PTE's flags; a value without
// any means present and writable).
const (
	pgP  = pteP
	pgRW = pteRW
	pgUS = pteUS
	pgXD = pteXD
)

// pageTables writes 4-level page tables for c into ram at [base,
// base+size) (5-level ones with CR4.LA57) and points CR3 at them: c.pages as 4 KiB pages (the value is
// the physical page, its low 12 bits and bit 63 the PTE's flags; with none,
// present and writable), or without pages an identity map of the first 512
// GiB by 1 GiB pages, supervisor-only unless c runs at CPL3. The levels
// above a PTE allow everything, so the PTE decides. Nothing is written with
// paging off.
func pageTables(ram []byte, base, size uint64, c *fakeCPU) {
	if c.sregs.CR0&cr0PG == 0 {
		return
	}
	le := binary.LittleEndian
	next := base
	alloc := func() uint64 {
		p := next
		if next += 0x1000; next > base+size {
			panic("pageTables: out of room")
		}
		clear(ram[p : p+0x1000])
		return p
	}
	root := alloc()
	c.sregs.CR3 = root
	shifts := []uint{39, 30, 21}
	if c.sregs.CR4&cr4LA57 != 0 { // 5-level paging: a PML5 on top
		pml4 := alloc()
		le.PutUint64(ram[root:], pml4|pteP|pteRW|pteUS)
		shifts = []uint{48, 39, 30, 21}
		if c.pages == nil {
			root = pml4
		}
	}
	if c.pages == nil {
		pdpt := alloc()
		le.PutUint64(ram[root:], pdpt|pteP|pteRW|pteUS)
		flags := uint64(pteP | pteRW | ptePS)
		if c.sregs.CS.Selector&3 == 3 {
			flags |= pteUS
		}
		for i := uint64(0); i < 512; i++ {
			le.PutUint64(ram[pdpt+8*i:], i<<30|flags)
		}
		return
	}
	sub := func(table, idx uint64) uint64 {
		e := le.Uint64(ram[table+8*idx:])
		if e&pteP == 0 {
			e = alloc() | pteP | pteRW | pteUS
			le.PutUint64(ram[table+8*idx:], e)
		}
		return e & pteAddr
	}
	for va, pa := range c.pages {
		t := root
		for _, shift := range shifts {
			t = sub(t, va>>shift&511)
		}
		flags := pa & (0xfff | pteXD)
		if flags == 0 {
			flags = pteP | pteRW
		}
		le.PutUint64(ram[t+8*(va>>12&511):], pa&pteAddr|flags)
	}
}

// longMode returns sregs for 64-bit kernel code (CPL0).
func longMode() kvm.Sregs {
	var s kvm.Sregs
	s.CR0 = 0x80050033
	s.CR4 = 0x3606f0
	s.EFER = 0xd01 // SCE, LME, LMA, NX
	s.CS = kvm.Segment{Selector: 0x10, L: 1, Present: 1, S: 1, Type: 11}
	return s
}

// prot32 returns sregs for 32-bit protected mode with a DS/ES base.
func prot32(dsBase, esBase uint64) kvm.Sregs {
	var s kvm.Sregs
	s.CR0 = 0x11
	s.CS = kvm.Segment{Selector: 0x08, DB: 1, Present: 1, S: 1, Type: 11, Limit: 0xffffffff}
	s.DS = kvm.Segment{Selector: 0x10, Base: dsBase, DB: 1, Present: 1, S: 1, Type: 3, Limit: 0xffffffff}
	s.ES = kvm.Segment{Selector: 0x10, Base: esBase, DB: 1, Present: 1, S: 1, Type: 3, Limit: 0xffffffff}
	s.SS = s.DS
	return s
}

// portal is a Wide64 device that records what it got.
type portal struct {
	writes []wideWrite
	accept bool
	plain  [][]byte
}

type wideWrite struct {
	off  uint64
	data [64]byte
	kind bus.WideKind
}

func (p *portal) Read(off uint64, data []byte) {}
func (p *portal) Write(off uint64, data []byte) {
	p.plain = append(p.plain, append([]byte(nil), data...))
}
func (p *portal) Write64B(off uint64, data *[64]byte, kind bus.WideKind) bool {
	p.writes = append(p.writes, wideWrite{off, *data, kind})
	return p.accept
}

const (
	ramSize    = 0x20000 // guest RAM: [0, 128 KiB)
	tablesBase = 0x12000 // the rig's page tables: [tablesBase, +tablesSize)
	tablesSize = 0xc000
	portalBase = 0xd000_0000
	plainBase  = 0xd001_0000
)

// rig is one emulator over a small guest: RAM, a Wide64 portal at
// portalBase and a plain MMIO device at plainBase.
type rig struct {
	ram    []byte
	mem    *guestmem.Memory
	mmio   *bus.Bus
	portal *portal
	plain  *portal
	emu    *Emulator
}

type plainDev struct{ p *portal }

func (d plainDev) Read(off uint64, data []byte)  {}
func (d plainDev) Write(off uint64, data []byte) { d.p.Write(off, data) }

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{ram: make([]byte, ramSize), mmio: &bus.Bus{}, portal: &portal{accept: true}, plain: &portal{}}
	var err error
	r.mem, err = guestmem.FromBytes(guestmem.NewRegion(0, r.ram, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.mmio.Register(portalBase, 0x1000, "portal", r.portal); err != nil {
		t.Fatal(err)
	}
	if err := r.mmio.Register(plainBase, 0x1000, "plain", plainDev{r.plain}); err != nil {
		t.Fatal(err)
	}
	r.emu = New(r.mem, r.mmio)
	return r
}

// tables writes c's page tables into the rig's RAM.
func (r *rig) tables(c *fakeCPU) { pageTables(r.ram, tablesBase, tablesSize, c) }
