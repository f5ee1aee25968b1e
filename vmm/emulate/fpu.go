package emulate

import (
	"encoding/binary"
	"fmt"

	"godvm/kvm"
)

// The guest's x87/SSE state. On kvm_pvm hosts, KVM's emulator runs guest
// ring 0 and cannot execute most x87 and SSE instructions (LDMXCSR, which
// kernel_fpu_begin() runs, first of all). godvm boots such guests with
// noxsave, so the architectural state of those instructions is the FXSAVE
// image: FCW, FSW, the tag word, FOP/FIP/FDP, MXCSR, ST0-ST7, XMM0-XMM15.
// The emulator reads it with KVM_GET_XSAVE and writes it back with
// KVM_SET_XSAVE (kvm.XSave), not with KVM_GET/SET_FPU: struct kvm_fpu
// carries no MXCSR, and KVM_SET_FPU does not mark the x87/SSE components
// present in the XSAVE header, so on an XSAVE host a vCPU whose state was
// in its init state ignores it (and KVM_GET_FPU then returns stale bytes).
// The image is read once per emulated instruction that needs it and
// written back only when the instruction changed it, before the registers.

// More exception vectors.
const (
	vectorNM = 7  // device not available: CR0.TS (or CR0.EM for x87)
	vectorMF = 16 // x87 floating-point error, pending from an earlier instruction
	vectorXM = 19 // SIMD floating-point exception (CR4.OSXMMEXCPT set; #UD otherwise)
)

// Control-register bits for the x87/SSE checks.
const (
	cr0MP        = 1 << 1
	cr0EM        = 1 << 2
	cr0TS        = 1 << 3
	cr4OSFXSR    = 1 << 9
	cr4OSXMMEXCP = 1 << 10
	eferFFXSR    = 1 << 14 // AMD fast FXSAVE/FXRSTOR: no XMM at CPL0 in 64-bit mode
)

// x87 status-word bits.
const (
	fswSF  = 1 << 6  // stack fault (with IE)
	fswES  = 1 << 7  // exception summary: an unmasked exception is pending
	fswC0  = 1 << 8  //
	fswC1  = 1 << 9  //
	fswC2  = 1 << 10 //
	fswC3  = 1 << 14 //
	fswB   = 1 << 15 // busy: mirrors ES
	fswTop = 7 << 11 //

	fcwInit     = 0x37f
	fcwReserved = 0x40 // FCW bit 6 reads as 1; bits 7 and 13-15 as 0
	fcwValid    = 0x1f3f

	mxcsrDefaultMask = 0xffbf // MXCSR_MASK when the CPU stores 0 there (SDM 11.6.6)
	mxcsrMM          = 1 << 17
	mxcsrDAZ         = 1 << 6
	mxcsrFTZ         = 1 << 15
)

// fpuState is the FXSAVE image of one vCPU, as KVM_GET_XSAVE returned it.
type fpuState struct {
	x     *kvm.XSave
	b     []byte
	dirty bool
}

var le = binary.LittleEndian

// fpu reads the vCPU's x87/SSE state (once per instruction).
func (st *state) fpu() (*fpuState, error) {
	if st.fp == nil {
		x, err := st.cpu.XSave()
		if err != nil {
			return nil, fmt.Errorf("emulate: reading the guest's x87/SSE state: %w", err)
		}
		st.fp = &fpuState{x: x, b: x.Bytes()}
	}
	return st.fp, nil
}

// commitFPU writes the state back if the instruction changed it, marking
// x87 and SSE present in XSTATE_BV (KVM would load their init state
// otherwise).
func (st *state) commitFPU() error {
	if st.fp == nil || !st.fp.dirty {
		return nil
	}
	b := st.fp.b
	le.PutUint64(b[kvm.XSaveBV:], le.Uint64(b[kvm.XSaveBV:])|3)
	if err := st.cpu.SetXSave(st.fp.x); err != nil {
		return fmt.Errorf("emulate: writing the guest's x87/SSE state: %w", err)
	}
	st.fp.dirty = false
	return nil
}

