package emulate

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/arch/x86/x86asm"
)

// Guest faults. An instruction the guest may not execute as it stands (a
// LOCK prefix, a register operand where memory is required, an address that
// is not canonical, a page that is not mapped or not accessible) raises in
// the guest what the CPU would raise; it is the guest's problem, not the
// VMM's. The emulator builds a *guestFault, injects it (Emulator.Emulate,
// state.raise) and the vCPU goes on into the guest's handler, with RIP on
// the instruction as for any fault.
//
// Memory operands are translated by walking the guest's page tables here
// rather than with KVM_TRANSLATE: on x86 KVM_TRANSLATE makes a supervisor
// read's walk and always answers writeable=1 and usermode=0, so it cannot
// tell a write to a read-only page, or a CPL3 access to a supervisor page,
// from a good access, nor a not-present page from a reserved-bit or SMAP
// violation. The walk implements SDM Vol. 3A chapter 4 for 32-bit, PAE,
// 4-level and 5-level paging: present and reserved bits at every level,
// R/W, U/S and XD combined over the levels, CR0.WP, CR4.SMEP, CR4.SMAP with
// RFLAGS.AC, EFER.NXE, and the accessed and dirty flags set as the CPU sets
// them. Not modelled: protection keys (CR4.PKE/PKS; PKRU is not read),
// MAXPHYADDR (physical-address bits above guest RAM are not reserved-bit
// faults: the access simply finds no RAM), and segment limits outside
// 64-bit mode.

// Exception vectors the emulator injects.
const (
	vectorBP = 3
	vectorUD = 6
	vectorSS = 12
	vectorGP = 13
	vectorPF = 14
)

// #PF error-code bits (SDM Vol. 3A 4.7).
const (
	pfPresent = 1 << 0 // 0: a not-present entry; 1: a protection (or reserved-bit) violation
	pfWrite   = 1 << 1 // the access was a write
	pfUser    = 1 << 2 // the access was a user-mode (CPL3) access
	pfRsvd    = 1 << 3 // a reserved bit was set in a paging-structure entry
	pfFetch   = 1 << 4 // the access was an instruction fetch (with NX or SMEP on)
)

// Control-register, EFER, RFLAGS and paging-structure bits the walk uses.
const (
	cr0PG   = 1 << 31
	cr0WP   = 1 << 16
	cr4PSE  = 1 << 4
	cr4PAE  = 1 << 5
	cr4LA57 = 1 << 12
	cr4SMEP = 1 << 20
	cr4SMAP = 1 << 21
	eferLMA = 1 << 10
	eferNXE = 1 << 11

	pteP  = 1 << 0
	pteRW = 1 << 1
	pteUS = 1 << 2
	pteA  = 1 << 5
	pteD  = 1 << 6
	ptePS = 1 << 7
	pteXD = 1 << 63

	pteAddr = 0x000f_ffff_ffff_f000 // bits 51:12
)

var vectorNames = map[uint8]string{vectorBP: "#BP", vectorUD: "#UD", vectorNM: "#NM", vectorSS: "#SS", vectorGP: "#GP",
	vectorPF: "#PF", vectorMF: "#MF", vectorXM: "#XM"}

// guestFault is an exception an instruction raises in the guest.
type guestFault struct {
	vector  uint8
	hasCode bool
	code    uint32
	addr    uint64 // #PF: the faulting linear address, loaded into CR2
	why     string
	// keepFPU: the x87/SSE state the instruction changed before the
	// fault stands (MXCSR flags before #XM).
	keepFPU bool
}

func (f *guestFault) Error() string {
	s := vectorNames[f.vector]
	if s == "" {
		s = fmt.Sprintf("vector %d", f.vector)
	}
	if f.hasCode {
		s += fmt.Sprintf("(%#x)", f.code)
	}
	if f.vector == vectorPF {
		s += fmt.Sprintf(" at linear %#x", f.addr)
	}
	return s + ": " + f.why
}

func udFault(why string) *guestFault { return &guestFault{vector: vectorUD, why: why} }
func gpFault(why string) *guestFault { return &guestFault{vector: vectorGP, hasCode: true, why: why} }

