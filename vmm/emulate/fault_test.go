package emulate

import (
	"encoding/binary"
	"testing"

	"godvm/kvm"
)

func wantInjected(t *testing.T, c *fakeCPU, want injection) {
	t.Helper()
	if len(c.injected) != 1 || c.injected[0] != want {
		t.Errorf("injected %+v, want %+v", c.injected, want)
	}
}

// wantFault checks that the instruction raised exactly want in the guest
// and did nothing else: RIP on the instruction, no register written, no
// portal store, and KVM_SET_SREGS used only to load a #PF's CR2.
func wantFault(want injection) func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
	return func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
		t.Helper()
		wantOK(t, k, err, KindFault)
		wantInjected(t, c, want)
		if c.setRegs != 0 {
			t.Errorf("registers written (RIP %#x)", c.regs.RIP)
		}
		sregs := 0
		if want.vector == vectorPF {
			sregs = 1
		}
		if c.setSregs != sregs {
			t.Errorf("KVM_SET_SREGS %d times, want %d", c.setSregs, sregs)
		}
		if len(r.portal.writes)+len(r.plain.plain) != 0 {
			t.Errorf("stores reached a device: %+v %v", r.portal.writes, r.plain.plain)
		}
		if r.emu.Stats.Count(KindFault) != 1 || r.emu.Stats.Failed() != 0 {
			t.Errorf("stats %v", &r.emu.Stats)
		}
	}
}

// Expected injections.
func ud() injection  { return injection{vector: vectorUD} }
func gp0() injection { return injection{vector: vectorGP, hasCode: true} }
func ss0() injection { return injection{vector: vectorSS, hasCode: true} }
func pf(code uint32, cr2 uint64) injection {
	return injection{vector: vectorPF, hasCode: true, code: code, cr2: cr2}
}

// Instructions the fault tests use.
var (
	movdir64bRDX = []byte{0x66, 0x0f, 0x38, 0xf8, 0x02}       // movdir64b rax, [rdx]
	enqcmdsRDX   = []byte{0xf3, 0x0f, 0x38, 0xf8, 0x02}       // enqcmds rax, [rdx]
	movdir64bRBP = []byte{0x66, 0x0f, 0x38, 0xf8, 0x45, 0x00} // movdir64b rax, [rbp+0]
	movdir64bRSP = []byte{0x66, 0x0f, 0x38, 0xf8, 0x44, 0x24, 0x08}
	popcntRSI    = []byte{0xf3, 0x48, 0x0f, 0xb8, 0x06}       // popcnt rax, [rsi]
	popcntRBP    = []byte{0xf3, 0x48, 0x0f, 0xb8, 0x45, 0x00} // popcnt rax, [rbp+0]
)

// user runs the vCPU at CPL3.
func user(c *fakeCPU) { c.sregs.CS.Selector = 0x33 }

func TestInvalidEncodingsRaiseUD(t *testing.T) {
	cases := []struct {
		name string
		code []byte
	}{
		{"lock movdir64b", []byte{0xf0, 0x66, 0x0f, 0x38, 0xf8, 0x02}},
		{"lock enqcmds", []byte{0xf3, 0xf0, 0x0f, 0x38, 0xf8, 0x02}},
		{"lock enqcmd", []byte{0xf0, 0xf2, 0x0f, 0x38, 0xf8, 0x02}},
		{"movdir64b register source", []byte{0x66, 0x0f, 0x38, 0xf8, 0xc2}},
		{"enqcmds register source", []byte{0xf3, 0x0f, 0x38, 0xf8, 0xd1}},
		{"enqcmd register source with REX", []byte{0xf2, 0x45, 0x0f, 0x38, 0xf8, 0xc8}},
		{"lock popcnt", []byte{0xf0, 0xf3, 0x48, 0x0f, 0xb8, 0xc1}},
		{"lock popcnt memory", []byte{0xf0, 0xf3, 0x48, 0x0f, 0xb8, 0x06}},
		{"lock int3", []byte{0xf0, 0xcc}},
		{"lock fwait", []byte{0xf0, 0x9b}},
	}
	var ecs []emuCase
	for _, tc := range cases {
		ecs = append(ecs, emuCase{name: tc.name, code: tc.code,
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RDX, c.regs.RSI = portalBase, 0x3000, 0x3000 },
			check: wantFault(ud())})
	}
	run(t, ecs)
}

