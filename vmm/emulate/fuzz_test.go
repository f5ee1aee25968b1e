package emulate

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"testing"

	"godvm/devices/bus"
	"godvm/devices/pci"
	"godvm/guestmem"
	"godvm/kvm"
)

// FuzzEmulate feeds arbitrary instruction bytes and register values (and
// a CPU mode, paging choice and page permissions) to the emulator: it must
// never panic, a failed emulation must leave RIP alone, and a guest fault
// must be injected as the CPU raises it (#UD without an error code, #GP
// and #SS with 0, #PF with an error code whose U/S bit is the CPL's and CR2
// loaded) with nothing else changed: no register written, no store made.
//
// mode's low two bits pick 64-bit CPL0, 32-bit protected, real mode or
// 64-bit CPL3; its upper bits, with paging on, make the source page not
// present (bit 2), the destination page read-only (bit 3), every page
// user-accessible (bit 4), the code page execute-disable (bit 5), and clear
// EFER.NXE (bit 6: XD becomes a reserved bit) and CR0.WP (bit 7).
//
// For the x87 and SSE instructions, rdx and rsi also make the x87/SSE
// state (FCW, FSW with TOP and pending exceptions, tags, MXCSR with masks
// and AMD's MM bit, XMM and ST registers) and rax's top four bits set
// CR0.TS and CR0.EM and clear CR4.OSFXSR and CR4.OSXMMEXCPT. A fault must
// leave that state alone too, except MXCSR's flags before #XM (or #UD
// without OSXMMEXCPT), and guest RAM outside the page tables unchanged.
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
		{0xf0, 0x66, 0x0f, 0x38, 0xf8, 0x02}, {0x66, 0x0f, 0x38, 0xf8, 0x45, 0x00},
		// x87 and SSE (fpu.go, x87.go, sse.go).
		{0x0f, 0xae, 0x16}, {0x0f, 0xae, 0x1e}, {0xd9, 0x2e}, {0xd9, 0x3e}, {0xdf, 0xe0}, {0xdd, 0x3e},
		{0xdb, 0xe3}, {0xdb, 0xe2}, {0xd9, 0xe8}, {0xd9, 0xee}, {0xdd, 0x1e}, {0xd9, 0x1e}, {0xdb, 0x3e},
		{0xdd, 0x06}, {0xdb, 0x06}, {0xdd, 0xd9}, {0xd9, 0xc9}, {0xdd, 0xc1}, {0xd9, 0xf7},
		{0xdd, 0x36}, {0x66, 0xdd, 0x26}, {0xd9, 0x36}, {0xd9, 0x26}, {0x0f, 0xae, 0x06}, {0x48, 0x0f, 0xae, 0x0e},
		{0x0f, 0x77}, {0x66, 0x0f, 0xef, 0xc1}, {0x0f, 0x57, 0xc1}, {0x66, 0x0f, 0x6e, 0xc0}, {0x66, 0x48, 0x0f, 0x7e, 0xc0},
		{0x66, 0x0f, 0x74, 0xc1}, {0x66, 0x0f, 0xd7, 0xc0}, {0xf2, 0x0f, 0x10, 0x06}, {0xf2, 0x48, 0x0f, 0x2a, 0xc0},
		{0xf2, 0x0f, 0x51, 0x06}, {0xf3, 0x0f, 0x51, 0xc1}, {0x66, 0x0f, 0x38, 0x00, 0xc1}, {0x66, 0x0f, 0x6f, 0x06},
		{0xf3, 0x0f, 0x7f, 0x06}, {0x66, 0x0f, 0x73, 0xd8, 0x03}, {0x66, 0x0f, 0xc4, 0x06, 0x05}, {0x66, 0x0f, 0xc5, 0xc1, 0x02},
		{0x66, 0x0f, 0xe7, 0x06}, {0xf0, 0x66, 0x0f, 0xef, 0xc1}, {0x0f, 0xef, 0xc1}, {0x66, 0x45, 0x0f, 0xfe, 0x4c, 0x24, 0x10},
		{0x0f, 0x12, 0x06}, {0x66, 0x0f, 0xd6, 0x06}, {0x66, 0x0f, 0x70, 0xc1, 0x1b},
	}
	for i, s := range seeds {
		f.Add(s, uint64(portalBase), uint64(0x3000), uint64(0x3000), uint8(i%4), false)
	}
	// Faults: a source not present, a read-only destination, CPL3 on
	// supervisor pages, an execute-disable code page, XD without NXE, a
	// non-canonical source.
	f.Add(seeds[7], uint64(portalBase), uint64(0x3000), uint64(0x3000), uint8(0<<2|1<<2), true)
	f.Add(seeds[7], uint64(portalBase), uint64(0x3000), uint64(0x3000), uint8(2<<2), true)
	f.Add(seeds[10], uint64(portalBase), uint64(0x3000), uint64(0x3000), uint8(3), true)
	f.Add(seeds[3], uint64(portalBase), uint64(0x3000), uint64(0x3000), uint8(8<<2), true)
	f.Add(seeds[4], uint64(portalBase), uint64(0x3000), uint64(0x3000), uint8(24<<2), true)
	f.Add(seeds[7], uint64(portalBase), uint64(0x8000_0000_0000_3000), uint64(0x3000), uint8(0), false)
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
		perm := mode >> 2
		if paged {
			us := uint64(0)
			if perm&4 != 0 {
				us = pgUS
			}
			codePTE := 0xf000 | pgP | pgRW | us
			if perm&8 != 0 {
				codePTE |= pgXD
			}
			dstPTE := portalBase | pgP | pgRW | us
			if perm&2 != 0 {
				dstPTE &^= pgRW
			}
			c.pages = map[uint64]uint64{0xf000: codePTE, portalBase: dstPTE}
			if perm&1 == 0 && rsi&^0xfff != 0xf000 && rsi&^0xfff != portalBase {
				c.pages[rsi&^0xfff] = rdx&^0xfff&0xffff | pgP | pgRW | us
			}
		}
		if perm&16 != 0 {
			c.sregs.EFER &^= eferNXE
		}
		if perm&32 != 0 {
			c.sregs.CR0 &^= cr0WP
		}
		if rax>>63 != 0 {
			c.sregs.CR0 |= cr0TS
		}
		if rax>>62&1 != 0 {
			c.sregs.CR0 |= cr0EM
		}
		if rax>>61&1 != 0 {
			c.sregs.CR4 &^= cr4OSFXSR
		}
		if rax>>60&1 != 0 {
			c.sregs.CR4 &^= cr4OSXMMEXCP
		}
		c.xsave = fuzzFPU(rdx, rsi)
		fpuBefore := *c.xsave
		pageTables(mem, 0x4000, 0xa000, c)
		ramBefore := append([]byte(nil), mem...)
		c.regs = fakeRegs(rax, rdx, rsi)
		c.regs.RIP = 0xfff0
		if mode%4 == 2 {
			c.regs.RIP = 0xff0
		}
		e := New(m, mmio)
		before := c.regs.RIP
		k, err := e.Emulate(c, code)
		if err != nil {
			if c.regs.RIP != before {
				t.Errorf("RIP moved from %#x to %#x on error %v", before, c.regs.RIP, err)
			}
			_ = err.Error()
			return
		}
		if k != KindFault {
			if len(c.injected) != 0 && k != KindINT3 {
				t.Errorf("%v injected %+v", k, c.injected)
			}
			return
		}
		if c.setRegs != 0 || len(p.writes)+len(p.plain) != 0 {
			t.Errorf("a fault changed registers (%d) or stored (%d)", c.setRegs, len(p.writes)+len(p.plain))
		}
		if !bytes.Equal(mem[:0x4000], ramBefore[:0x4000]) || !bytes.Equal(mem[0xe000:], ramBefore[0xe000:]) {
			t.Errorf("a fault changed guest RAM")
		}
		if len(c.injected) != 1 {
			t.Fatalf("fault with %d injections", len(c.injected))
		}
		in := c.injected[0]
		// Only an unmasked SIMD exception writes the x87/SSE state
		// (its MXCSR flags) before faulting.
		after := c.xsave.Bytes()
		flagsOnly := bytes.Equal(after[:24], fpuBefore.Bytes()[:24]) && bytes.Equal(after[28:512], fpuBefore.Bytes()[28:512]) &&
			binary.LittleEndian.Uint32(after[24:])&^excAll == binary.LittleEndian.Uint32(fpuBefore.Bytes()[24:])&^excAll
		simd := in.vector == vectorXM || in.vector == vectorUD && c.sregs.CR4&cr4OSXMMEXCP == 0
		if c.setXSave != 0 && !(simd && flagsOnly && c.setXSave == 1) {
			t.Errorf("%+v changed the x87/SSE state (%d KVM_SET_XSAVE)", in, c.setXSave)
		}
		switch in.vector {
		case vectorUD, vectorNM, vectorMF, vectorXM:
			if in.hasCode || c.setSregs != 0 {
				t.Errorf("vector %d %+v", in.vector, in)
			}
		case vectorGP, vectorSS:
			if !in.hasCode || in.code != 0 || c.setSregs != 0 {
				t.Errorf("#GP/#SS %+v", in)
			}
		case vectorPF:
			cpl3 := c.sregs.CS.Selector&3 == 3
			if !in.hasCode || in.code&^0x1f != 0 || c.setSregs != 1 || c.sregs.CR2 != in.cr2 ||
				in.code&pfUser != 0 != cpl3 || c.sregs.CR0&cr0PG == 0 {
				t.Errorf("#PF %+v (CPL3 %v, %d KVM_SET_SREGS, CR2 %#x)", in, cpl3, c.setSregs, c.sregs.CR2)
			}
		default:
			t.Errorf("injected %+v", in)
		}
	})
}