// canonicalFault is the fault for a non-canonical address: #SS(0) where the
// address references the SS segment, #GP(0) otherwise.
func canonicalFault(seg x86asm.Reg, lin uint64) *guestFault {
	why := fmt.Sprintf("linear address %#x is not canonical", lin)
	if seg == x86asm.SS {
		return &guestFault{vector: vectorSS, hasCode: true, why: why}
	}
	return gpFault(why)
}

// checkCanonical raises #GP(0) (#SS(0) for seg SS) when an n-byte access at
// lin is not canonical in 64-bit mode: its first or its last byte lies
// outside the 48-bit (57-bit with CR4.LA57) canonical halves. Outside
// 64-bit mode linear addresses are 32 bits and always canonical.
func (st *state) checkCanonical(seg x86asm.Reg, lin uint64, n int) error {
	if st.mode != 64 {
		return nil
	}
	bits := 48
	if st.sregs.CR4&cr4LA57 != 0 {
		bits = 57
	}
	for _, a := range []uint64{lin, lin + uint64(n) - 1} {
		if top := int64(a) >> (bits - 1); top != 0 && top != -1 {
			return canonicalFault(seg, a)
		}
	}
	return nil
}

// access is what a memory access is, for the walk's permission checks and
// the #PF error code. Every access the emulator makes is explicit, at the
// vCPU's CPL.
type access struct {
	write bool
	fetch bool
}

// walkedEntry is a paging-structure entry the walk used.
type walkedEntry struct {
	gpa  uint64
	wide bool // 8 bytes (PAE, 4- and 5-level paging); else 4
	val  uint64
}