func TestNonCanonicalRaisesGPOrSS(t *testing.T) {
	const nonCanon = 0x8000_0000_0000_0000
	run(t, []emuCase{
		{name: "movdir64b source not canonical", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RDX = portalBase, nonCanon },
			check: wantFault(gp0())},
		{name: "movdir64b source whose last byte is not canonical", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RDX = portalBase, 0x7fff_ffff_ffe0 },
			check: wantFault(gp0())},
		{name: "movdir64b source in the upper half is canonical (then unmapped)", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{codeAddr: codeAddr, portalBase: portalBase}
				c.regs.RAX, c.regs.RDX = portalBase, 0xffff_8000_0000_0000
			},
			check: wantFault(pf(0, 0xffff_8000_0000_0000))},
		{name: "movdir64b destination not canonical (ES)", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RDX = 0x0000_8000_0000_0000, 0x3000 },
			check: wantFault(gp0())},
		{name: "movdir64b [rbp] not canonical is #SS", code: movdir64bRBP,
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RBP = portalBase, nonCanon },
			check: wantFault(ss0())},
		{name: "movdir64b [rsp+8] not canonical is #SS", code: movdir64bRSP,
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RSP = portalBase, 0x0001_0000_0000_0000 },
			check: wantFault(ss0())},
		{name: "movdir64b FS-relative, not canonical after the FS base", code: append([]byte{0x64}, movdir64bRDX...),
			setup: func(r *rig, c *fakeCPU) {
				c.sregs.FS.Base = 0x7fff_ffff_f000
				c.regs.RAX, c.regs.RDX = portalBase, 0x1000
			},
			check: wantFault(gp0())},
		{name: "popcnt source not canonical", code: popcntRSI,
			setup: func(r *rig, c *fakeCPU) { c.regs.RSI = 0x1234_5678_0000_0000 },
			check: wantFault(gp0())},
		{name: "popcnt [rbp] not canonical is #SS", code: popcntRBP,
			setup: func(r *rig, c *fakeCPU) { c.regs.RBP = nonCanon },
			check: wantFault(ss0())},
		{name: "5-level paging: bit 47 set is canonical", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.sregs.CR4 |= cr4LA57
				c.pages = map[uint64]uint64{codeAddr: codeAddr, portalBase: portalBase, 0x0000_8000_0000_0000: 0x3000}
				c.regs.RAX, c.regs.RDX = portalBase, 0x0000_8000_0000_0000
				wideSource(r, 0x3000)
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
				if len(r.portal.writes) != 1 || r.portal.writes[0].data != wideSource(r, 0x3000) {
					t.Errorf("portal got %+v", r.portal.writes)
				}
			}},
		{name: "5-level paging: bit 56 clear above it is not canonical", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.sregs.CR4 |= cr4LA57
				c.regs.RAX, c.regs.RDX = portalBase, 0x0100_0000_0000_0000
			},
			check: wantFault(gp0())},
		{name: "32-bit mode has no canonical check", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.sregs = prot32(0, 0)
				c.regs.RAX, c.regs.RDX = 0x8000_0000_0000_0000|portalBase, 0x8000_0000_0000_3000
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
			}},
		{name: "more than 15 bytes (16) is #GP", code: []byte{0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26, 0x66, 0x0f, 0x38, 0xf8, 0x02},
			setup: func(r *rig, c *fakeCPU) { c.regs.RAX, c.regs.RDX = portalBase, 0x3000 },
			check: wantFault(gp0())},
	})
}

