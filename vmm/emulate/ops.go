package emulate

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// execute decodes st.bytes and emulates the instruction.
func (e *Emulator) execute(st *state) (Kind, error) {
	b := st.bytes
	// CLAC (0f 01 ca) and STAC (0f 01 cb) are unknown to x86asm v0.33.0.
	// They take no operands and no prefixes that change them, so their
	// three bytes identify them; no ModRM decoding is involved.
	if len(b) >= 3 && b[0] == 0x0f && b[1] == 0x01 && (b[2] == 0xca || b[2] == 0xcb) {
		if st.cpl() != 0 {
			return KindNone, udFault("CLAC/STAC at CPL > 0")
		}
		k := KindCLAC
		if b[2] == 0xcb {
			k = KindSTAC
			st.regs.RFLAGS |= flagAC
		} else {
			st.regs.RFLAGS &^= flagAC
		}
		st.advance(3)
		return k, st.commit()
	}
	if w, ok, err := decodeWide(b, st.mode); ok {
		if err != nil {
			return KindNone, st.decodeFailure(err)
		}
		st.length = w.length
		return e.wide(st, w)
	}
	inst, err := x86asm.Decode(b, st.mode)
	if err != nil || inst.Op == 0 {
		// Op 0 is x86asm's lone-prefix result for bytes it does not know,
		// and for bytes that end before the instruction does.
		if errors.Is(err, x86asm.ErrTruncated) || needsMore(b, st.mode) {
			return KindNone, st.decodeFailure(errTruncated)
		}
		return KindNone, st.unhandled("cannot decode the instruction", "")
	}
	st.length = inst.Len
	emulated := inst.Op == x86asm.INT && inst.Opcode>>24 == 0xcc || inst.Op == x86asm.FWAIT || inst.Op == x86asm.POPCNT ||
		x87Ops[inst.Op] || isSSE(inst.Op)
	if emulated && hasLock(&inst) {
		return KindNone, udFault("LOCK prefix on " + strings.ToLower(inst.Op.String()))
	}
	switch {
	case inst.Op == x86asm.INT && inst.Opcode>>24 == 0xcc:
		// INT3 is a trap: the #BP frame holds the address after it.
		st.advance(inst.Len)
		if err := st.commit(); err != nil {
			return KindNone, err
		}
		if err := st.cpu.InjectException(vectorBP, nil); err != nil {
			return KindNone, fmt.Errorf("emulate: int3 at RIP %#x: injecting #BP: %w", st.regs.RIP-uint64(inst.Len), err)
		}
		return KindINT3, nil
	case inst.Op == x86asm.FWAIT:
		return e.fwait(st, &inst)
	case inst.Op == x86asm.POPCNT:
		return e.popcnt(st, &inst)
	case x87Ops[inst.Op]:
		return e.x87(st, &inst)
	case isSSE(inst.Op):
		return e.sse(st, &inst)
	}
	return KindNone, st.unhandled("instruction not emulated", "")
}

// fwait is FWAIT: #NM with CR0.MP and CR0.TS set, #MF while an unmasked
// x87 exception is pending (FSW.ES), else nothing.
func (e *Emulator) fwait(st *state, inst *x86asm.Inst) (Kind, error) {
	if st.sregs.CR0&(cr0MP|cr0TS) == cr0MP|cr0TS {
		return KindNone, &guestFault{vector: vectorNM, why: "FWAIT with CR0.MP and CR0.TS set"}
	}
	f, err := st.fpu()
	if err != nil {
		return KindNone, err
	}
	if err := pendingMF(f); err != nil {
		return KindNone, err
	}
	return e.finish(st, inst.Len, KindFWAIT)
}

// finish completes an instruction: RIP past it, the x87/SSE state if it
// changed, then the registers.
func (e *Emulator) finish(st *state, n int, k Kind) (Kind, error) {
	st.advance(n)
	if err := st.commitFPU(); err != nil {
		return KindNone, err
	}
	return k, st.commit()
}

// hasLock reports a LOCK prefix, which makes every instruction the
// emulator executes #UD.
func hasLock(inst *x86asm.Inst) bool {
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if p&0xff == x86asm.PrefixLOCK {
			return true
		}
	}
	return false
}

// commit writes the (changed) registers back.
func (st *state) commit() error {
	if err := st.cpu.SetRegs(st.regs); err != nil {
		return fmt.Errorf("emulate: %w", err)
	}
	return nil
}

// needsMore reports whether b, shorter than 15 bytes, is the beginning of
// a longer instruction: one that decodes when b is followed by zeros. (The
// CPU would fetch the bytes after b, whatever they are.)
func needsMore(b []byte, mode int) bool {
	if len(b) >= maxInsnLen {
		return false
	}
	p := make([]byte, maxInsnLen)
	copy(p, b)
	inst, err := x86asm.Decode(p, mode)
	return err == nil && inst.Op != 0 && inst.Len > len(b)
}

