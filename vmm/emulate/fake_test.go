package emulate

import (
	"errors"
	"testing"

	"godvm/devices/bus"
	"godvm/guestmem"
	"godvm/kvm"
)

// fakeCPU is a vCPU with a page map (virtual page -> physical page; nil
// means paging off, identity), recorded injections and MSRs.
type fakeCPU struct {
	regs     kvm.Regs
	sregs    kvm.Sregs
	pages    map[uint64]uint64
	injected []injection
	msrs     map[uint32]uint64
	setRegs  int
	failRegs bool
}

type injection struct {
	vector  uint8
	hasCode bool
	code    uint32
}

func (f *fakeCPU) Regs() (kvm.Regs, error) {
	if f.failRegs {
		return kvm.Regs{}, errors.New("KVM_GET_REGS: bad file descriptor")
	}
	return f.regs, nil
}
func (f *fakeCPU) SetRegs(r kvm.Regs) error  { f.regs = r; f.setRegs++; return nil }
func (f *fakeCPU) Sregs() (kvm.Sregs, error) { return f.sregs, nil }
func (f *fakeCPU) Translate(gva uint64) (kvm.Translation, error) {
	t := kvm.Translation{LinearAddress: gva}
	if f.pages == nil {
		t.PhysicalAddress, t.Valid = gva, 1
		return t, nil
	}
	if p, ok := f.pages[gva&^0xfff]; ok {
		t.PhysicalAddress, t.Valid = p|gva&0xfff, 1
	}
	return t, nil
}
func (f *fakeCPU) InjectException(v uint8, code *uint32) error {
	in := injection{vector: v}
	if code != nil {
		in.hasCode, in.code = true, *code
	}
	f.injected = append(f.injected, in)
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