// TestPageFaults checks #PF's error code (SDM Vol. 3A 4.7: P bit 0 for a
// protection or reserved-bit violation, W/R bit 1 for a write, U/S bit 2
// for a CPL3 access, RSVD bit 3, I/D bit 4 for a fetch with NX or SMEP on)
// and CR2 (the first byte of the access in the page that faults) for each
// kind of access the emulator makes.
func TestPageFaults(t *testing.T) {
	code := uint64(codeAddr)
	run(t, []emuCase{
		// Sources (reads).
		{name: "source not present", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code, portalBase: portalBase}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3010
			},
			check: wantFault(pf(0, 0x3010))},
		{name: "source crossing into a page not present: CR2 is that page", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code, portalBase: portalBase, 0x7000: 0x5000}
				c.regs.RAX, c.regs.RDX = portalBase, 0x7fe0
			},
			check: wantFault(pf(0, 0x8000))},
		{name: "source on a supervisor page at CPL3", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				user(c)
				c.pages = map[uint64]uint64{code: code | pgP | pgUS, portalBase: portalBase | pgP | pgRW | pgUS, 0x3000: 0x3000}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: wantFault(pf(pfPresent|pfUser, 0x3000))},
		{name: "source not present at CPL3", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				user(c)
				c.pages = map[uint64]uint64{code: code | pgP | pgUS, portalBase: portalBase | pgP | pgRW | pgUS}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: wantFault(pf(pfUser, 0x3000))},
		{name: "source on a user page at CPL0 with SMAP and AC clear", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code, portalBase: portalBase, 0x3000: 0x3000 | pgP | pgUS}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3040
			},
			check: wantFault(pf(pfPresent, 0x3040))},
		{name: "source with XD set and EFER.NXE clear is a reserved-bit fault", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.sregs.EFER &^= eferNXE
				c.pages = map[uint64]uint64{code: code, portalBase: portalBase, 0x3000: 0x3000 | pgP | pgRW | pgXD}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: wantFault(pf(pfPresent|pfRsvd, 0x3000))},
		{name: "popcnt source not present", code: popcntRSI,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code}
				c.regs.RSI = 0x4ffc
			},
			check: wantFault(pf(0, 0x4ffc))},
		{name: "popcnt source crossing into a page not present", code: popcntRSI,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code, 0x4000: 0x4000}
				c.regs.RSI = 0x4ffc
			},
			check: wantFault(pf(0, 0x5000))},
		// Destinations (writes).
		{name: "destination not present", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code, 0x3000: 0x3000}
				c.regs.RAX, c.regs.RDX = portalBase+0x80, 0x3000
			},
			check: wantFault(pf(pfWrite, portalBase+0x80))},
		{name: "destination read-only", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code, 0x3000: 0x3000, portalBase: portalBase | pgP}
				c.regs.RAX, c.regs.RDX = portalBase+0x40, 0x3000
			},
			check: wantFault(pf(pfPresent|pfWrite, portalBase+0x40))},
		{name: "enqcmds destination read-only", code: enqcmdsRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code, 0x3000: 0x3000, portalBase: portalBase | pgP}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: wantFault(pf(pfPresent|pfWrite, portalBase))},
		{name: "destination read-only at CPL3 with CR0.WP clear", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				user(c)
				c.sregs.CR0 &^= cr0WP
				c.pages = map[uint64]uint64{code: code | pgP | pgUS, 0x3000: 0x3000 | pgP | pgUS, portalBase: portalBase | pgP | pgUS}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: wantFault(pf(pfPresent|pfWrite|pfUser, portalBase))},
		{name: "destination on a supervisor page at CPL3", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				user(c)
				c.pages = map[uint64]uint64{code: code | pgP | pgUS, 0x3000: 0x3000 | pgP | pgUS, portalBase: portalBase}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: wantFault(pf(pfPresent|pfWrite|pfUser, portalBase))},
		{name: "destination on a user page at CPL0 with SMAP, AC clear", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code, 0x3000: 0x3000, portalBase: portalBase | pgP | pgRW | pgUS}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: wantFault(pf(pfPresent|pfWrite, portalBase))},
		// Fetches.
		{name: "fetch from a page not present", code: nil,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{}
				c.regs.RIP = 0x5000
			},
			check: wantFault(pf(pfFetch, 0x5000))},
		{name: "fetch from an execute-disable page", code: []byte{0x9b},
			setup: func(r *rig, c *fakeCPU) { c.pages = map[uint64]uint64{code: code | pgP | pgRW | pgXD} },
			check: wantFault(pf(pfPresent|pfFetch, codeAddr))},
		{name: "fetch from a user page at CPL0 with SMEP", code: []byte{0x9b},
			setup: func(r *rig, c *fakeCPU) { c.pages = map[uint64]uint64{code: code | pgP | pgUS} },
			check: wantFault(pf(pfPresent|pfFetch, codeAddr))},
		{name: "fetch from a supervisor page at CPL3", code: []byte{0x9b},
			setup: func(r *rig, c *fakeCPU) { user(c); c.pages = map[uint64]uint64{code: code} },
			check: wantFault(pf(pfPresent|pfUser|pfFetch, codeAddr))},
		{name: "fetch without NX or SMEP has no I/D bit", code: nil,
			setup: func(r *rig, c *fakeCPU) {
				c.sregs.EFER &^= eferNXE
				c.sregs.CR4 &^= cr4SMEP
				c.pages = map[uint64]uint64{}
				c.regs.RIP = 0x5000
			},
			check: wantFault(pf(0, 0x5000))},
		{name: "instruction crossing into a page not present", code: nil,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{0x2000: 0x4000}
				c.regs.RIP = 0x2ffe
				copy(r.ram[0x4ffe:], []byte{0xf3, 0x48}) // popcnt rax, rcx: 0f b8 c1 on the next page
			},
			check: wantFault(pf(pfFetch, 0x3000))},
	})
}

