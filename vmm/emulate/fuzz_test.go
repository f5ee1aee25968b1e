package emulate

import (
	"testing"

	"godvm/devices/bus"
	"godvm/guestmem"
	"godvm/kvm"
)

// FuzzEmulate feeds arbitrary instruction bytes and register values (and
// a CPU mode and paging choice) to the emulator: it must never panic, and
// a failed emulation must leave RIP alone.
func FuzzEmulate(f *testing.F) {
	seeds := [][]byte{
		{0xcc}, {0x0f, 0x01, 0xca}, {0x0f, 0x01, 0xcb}, {0x9b},
		{0xf3, 0x48, 0x0f, 0xb8, 0xc1}, {0xf3, 0x4c, 0x0f, 0xb8, 0x4c, 0x9a, 0x10},
		{0xf3, 0x48, 0x0f, 0xb8, 0x05, 0x00, 0x01, 0x00, 0x00},
		{0x66, 0x0f, 0x38, 0xf8, 0x02}, {0x67, 0x66, 0x0f, 0x38, 0xf8, 0x44, 0x24, 0x08},
		{0xf2, 0x0f, 0x38, 0xf8, 0x02}, {0xf3, 0x0f, 0x38, 0xf8, 0x02},
		{0x66, 0x45, 0x0f, 0x38, 0xf8, 0x8c, 0xca, 0x00, 0x01, 0x00, 0x00},
		{0x48, 0x0f, 0xae, 0x2f}, {0xf0, 0x48, 0x0f, 0xc7, 0x0f}, {0x66, 0x0f, 0x38, 0xf8, 0xc2},
		{0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x66, 0x0f, 0x38, 0xf8, 0x02},
	}
	for i, s := range seeds {
		f.Add(s, uint64(portalBase), uint64(0x3000), uint64(0x3000), uint8(i%4), false)
	}
	f.Fuzz(func(t *testing.T, code []byte, rax, rdx, rsi uint64, mode uint8, paged bool) {
		mem := make([]byte, 0x10000)
		m, err := guestmem.FromBytes(guestmem.NewRegion(0, mem, -1, 0))
		if err != nil {
			t.Fatal(err)
		}
		mmio := &bus.Bus{}
		p := &portal{accept: rax&1 == 0}
		if err := mmio.Register(portalBase, 0x1000, "portal", p); err != nil {
			t.Fatal(err)
		}
		copy(mem[0xfff0:], code) // the instruction may run off the end of RAM
		c := &fakeCPU{sregs: longMode(), msrs: map[uint32]uint64{0xd93: rsi}}
		switch mode % 4 {
		case 1:
			c.sregs = prot32(rsi&0xffff, rdx&0xffff)
		case 2:
			c.sregs = prot32(0, 0)
			c.sregs.CR0 = 0
			c.sregs.CS.Base = 0xf000
		case 3:
			c.sregs.CS.Selector |= 3
		}
		if paged {
			c.pages = map[uint64]uint64{0xf000: 0xf000, portalBase: portalBase, rsi &^ 0xfff: rdx &^ 0xfff}
		}
		c.regs = fakeRegs(rax, rdx, rsi)
		c.regs.RIP = 0xfff0
		if mode%4 == 2 {
			c.regs.RIP = 0xff0
		}
		e := New(m, mmio)
		before := c.regs.RIP
		if _, err := e.Emulate(c, code); err != nil {
			if c.regs.RIP != before {
				t.Errorf("RIP moved from %#x to %#x on error %v", before, c.regs.RIP, err)
			}
			_ = err.Error()
		}
	})
}

// fakeRegs spreads three fuzzed values over all general registers.
func fakeRegs(rax, rdx, rsi uint64) kvm.Regs {
	return kvm.Regs{
		RAX: rax, RDX: rdx, RSI: rsi, RCX: rax >> 3, RBX: rdx >> 5, RDI: rsi ^ rax,
		RSP: rdx + 8, RBP: rsi - 8, R8: rax ^ rdx, R9: rdx ^ rsi, R10: rax + rsi,
		R11: 1, R12: 2, R13: 0x3000, R14: portalBase, R15: ^uint64(0), RFLAGS: 2 | rax&0xfd5,
	}
}