// errTruncated is an instruction that needs more bytes than were fetched.
var errTruncated = errors.New("truncated instruction")

// decodeFailure is what an instruction that cannot be decoded raises. A
// *guestFault (#UD, #GP) is the CPU's answer to the bytes. A truncated
// instruction raises the #PF that stopped the fetch, if one did; with all
// 15 bytes fetched it is longer than the architectural limit (#GP(0));
// otherwise the fetch ran out of guest RAM, and the report says so.
func (st *state) decodeFailure(err error) error {
	if gf, ok := err.(*guestFault); ok {
		return gf
	}
	if errors.Is(err, errTruncated) {
		switch {
		case st.fetchFault != nil:
			return st.fetchFault
		case len(st.bytes) >= maxInsnLen:
			return gpFault("instruction longer than 15 bytes")
		}
		return st.unhandled("cannot decode the instruction: truncated (the fetch stopped at the end of guest RAM)", "")
	}
	return st.unhandled("cannot decode the instruction: "+err.Error(), "")
}

// unhandled builds the report for an instruction the emulator gives up on.
func (st *state) unhandled(reason, hint string) error {
	d, op := disasm(st.bytes, st.mode, st.regs.RIP)
	if hint == "" {
		hint = hintFor(op, st.bytes)
	}
	b := st.bytes
	if st.length > 0 && st.length <= len(b) {
		b = b[:st.length] // only the instruction, not what follows it
	}
	return &UnhandledError{RIP: st.regs.RIP, Bytes: append([]byte(nil), b...), Disasm: d, Reason: reason, Hint: hint}
}

// hintFor suggests how a guest can avoid an instruction.
func hintFor(op x86asm.Op, b []byte) string {
	switch op {
	case x86asm.XRSTOR, x86asm.XRSTOR64, x86asm.XRSTORS, x86asm.XRSTORS64, x86asm.XSAVE, x86asm.XSAVE64,
		x86asm.XSAVEC, x86asm.XSAVEC64, x86asm.XSAVEOPT, x86asm.XSAVEOPT64, x86asm.XSAVES, x86asm.XSAVES64,
		x86asm.XSETBV, x86asm.XGETBV:
		return "boot the guest with noxsave"
	case x86asm.POPCNT:
		return "boot the guest with clearcpuid=popcnt"
	case x86asm.CMPXCHG16B:
		return "boot the guest with clearcpuid=cx16"
	case x86asm.RDRAND:
		return "boot the guest with nordrand (or clearcpuid=rdrand)"
	}
	if len(b) >= 3 && b[0] == 0x0f && b[1] == 0x01 && (b[2] == 0xca || b[2] == 0xcb) {
		return "boot the guest with clearcpuid=smap"
	}
	if _, ok, _ := decodeWide(b, 64); ok {
		return "MOVDIR64B/ENQCMD(S) need an emulated device (a DSA portal) at the destination"
	}
	return "this instruction is not emulated by godvm; report RIP, bytes and disassembly"
}

// disasm renders the instruction in Intel syntax (with names for the ones
// x86asm does not know) and returns x86asm's opcode when it has one.
func disasm(b []byte, mode int, rip uint64) (string, x86asm.Op) {
	if len(b) >= 3 && b[0] == 0x0f && b[1] == 0x01 && (b[2] == 0xca || b[2] == 0xcb) {
		if b[2] == 0xca {
			return "clac", 0
		}
		return "stac", 0
	}
	if w, ok, err := decodeWide(b, mode); ok {
		if err != nil {
			return "0f 38 f8 form not decodable: " + err.Error(), 0
		}
		return w.text(), 0
	}
	inst, err := x86asm.Decode(b, mode)
	if err != nil {
		return "x86asm cannot decode it: " + err.Error(), 0
	}
	if inst.Op == 0 {
		return "unknown to x86asm", 0
	}
	return x86asm.IntelSyntax(inst, rip, nil), inst.Op
}

// regIndex maps an x86asm general-purpose register to its encoding number
// (0 = rAX ... 15 = r15) and width in bits.
func regIndex(r x86asm.Reg) (idx, width int, ok bool) {
	switch {
	case r >= x86asm.AX && r <= x86asm.R15W:
		return int(r - x86asm.AX), 16, true
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return int(r - x86asm.EAX), 32, true
	case r >= x86asm.RAX && r <= x86asm.R15:
		return int(r - x86asm.RAX), 64, true
	}
	return 0, 0, false
}

// gpr returns the register with encoding number idx.
func (st *state) gpr(idx int) *uint64 {
	r := &st.regs
	return [...]*uint64{&r.RAX, &r.RCX, &r.RDX, &r.RBX, &r.RSP, &r.RBP, &r.RSI, &r.RDI,
		&r.R8, &r.R9, &r.R10, &r.R11, &r.R12, &r.R13, &r.R14, &r.R15}[idx&15]
}