// TestAccessesThatDoNotFault: the permission rules' other sides.
func TestAccessesThatDoNotFault(t *testing.T) {
	code := uint64(codeAddr)
	run(t, []emuCase{
		{name: "read-only destination at CPL0 with CR0.WP clear", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.sregs.CR0 &^= cr0WP
				c.pages = map[uint64]uint64{code: code, 0x3000: 0x3000, portalBase: portalBase | pgP}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
			}},
		{name: "user source at CPL0 with SMAP and AC set", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.regs.RFLAGS |= flagAC
				c.pages = map[uint64]uint64{code: code, portalBase: portalBase, 0x3000: 0x3000 | pgP | pgUS}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
			}},
		{name: "user pages at CPL3", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				user(c)
				c.pages = map[uint64]uint64{code: code | pgP | pgUS, 0x3000: 0x3000 | pgP | pgUS, portalBase: portalBase | pgP | pgRW | pgUS}
				c.regs.RAX, c.regs.RDX = portalBase, 0x3000
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
			}},
		{name: "accessed and dirty flags", code: movdir64bRDX,
			setup: func(r *rig, c *fakeCPU) {
				c.pages = map[uint64]uint64{code: code, 0x3000: 0x3000, 0x8000: 0x8000}
				c.regs.RAX, c.regs.RDX = 0x8000, 0x3000
			},
			check: func(t *testing.T, r *rig, c *fakeCPU, k Kind, err error) {
				wantOK(t, k, err, KindMOVDIR64B)
				// One PT maps all three pages: the walk sets A on the entries
				// it used, D only on the written page's.
				pt := ptOf(r, c, 0x3000)
				for va, want := range map[uint64]uint64{code: pteA, 0x3000: pteA, 0x8000: pteA | pteD} {
					if got := binary.LittleEndian.Uint64(r.ram[pt+8*(va>>12&511):]) & (pteA | pteD); got != want {
						t.Errorf("PTE for %#x: A/D %#x, want %#x", va, got, want)
					}
				}
			}},
	})
}

// ptOf finds the page table (4-level paging) that maps va.
func ptOf(r *rig, c *fakeCPU, va uint64) uint64 {
	t := c.sregs.CR3 & pteAddr
	for _, shift := range []uint{39, 30, 21} {
		t = binary.LittleEndian.Uint64(r.ram[t+8*(va>>shift&511):]) & pteAddr
	}
	return t
}