// translate maps a linear address to guest-physical for one access,
// walking the guest's page tables. It returns a *guestFault (#PF, CR2 =
// lin) when the CPU would fault, and a plain error when the walk itself
// cannot be made (a paging structure outside guest RAM): that is godvm's
// limit, not the guest's fault.
func (e *Emulator) translate(st *state, lin uint64, acc access) (uint64, error) {
	s := &st.sregs
	if s.CR0&cr0PG == 0 {
		return lin, nil
	}
	user := st.cpl() == 3
	nxe := s.EFER&eferNXE != 0
	var code uint32
	if acc.write {
		code |= pfWrite
	}
	if user {
		code |= pfUser
	}
	if acc.fetch && (s.CR4&cr4SMEP != 0 || s.CR4&cr4PAE != 0 && nxe) {
		code |= pfFetch
	}
	fault := func(bits uint32, why string) error {
		return &guestFault{vector: vectorPF, hasCode: true, code: code | bits, addr: lin, why: why}
	}
	var walked [5]walkedEntry
	n := 0
	var gpa uint64
	switch {
	case s.CR4&cr4PAE == 0: // 32-bit paging: 4-byte entries, 4 MiB pages with CR4.PSE
		lin = uint64(uint32(lin))
		table := s.CR3 & 0xffff_f000
		for shift := 22; ; shift -= 10 {
			ent := table + 4*(lin>>shift&0x3ff)
			v, err := e.Mem.ReadU32(ent)
			if err != nil {
				return 0, fmt.Errorf("page walk for linear %#x: %w", lin, err)
			}
			if v&pteP == 0 {
				return 0, fault(0, "not present")
			}
			walked[n] = walkedEntry{gpa: ent, val: uint64(v)}
			n++
			if shift == 22 && v&ptePS != 0 && s.CR4&cr4PSE != 0 {
				// PSE-36: bits 20:13 are physical-address bits 39:32.
				gpa = uint64(v)&0xffc0_0000 | uint64(v>>13&0xff)<<32 | lin&0x3f_ffff
				break
			}
			if shift == 12 {
				gpa = uint64(v)&0xffff_f000 | lin&0xfff
				break
			}
			table = uint64(v) & 0xffff_f000
		}
	default:
		var table uint64
		top := 39
		switch {
		case s.EFER&eferLMA == 0: // PAE paging: the PDPTE first
			lin = uint64(uint32(lin))
			ent := s.CR3&0xffff_ffe0 + 8*(lin>>30&3)
			v, err := e.Mem.ReadU64(ent)
			if err != nil {
				return 0, fmt.Errorf("page walk for linear %#x: %w", lin, err)
			}
			if v&pteP == 0 {
				return 0, fault(0, "PDPTE not present")
			}
			if v&(0x1e6|pteXD) != 0 { // bits 2:1, 8:5 and 63 are reserved in a PDPTE
				return 0, fault(pfPresent|pfRsvd, "reserved bit set in the PDPTE")
			}
			table, top = v&pteAddr, 21
		case s.CR4&cr4LA57 != 0:
			table, top = s.CR3&pteAddr, 48
		default:
			table = s.CR3 & pteAddr
		}
		for shift := top; ; shift -= 9 {
			ent := table + 8*(lin>>shift&0x1ff)
			v, err := e.Mem.ReadU64(ent)
			if err != nil {
				return 0, fmt.Errorf("page walk for linear %#x: %w", lin, err)
			}
			if v&pteP == 0 {
				return 0, fault(0, "not present")
			}
			if v&pteXD != 0 && !nxe {
				return 0, fault(pfPresent|pfRsvd, "XD set with EFER.NXE clear")
			}
			walked[n] = walkedEntry{gpa: ent, wide: true, val: v}
			n++
			if shift == 12 {
				gpa = v&pteAddr | lin&0xfff
				break
			}
			if v&ptePS != 0 {
				if shift > 30 {
					return 0, fault(pfPresent|pfRsvd, "PS set in a PML4E or PML5E")
				}
				// Bits shift-1:13 of a 1 GiB or 2 MiB page entry are reserved
				// (bit 12 is PAT).
				if v&(uint64(1)<<shift-1)&^0x1fff != 0 {
					return 0, fault(pfPresent|pfRsvd, "reserved bit set in a large-page entry")
				}
				gpa = v&pteAddr&^(uint64(1)<<shift-1) | lin&(uint64(1)<<shift-1)
				break
			}
			table = v & pteAddr
		}
	}
	// Access rights, combined over the levels (SDM Vol. 3A 4.6).
	writable, userPage, noExec := true, true, false
	for _, w := range walked[:n] {
		writable = writable && w.val&pteRW != 0
		userPage = userPage && w.val&pteUS != 0
		noExec = noExec || nxe && w.val&pteXD != 0
	}
	smap := !user && userPage && s.CR4&cr4SMAP != 0 && st.regs.RFLAGS&flagAC == 0
	switch {
	case user && !userPage:
		return 0, fault(pfPresent, "user-mode access to a supervisor-mode page")
	case acc.fetch && noExec:
		return 0, fault(pfPresent, "instruction fetch from an execute-disable page")
	case acc.fetch && !user && userPage && s.CR4&cr4SMEP != 0:
		return 0, fault(pfPresent, "supervisor-mode fetch from a user-mode page (SMEP)")
	case !acc.fetch && smap:
		return 0, fault(pfPresent, "supervisor-mode access to a user-mode page with RFLAGS.AC clear (SMAP)")
	case acc.write && !writable && (user || s.CR0&cr0WP != 0):
		return 0, fault(pfPresent, "write to a read-only page")
	}
	// The CPU sets the accessed flag in every entry it used and, for a
	// write, the dirty flag in the one that maps the page: atomically, as
	// another vCPU may be walking or editing the same tables.
	for i, w := range walked[:n] {
		bits := uint32(0)
		if w.val&pteA == 0 {
			bits |= pteA
		}
		if i == n-1 && acc.write && w.val&pteD == 0 {
			bits |= pteD
		}
		if bits != 0 {
			e.setPTEBits(w.gpa, bits)
		}
	}
	return gpa, nil
}

// setPTEBits ORs bits into the low 32 bits of the paging-structure entry at
// gpa (4-byte aligned, in guest RAM: the walk just read it).
func (e *Emulator) setPTEBits(gpa uint64, bits uint32) {
	b, err := e.Mem.Slice(gpa, 4)
	if err != nil || gpa%4 != 0 {
		return
	}
	atomic.OrUint32((*uint32)(unsafe.Pointer(&b[0])), bits)
}