func widthMask(bits int) uint64 {
	if bits >= 64 {
		return ^uint64(0)
	}
	return 1<<uint(bits) - 1
}

// regValue reads an x86asm register (general-purpose or instruction
// pointer; nextRIP is the address after the instruction).
func (st *state) regValue(r x86asm.Reg, nextRIP uint64) (uint64, error) {
	switch r {
	case x86asm.RIP:
		return nextRIP, nil
	case x86asm.EIP:
		return uint64(uint32(nextRIP)), nil
	case x86asm.IP:
		return uint64(uint16(nextRIP)), nil
	}
	idx, w, ok := regIndex(r)
	if !ok {
		return 0, fmt.Errorf("register %v not supported in an address", r)
	}
	return *st.gpr(idx) & widthMask(w), nil
}

// memLinear computes a memory operand's linear address: base + index*scale
// + disp, truncated to the address size, plus the segment base (in 64-bit
// mode only FS and GS have one). seg is the segment the operand references
// (SS for an rSP or rBP base without an override), which decides between
// #SS and #GP for an address that is not canonical.
func (st *state) memLinear(m x86asm.Mem, addrSize int, nextRIP uint64) (lin uint64, seg x86asm.Reg, err error) {
	var a uint64
	if m.Base != 0 {
		v, err := st.regValue(m.Base, nextRIP)
		if err != nil {
			return 0, 0, err
		}
		a = v
	}
	if m.Index != 0 {
		v, err := st.regValue(m.Index, nextRIP)
		if err != nil {
			return 0, 0, err
		}
		a += v * uint64(m.Scale)
	}
	a = (a + uint64(m.Disp)) & widthMask(addrSize)
	seg = m.Segment
	if seg == 0 {
		seg = x86asm.DS
		switch m.Base {
		case x86asm.SP, x86asm.BP, x86asm.ESP, x86asm.EBP, x86asm.RSP, x86asm.RBP:
			seg = x86asm.SS
		}
	}
	return st.segLinear(seg, a), seg, nil
}

// segLinear adds a segment's base to an effective address.
func (st *state) segLinear(seg x86asm.Reg, ea uint64) uint64 {
	s := &st.sregs
	if st.mode == 64 {
		switch seg {
		case x86asm.FS:
			return ea + s.FS.Base
		case x86asm.GS:
			return ea + s.GS.Base
		}
		return ea
	}
	var base uint64
	switch seg {
	case x86asm.ES:
		base = s.ES.Base
	case x86asm.CS:
		base = s.CS.Base
	case x86asm.SS:
		base = s.SS.Base
	case x86asm.DS:
		base = s.DS.Base
	case x86asm.FS:
		base = s.FS.Base
	case x86asm.GS:
		base = s.GS.Base
	}
	return uint64(uint32(base + ea))
}

// popcnt emulates POPCNT r, r/m (16, 32 or 64 bits). Flags (SDM): OF, SF,
// ZF, AF, CF and PF are cleared, then ZF is set if the source is zero.
func (e *Emulator) popcnt(st *state, inst *x86asm.Inst) (Kind, error) {
	dst, ok := inst.Args[0].(x86asm.Reg)
	di, dw, ok2 := regIndex(dst)
	if !ok || !ok2 {
		return KindNone, st.unhandled("popcnt with an unexpected destination", "")
	}
	nextRIP := st.regs.RIP + uint64(inst.Len)
	var src uint64
	switch a := inst.Args[1].(type) {
	case x86asm.Reg:
		si, sw, ok := regIndex(a)
		if !ok {
			return KindNone, st.unhandled("popcnt with an unexpected source", "")
		}
		src = *st.gpr(si) & widthMask(sw)
	case x86asm.Mem:
		lin, seg, err := st.memLinear(a, inst.AddrSize, nextRIP)
		if err != nil {
			return KindNone, st.unhandled("popcnt: "+err.Error(), "")
		}
		n := dw / 8
		if err := st.checkCanonical(seg, lin, n); err != nil {
			return KindNone, err
		}
		buf, err := e.readVirt(st, lin, n, access{})
		if err != nil {
			if gf, ok := err.(*guestFault); ok {
				return KindNone, gf
			}
			return KindNone, st.unhandled(fmt.Sprintf("popcnt: reading the source at linear %#x: %v", lin, err), "")
		}
		for i := n - 1; i >= 0; i-- {
			src = src<<8 | uint64(buf[i])
		}
	default:
		return KindNone, st.unhandled("popcnt with an unexpected source", "")
	}
	cnt := uint64(bits.OnesCount64(src))
	r := st.gpr(di)
	switch dw {
	case 64:
		*r = cnt
	case 32:
		*r = cnt // a 32-bit write zero-extends
	case 16:
		*r = *r&^0xffff | cnt
	}
	st.regs.RFLAGS &^= arithFlags
	if src == 0 {
		st.regs.RFLAGS |= flagZF
	}
	st.advance(inst.Len)
	return KindPOPCNT, st.commit()
}