// TestWalkModes walks hand-made 32-bit, PAE and 4-level tables with large
// pages, and checks what each maps and how it faults.
func TestWalkModes(t *testing.T) {
	le := binary.LittleEndian
	type probe struct {
		lin  uint64
		acc  access
		gpa  uint64 // want, when code is -1
		code int64  // #PF error code, or -1 for no fault
	}
	cases := []struct {
		name   string
		sregs  kvm.Sregs
		build  func(ram []byte)
		probes []probe
	}{
		{name: "32-bit paging, 4 KiB and 4 MiB pages",
			sregs: kvm.Sregs{CR0: cr0PG | cr0WP | 1, CR3: 0x8000, CR4: cr4PSE},
			build: func(ram []byte) {
				le.PutUint32(ram[0x8000+4*0:], 0x9000|pteP|pteRW)          // 0-4 MiB: PT at 0x9000
				le.PutUint32(ram[0x8000+4*1:], 0x0000|pteP|ptePS)          // 4-8 MiB: 4 MiB page at 0, read-only
				le.PutUint32(ram[0x8000+4*2:], 0x0000|pteP|ptePS|1<<13)    // 8-12 MiB: 4 MiB page at 4 GiB (PSE-36)
				le.PutUint32(ram[0x9000+4*3:], 0x5000|pteP|pteRW)          // 0x3000 -> 0x5000
				le.PutUint32(ram[0x9000+4*4:], 0x6000|pteP)                // 0x4000 -> 0x6000, read-only
				le.PutUint32(ram[0x8000+4*1023:], 0xa000|pteP|pteRW|pteUS) // top 4 MiB: PT at 0xa000, nothing mapped
			},
			probes: []probe{
				{lin: 0x3123, gpa: 0x5123, code: -1},
				{lin: 0x3123, acc: access{write: true}, gpa: 0x5123, code: -1},
				{lin: 0x4010, acc: access{write: true}, code: pfPresent | pfWrite},
				{lin: 0x5000, code: 0},
				{lin: 0x40_1234, gpa: 0x1234, code: -1},
				{lin: 0x40_1234, acc: access{write: true}, code: pfPresent | pfWrite},
				{lin: 0x80_0010, gpa: 0x1_0000_0010, code: -1},
				{lin: 0xc0_0000, code: 0},
				{lin: 0xffff_f000, acc: access{fetch: true}, code: 0}, // no I/D bit without NX or SMEP
			}},
		{name: "PAE paging, 2 MiB pages, NX",
			sregs: kvm.Sregs{CR0: cr0PG | cr0WP | 1, CR3: 0x8020, CR4: cr4PAE, EFER: eferNXE},
			build: func(ram []byte) {
				le.PutUint64(ram[0x8020+8*0:], 0x9000|pteP)       // 0-1 GiB: PD at 0x9000
				le.PutUint64(ram[0x8020+8*1:], 0xa000|pteP|pteRW) // 1-2 GiB: reserved bit 1 set
				le.PutUint64(ram[0x9000+8*0:], 0xb000|pteP|pteRW)
				le.PutUint64(ram[0x9000+8*1:], 0x40_0000|pteP|pteRW|ptePS|pteXD) // 2-4 MiB -> 4 MiB, no execute
				le.PutUint64(ram[0x9000+8*2:], 0x40_0000|pteP|pteRW|ptePS|1<<13) // reserved bit in a 2 MiB entry
				le.PutUint64(ram[0xb000+8*1:], 0x7000|pteP|pteRW)
			},
			probes: []probe{
				{lin: 0x1abc, acc: access{write: true}, gpa: 0x7abc, code: -1},
				{lin: 0x2abc, code: 0},
				{lin: 0x20_0010, gpa: 0x40_0010, code: -1},
				{lin: 0x20_0010, acc: access{fetch: true}, code: pfPresent | pfFetch},
				{lin: 0x40_0000, code: pfPresent | pfRsvd},
				{lin: 0x4000_0000, code: pfPresent | pfRsvd},
				{lin: 0x8000_0000, acc: access{write: true}, code: pfWrite}, // PDPTE 2 not present
			}},
		{name: "4-level paging, 1 GiB pages",
			sregs: kvm.Sregs{CR0: cr0PG | cr0WP | 1, CR3: 0x8000, CR4: cr4PAE, EFER: eferNXE | eferLMA},
			build: func(ram []byte) {
				le.PutUint64(ram[0x8000+8*0:], 0x9000|pteP|pteRW)
				le.PutUint64(ram[0x8000+8*1:], 0xa000|pteP|pteRW|ptePS) // PS in a PML4E is reserved
				le.PutUint64(ram[0x9000+8*2:], 0x4000_0000|pteP|pteRW|ptePS)
				le.PutUint64(ram[0x9000+8*3:], 0x4000_0000|pteP|pteRW|ptePS|1<<20) // reserved bit
			},
			probes: []probe{
				{lin: 0x8765_4321, acc: access{write: true}, gpa: 0x4765_4321, code: -1},
				{lin: 0xc000_0000, code: pfPresent | pfRsvd},
				{lin: 0x80_0000_0000, code: pfPresent | pfRsvd},
				{lin: 0x1000, code: 0},
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range tc.probes {
				r := newRig(t)
				tc.build(r.ram)
				st := &state{cpu: &fakeCPU{}, sregs: tc.sregs, mode: 32}
				if tc.sregs.EFER&eferLMA != 0 {
					st.mode = 64
				}
				gpa, err := r.emu.translate(st, p.lin, p.acc)
				if p.code < 0 {
					if err != nil || gpa != p.gpa {
						t.Errorf("%#x %+v: %#x, %v; want %#x", p.lin, p.acc, gpa, err, p.gpa)
					}
					continue
				}
				gf, ok := err.(*guestFault)
				if !ok || gf.vector != vectorPF || !gf.hasCode || gf.code != uint32(p.code) || gf.addr != p.lin {
					t.Errorf("%#x %+v: %#x, %v; want #PF(%#x)", p.lin, p.acc, gpa, err, p.code)
				}
			}
		})
	}
}

// TestPageFaultMessages: a fault reads well in a log.
func TestPageFaultMessages(t *testing.T) {
	f := &guestFault{vector: vectorPF, hasCode: true, code: 3, addr: 0xd000_0040, why: "write to a read-only page"}
	if got, want := f.Error(), "#PF(0x3) at linear 0xd0000040: write to a read-only page"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got, want := udFault("LOCK prefix on MOVDIR64B").Error(), "#UD: LOCK prefix on MOVDIR64B"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