func (f *fpuState) fcw() uint16       { return le.Uint16(f.b[kvm.FXFCW:]) }
func (f *fpuState) fsw() uint16       { return le.Uint16(f.b[kvm.FXFSW:]) }
func (f *fpuState) ftw() uint8        { return f.b[kvm.FXFTW] }
func (f *fpuState) mxcsr() uint32     { return le.Uint32(f.b[kvm.FXMXCSR:]) }
func (f *fpuState) top() int          { return int(f.fsw()>>11) & 7 }
func (f *fpuState) setFCW(v uint16)   { le.PutUint16(f.b[kvm.FXFCW:], v); f.dirty = true }
func (f *fpuState) setFSW(v uint16)   { le.PutUint16(f.b[kvm.FXFSW:], v); f.dirty = true }
func (f *fpuState) setFTW(v uint8)    { f.b[kvm.FXFTW] = v; f.dirty = true }
func (f *fpuState) setMXCSR(v uint32) { le.PutUint32(f.b[kvm.FXMXCSR:], v); f.dirty = true }

// mxcsrMask is the MXCSR bits this CPU supports.
func (f *fpuState) mxcsrMask() uint32 {
	if m := le.Uint32(f.b[kvm.FXMXCSRMask:]); m != 0 {
		return m
	}
	return mxcsrDefaultMask
}

func (f *fpuState) xmm(i int) (v vec) {
	copy(v[:], f.b[kvm.FXXMM0+16*i:])
	return v
}

func (f *fpuState) setXMM(i int, v vec) {
	copy(f.b[kvm.FXXMM0+16*i:], v[:])
	f.dirty = true
}

// The FXSAVE image holds the x87 registers in stack order (ST0 first);
// the tag bits are per physical register (R0-R7, ST(i) = R[(TOP+i) mod 8]).

// slot is where physical register p is in the image.
func (f *fpuState) slot(p int) []byte {
	s := (p - f.top()) & 7
	return f.b[kvm.FXST0+16*s : kvm.FXST0+16*s+10]
}

func (f *fpuState) reg(p int) ext80 {
	b := f.slot(p)
	return ext80{man: le.Uint64(b), se: le.Uint16(b[8:])}
}

func (f *fpuState) setReg(p int, v ext80) {
	b := f.slot(p)
	le.PutUint64(b, v.man)
	le.PutUint16(b[8:], v.se)
	f.dirty = true
}

func (f *fpuState) empty(p int) bool { return f.ftw()>>p&1 == 0 }

func (f *fpuState) setTag(p int, full bool) {
	t := f.ftw() &^ (1 << p)
	if full {
		t |= 1 << p
	}
	f.setFTW(t)
}

// setTop changes TOP and moves the register image so that every physical
// register keeps its value.
func (f *fpuState) setTop(top int) {
	old := f.top()
	if top == old {
		return
	}
	var regs [8][16]byte
	for s := range regs {
		copy(regs[s][:], f.b[kvm.FXST0+16*s:])
	}
	for p := range 8 {
		copy(f.b[kvm.FXST0+16*((p-top)&7):], regs[(p-old)&7][:])
	}
	f.setFSW(f.fsw()&^fswTop | uint16(top)<<11)
}

// push loads v into the new ST0.
func (f *fpuState) push(v ext80) {
	t := (f.top() - 1) & 7
	f.setTop(t)
	f.setReg(t, v)
	f.setTag(t, true)
}

// pop empties ST0 and increments TOP.
func (f *fpuState) pop() {
	t := f.top()
	f.setTag(t, false)
	f.setTop((t + 1) & 7)
}

// setC1 sets condition code C1 (and clears it for false).
func (f *fpuState) setC1(on bool) {
	s := f.fsw() &^ fswC1
	if on {
		s |= fswC1
	}
	f.setFSW(s)
}

// x87Raise records exceptions in FSW. It reports whether one of them is
// unmasked in FCW: then ES and B are set, and the guest gets #MF at its
// next waiting x87 instruction, as on the CPU.
func (f *fpuState) x87Raise(exc uint16) (unmasked bool) {
	s := f.fsw() | exc
	if exc&^f.fcw()&excAll != 0 {
		s |= fswES | fswB
		unmasked = true
	}
	f.setFSW(s)
	return unmasked
}