// fuzzFPU makes an x87/SSE state from two fuzzed values: FCW, FSW (TOP,
// flags, ES and B as FXRSTOR would derive them), tags, a valid MXCSR, and
// registers.
func fuzzFPU(a, b uint64) *kvm.XSave {
	x := initXSave()
	fx := x.Bytes()
	le := binary.LittleEndian
	fcw := uint16(a)&fcwValid | fcwReserved
	fsw := uint16(a>>16) &^ (fswES | fswB)
	if fsw&^fcw&excAll != 0 {
		fsw |= fswES | fswB
	}
	le.PutUint16(fx[kvm.FXFCW:], fcw)
	le.PutUint16(fx[kvm.FXFSW:], fsw)
	fx[kvm.FXFTW] = byte(a >> 32)
	le.PutUint32(fx[kvm.FXMXCSR:], uint32(b)&0x2ffff)
	for i := range 8 {
		le.PutUint64(fx[kvm.FXST0+16*i:], a*uint64(i+1)^b)
		le.PutUint16(fx[kvm.FXST0+16*i+8:], uint16(b>>(8*i)))
	}
	for i := range 32 {
		le.PutUint64(fx[kvm.FXXMM0+8*i:], a^b*uint64(i+7))
	}
	le.PutUint64(fx[kvm.XSaveBV:], 3)
	return x
}