// x87Masked reports whether every exception in exc is masked in FCW.
func (f *fpuState) x87Masked(exc uint16) bool { return exc&^f.fcw()&excAll == 0 }

// setLast records a non-control x87 instruction's opcode (the low 3 bits
// of its first opcode byte and its ModRM byte), address and, for one with
// a memory operand, the operand's effective address (FOP, FIP, FDP).
func (f *fpuState) setLast(fop uint16, fip uint64, fdp uint64, hasMem bool) {
	le.PutUint16(f.b[kvm.FXFOP:], fop&0x7ff)
	le.PutUint64(f.b[kvm.FXFIP:], fip)
	if hasMem {
		le.PutUint64(f.b[kvm.FXFDP:], fdp)
	}
	f.dirty = true
}

// fullTag is the 2-bit tag of physical register p as FNSTENV and FNSAVE
// store it: 0 valid, 1 zero, 2 special (NaN, infinity, denormal,
// unsupported), 3 empty.
func (f *fpuState) fullTag(p int) uint16 {
	if f.empty(p) {
		return 3
	}
	v := f.reg(p)
	e := v.se & 0x7fff
	switch {
	case e == 0 && v.man == 0:
		return 1
	case e == 0x7fff || e == 0 || v.man>>63 == 0:
		return 2
	}
	return 0
}

// fninit is the x87 part of FNINIT (and of FNSAVE after the store).
func (f *fpuState) fninit() {
	f.setFCW(fcwInit)
	f.setTop(0)
	f.setFSW(0)
	f.setFTW(0)
	le.PutUint16(f.b[kvm.FXFOP:], 0)
	le.PutUint64(f.b[kvm.FXFIP:], 0)
	le.PutUint64(f.b[kvm.FXFDP:], 0)
}

// recomputeES sets ES and B from the exception flags and masks, as FLDCW,
// FLDENV and FRSTOR leave them.
func (f *fpuState) recomputeES() {
	s := f.fsw() &^ (fswES | fswB)
	if s&^f.fcw()&excAll != 0 {
		s |= fswES | fswB
	}
	f.setFSW(s)
}

// x87Available raises what an x87 instruction raises before it looks at
// any state: #NM with CR0.EM or CR0.TS set.
func (st *state) x87Available() error {
	if st.sregs.CR0&(cr0EM|cr0TS) != 0 {
		return &guestFault{vector: vectorNM, why: "x87 instruction with CR0.EM or CR0.TS set"}
	}
	return nil
}

// sseAvailable: #UD with CR0.EM set or CR4.OSFXSR clear, #NM with CR0.TS.
func (st *state) sseAvailable() error {
	switch {
	case st.sregs.CR0&cr0EM != 0:
		return udFault("SSE instruction with CR0.EM set")
	case st.sregs.CR4&cr4OSFXSR == 0:
		return udFault("SSE instruction with CR4.OSFXSR clear")
	case st.sregs.CR0&cr0TS != 0:
		return &guestFault{vector: vectorNM, why: "SSE instruction with CR0.TS set"}
	}
	return nil
}

// pendingMF is the #MF a waiting x87 instruction raises while an unmasked
// exception is pending (FSW.ES).
func pendingMF(f *fpuState) error {
	if f.fsw()&fswES != 0 {
		return &guestFault{vector: vectorMF, why: fmt.Sprintf("pending unmasked x87 exception (FSW %#x, FCW %#x)", f.fsw(), f.fcw())}
	}
	return nil
}

// simdFault is what an unmasked SIMD floating-point exception raises: #XM
// with CR4.OSXMMEXCPT set, #UD without. MXCSR's flags were already set;
// the fault keeps them (keepFPU).
func (st *state) simdFault(exc uint32) error {
	why := fmt.Sprintf("unmasked SIMD floating-point exception (MXCSR flags %#x)", exc)
	if st.sregs.CR4&cr4OSXMMEXCP == 0 {
		return &guestFault{vector: vectorUD, why: why + " with CR4.OSXMMEXCPT clear", keepFPU: true}
	}
	return &guestFault{vector: vectorXM, why: why, keepFPU: true}
}