// fakeRegs spreads three fuzzed values over all general registers.
func fakeRegs(rax, rdx, rsi uint64) kvm.Regs {
	return kvm.Regs{
		RAX: rax, RDX: rdx, RSI: rsi, RCX: rax >> 3, RBX: rdx >> 5, RDI: rsi ^ rax,
		RSP: rdx + 8, RBP: rsi - 8, R8: rax ^ rdx, R9: rdx ^ rsi, R10: rax + rsi,
		R11: 1, R12: 2, R13: 0x3000, R14: portalBase, R15: ^uint64(0), RFLAGS: 2 | rax&0xfd5,
	}
}

// FuzzPV64B drives the paravirtual store port with arbitrary accesses and
// registers over a guest with RAM, a portal, a plain MMIO device and a
// pci.Mux holding both kinds: it must never panic, must answer a status
// from the protocol, and must never write anywhere but the portal (and
// there only for statuses 0 and 1, the 64 bytes of the source, ENQCMDS's
// first dword masked).
func FuzzPV64B(f *testing.F) {
	f.Add(true, uint8(4), uint8(1), uint64(1), uint64(0x3000), uint64(portalBase+0x40), true, false)
	f.Add(true, uint8(4), uint8(1), uint64(2), uint64(0x3fc0), uint64(portalBase), false, false)
	f.Add(true, uint8(4), uint8(1), uint64(1), uint64(0x3fc8), uint64(plainBase), true, true)
	f.Add(false, uint8(1), uint8(3), uint64(7), uint64(ramSize), uint64(0x5000), true, false)
	f.Fuzz(func(t *testing.T, in bool, size, count uint8, rax, rsi, rdi uint64, accept, cpl3 bool) {
		r := newRig(t)
		r.emu.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		r.portal.accept = accept
		regs, wide := &portal{}, &portal{accept: accept}
		var m pci.Mux
		if err := m.Add(0, 0x1000, "regs", plainDev{regs}); err != nil {
			t.Fatal(err)
		}
		if err := m.Add(0x1000, 0x1000, "portal", wide); err != nil {
			t.Fatal(err)
		}
		const muxBase = 0xd002_0000
		if err := r.mmio.Register(muxBase, 0x2000, "mux", &m); err != nil {
			t.Fatal(err)
		}
		for i := range r.ram {
			r.ram[i] = byte(i*7 + i>>8)
		}
		ram := append([]byte(nil), r.ram...)
		c := pvCPU(rax, rsi, rdi)
		if cpl3 {
			c.sregs.CS.Selector |= 3
		}
		sz := int(size%8) + 1
		data := make([]byte, sz*(int(count%4)+1))
		st, err := r.emu.PV64B(c, in, sz, data)
		if err != nil {
			t.Fatal(err)
		}
		if st >= numPVStatus {
			t.Fatalf("status %d is not in the protocol", st)
		}
		if in {
			for off := 0; off+sz <= len(data); off += sz {
				for i := 0; i < sz; i++ {
					if want := byte(uint32(st) >> (8 * i)); i < 4 && data[off+i] != want || i >= 4 && data[off+i] != 0 {
						t.Fatalf("access at %d reads % x for status %d", off, data[off:off+sz], st)
					}
				}
			}
		}
		if !bytes.Equal(ram, r.ram) || len(r.plain.plain) != 0 || len(regs.plain) != 0 ||
			len(r.portal.plain) != 0 || len(wide.plain) != 0 || c.setRegs != 0 {
			t.Fatal("wrote outside a portal (RAM, plain MMIO, a plain write, or registers)")
		}
		writes := append(append([]wideWrite(nil), r.portal.writes...), wide.writes...)
		if st >= PVBadRequest {
			if len(writes) != 0 {
				t.Fatalf("status %d but %d portal writes", st, len(writes))
			}
			return
		}
		if len(writes) != 1 || !in || sz != 4 || len(data) != 4 || rdi%64 != 0 || rsi%pageSize > pageSize-64 {
			t.Fatalf("status %d for a request that should be refused (%d writes)", st, len(writes))
		}
		w := writes[0]
		dev := uint64(portalBase)
		if len(wide.writes) == 1 {
			dev = muxBase + 0x1000
		}
		if dev+w.off != rdi {
			t.Fatalf("written at %#x, asked for %#x", dev+w.off, rdi)
		}
		var want [64]byte
		copy(want[:], ram[rsi:])
		if uint32(rax) == PVKindENQCMDS {
			if cpl3 || w.kind != bus.ENQCMDS {
				t.Fatalf("ENQCMDS delivered as %v from CPL3=%v", w.kind, cpl3)
			}
			binary.LittleEndian.PutUint32(want[:], binary.LittleEndian.Uint32(want[:])&0x800fffff)
		} else if w.kind != bus.MOVDIR64B {
			t.Fatalf("kind %v", w.kind)
		}
		if w.data != want {
			t.Fatalf("portal got % x, source holds % x", w.data, want)
		}
		if retry := uint32(rax) == PVKindENQCMDS && !accept; retry != (st == PVRetry) {
			t.Fatalf("status %d with accept=%v", st, accept)
		}
	})
}
