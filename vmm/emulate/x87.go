package emulate

import (
	"golang.org/x/arch/x86/x86asm"
)

// x87 instructions. Of the x87, a Linux kernel runs FNINIT (FPU setup,
// kernel_fpu_begin_mask(KFPU_387)), FNSTSW/FNSTCW (the FPU probe),
// FXSAVE/FXRSTOR (every context switch without XSAVE), FNCLEX, EMMS and
// FILD (the AMD FXSAVE-leak workaround), FWAIT; the emulator also runs the
// rest of the x87 state and data-movement instructions: FLDCW, FNSTENV,
// FLDENV, FNSAVE, FRSTOR, FLD/FST/FSTP (32-, 64- and 80-bit memory and
// registers), FILD, FLD1, FLDZ, FXCH, FFREE, FINCSTP, FDECSTP, FNOP. No
// x87 arithmetic.
//
// As on the CPU: #NM with CR0.EM or CR0.TS set; every instruction but the
// "no-wait" ones (FNINIT, FNCLEX, FNSTCW, FNSTSW, FNSTENV, FNSAVE) and
// FXSAVE/FXRSTOR raises #MF while an unmasked exception is pending (FSW.ES,
// checked on this host's CPU); a new exception sets its FSW flag and, if
// unmasked in FCW, ES and B (the #MF comes at the next waiting
// instruction), and masked ones get the SDM's masked response (QNaN
// indefinite for stack faults and invalid operands, infinity or the
// largest number on overflow, denormals on underflow). FOP, FIP and FDP
// record each non-control instruction (Intel's rule; AMD CPUs store them in
// an FXSAVE image only while an exception is pending).

// x87Ops are the x87 instructions emulated.
var x87Ops = map[x86asm.Op]bool{
	x86asm.FNINIT: true, x86asm.FNCLEX: true, x86asm.FNSTCW: true, x86asm.FLDCW: true, x86asm.FNSTSW: true,
	x86asm.FNSTENV: true, x86asm.FLDENV: true, x86asm.FNSAVE: true, x86asm.FRSTOR: true,
	x86asm.FXSAVE: true, x86asm.FXSAVE64: true, x86asm.FXRSTOR: true, x86asm.FXRSTOR64: true, x86asm.EMMS: true,
	x86asm.FLD1: true, x86asm.FLDZ: true, x86asm.FLD: true, x86asm.FILD: true, x86asm.FST: true, x86asm.FSTP: true,
	x86asm.FXCH: true, x86asm.FFREE: true, x86asm.FINCSTP: true, x86asm.FDECSTP: true, x86asm.FNOP: true,
}

// x87NoWait are the instructions that do not raise a pending #MF.
var x87NoWait = map[x86asm.Op]bool{
	x86asm.FNINIT: true, x86asm.FNCLEX: true, x86asm.FNSTCW: true, x86asm.FNSTSW: true, x86asm.FNSTENV: true,
	x86asm.FNSAVE: true, x86asm.FXSAVE: true, x86asm.FXSAVE64: true, x86asm.FXRSTOR: true, x86asm.FXRSTOR64: true,
}

// x87Control are the control instructions, which leave FOP/FIP/FDP alone.
var x87Control = map[x86asm.Op]bool{
	x86asm.FNINIT: true, x86asm.FNCLEX: true, x86asm.FNSTCW: true, x86asm.FLDCW: true, x86asm.FNSTSW: true,
	x86asm.FNSTENV: true, x86asm.FLDENV: true, x86asm.FNSAVE: true, x86asm.FRSTOR: true,
	x86asm.FXSAVE: true, x86asm.FXSAVE64: true, x86asm.FXRSTOR: true, x86asm.FXRSTOR64: true, x86asm.EMMS: true,
}

// stReg is the ST(i) an x86asm register argument names.
func stReg(a x86asm.Arg) (int, bool) {
	r, ok := a.(x86asm.Reg)
	if !ok || r < x86asm.F0 || r > x86asm.F7 {
		return 0, false
	}
	return int(r - x86asm.F0), true
}

// x87 executes one x87 instruction (op in x87Ops).
func (e *Emulator) x87(st *state, inst *x86asm.Inst) (Kind, error) {
	op := inst.Op
	if op == x86asm.FXSAVE || op == x86asm.FXSAVE64 || op == x86asm.FXRSTOR || op == x86asm.FXRSTOR64 {
		return e.fxsave(st, inst)
	}
	if op == x86asm.EMMS {
		if st.sregs.CR0&cr0EM != 0 {
			return KindNone, udFault("EMMS with CR0.EM set")
		}
		if st.sregs.CR0&cr0TS != 0 {
			return KindNone, &guestFault{vector: vectorNM, why: "EMMS with CR0.TS set"}
		}
	} else if err := st.x87Available(); err != nil {
		return KindNone, err
	}
	f, err := st.fpu()
	if err != nil {
		return KindNone, err
	}
	if !x87NoWait[op] {
		if err := pendingMF(f); err != nil {
			return KindNone, err
		}
	}
	var mem memArg
	var hasMem bool
	m, isMem := inst.Args[0].(x86asm.Mem)
	size := inst.MemBytes
	switch op {
	case x86asm.FLD, x86asm.FSTP:
		if size == 0 {
			size = 10 // m80fp: x86asm leaves MemBytes 0
		}
	case x86asm.FNSTENV, x86asm.FLDENV, x86asm.FNSAVE, x86asm.FRSTOR:
		if st.sregs.CR0&1 == 0 {
			return KindNone, st.unhandled("x87 environment in real-mode format not emulated", "")
		}
		size = envSize(inst)
		if op == x86asm.FNSAVE || op == x86asm.FRSTOR {
			size += 80
		}
	}
	if isMem {
		mem, err = st.memOperand(inst, m, size)
		if err != nil {
			return KindNone, err
		}
		hasMem = true
	}
	// A non-control instruction records itself in FOP/FIP/FDP when it
	// completes (an unmasked exception included; not a fault).
	last := func() {}
	if !x87Control[op] {
		i := opcodeAt(st.bytes, st.mode)
		fop := uint16(st.bytes[i]&7)<<8 | uint16(st.bytes[i+1])
		fip := st.regs.RIP
		if st.mode != 64 {
			fip = uint64(uint32(fip))
		}
		last = func() { f.setLast(fop, fip, mem.ea, hasMem) }
	}
	switch op {
	case x86asm.FNINIT:
		f.fninit()
	case x86asm.FNCLEX:
		f.setFSW(f.fsw() &^ (excAll | fswSF | fswES | fswB))
	case x86asm.FNSTCW:
		if err := e.writeData(st, mem.lin, le.AppendUint16(nil, f.fcw())); err != nil {
			return KindNone, err
		}
	case x86asm.FLDCW:
		b, err := e.readData(st, mem.lin, 2)
		if err != nil {
			return KindNone, err
		}
		f.setFCW(le.Uint16(b)&fcwValid | fcwReserved)
		f.recomputeES()
	case x86asm.FNSTSW:
		if !isMem {
			st.regs.RAX = st.regs.RAX&^0xffff | uint64(f.fsw())
		} else if err := e.writeData(st, mem.lin, le.AppendUint16(nil, f.fsw())); err != nil {
			return KindNone, err
		}
	case x86asm.FNSTENV, x86asm.FNSAVE:
		img := e.envImage(st, f, inst)
		if op == x86asm.FNSAVE {
			for i := range 8 {
				v := f.reg((f.top() + i) & 7)
				img = le.AppendUint64(img, v.man)
				img = le.AppendUint16(img, v.se)
			}
		}
		if err := e.writeData(st, mem.lin, img); err != nil {
			return KindNone, err
		}
		if op == x86asm.FNSAVE {
			f.fninit()
		} else {
			f.setFCW(f.fcw() | excAll)
			f.recomputeES()
		}
	case x86asm.FLDENV, x86asm.FRSTOR:
		b, err := e.readData(st, mem.lin, size)
		if err != nil {
			return KindNone, err
		}
		f.loadEnv(b, envSize(inst))
		if op == x86asm.FRSTOR {
			regs := b[envSize(inst):]
			for i := range 8 {
				r := regs[10*i:]
				f.setReg((f.top()+i)&7, ext80{man: le.Uint64(r), se: le.Uint16(r[8:])})
			}
		}
	case x86asm.EMMS:
		// Every tag empty and, as for any MMX instruction (SDM Vol. 1
		// table 9-2), TOP 0.
		f.setFTW(0)
		f.setTop(0)
	case x86asm.FLD1:
		f.load(ext80{man: 1 << 63, se: extBias}, 0)
	case x86asm.FLDZ:
		f.load(ext80{}, 0)
	case x86asm.FLD, x86asm.FILD:
		var v ext80
		var exc uint16
		switch {
		case !isMem:
			i, ok := stReg(inst.Args[0])
			if !ok {
				return KindNone, st.unhandled("fld with an unexpected operand", "")
			}
			// An empty ST(i) is a stack underflow (C1 clear), seen
			// before an overflow (checked on this host's CPU).
			if p := (f.top() + i) & 7; f.empty(p) {
				f.setC1(false)
				if !f.x87Raise(excIE | fswSF) {
					f.push(extIndefinite)
				}
			} else {
				f.load(f.reg(p), 0)
			}
		default:
			b, err := e.readData(st, mem.lin, size)
			if err != nil {
				return KindNone, err
			}
			v, exc = x87LoadValue(op, b)
			f.load(v, exc)
		}
	case x86asm.FST, x86asm.FSTP:
		pop := op == x86asm.FSTP
		if !isMem {
			i, ok := stReg(inst.Args[0])
			if !ok {
				return KindNone, st.unhandled("fst with an unexpected operand", "")
			}
			f.storeReg(i, pop)
			break
		}
		out, ok := f.storeValue(size)
		if out != nil {
			if err := e.writeData(st, mem.lin, out); err != nil {
				return KindNone, err
			}
		}
		if ok && pop {
			f.pop()
		}
	case x86asm.FXCH:
		i, _ := stReg(inst.Args[0])
		if len(inst.Args) > 1 && inst.Args[1] != nil {
			if j, ok := stReg(inst.Args[1]); ok && i == 0 {
				i = j
			}
		}
		f.fxch(i)
	case x86asm.FFREE:
		i, _ := stReg(inst.Args[0])
		f.setTag((f.top()+i)&7, false)
		f.setC1(false) // undefined in the SDM; cleared on this host's CPU
	case x86asm.FINCSTP:
		f.setTop((f.top() + 1) & 7)
		f.setC1(false)
	case x86asm.FDECSTP:
		f.setTop((f.top() - 1) & 7)
		f.setC1(false)
	case x86asm.FNOP:
		// FIP/FOP only.
	}
	last()
	return e.finish(st, inst.Len, KindX87)
}

// load pushes v (with the exceptions exc its conversion raised): on a
// stack overflow (ST7 not empty) IE, SF and C1 instead and, masked, the
// QNaN indefinite; an unmasked exception loads nothing.
func (f *fpuState) load(v ext80, exc uint16) {
	if !f.empty((f.top() - 1) & 7) {
		f.setC1(true)
		if f.x87Raise(excIE | fswSF) {
			return
		}
		f.push(extIndefinite)
		return
	}
	f.setC1(false)
	// An unmasked IE loads nothing; a denormal operand, masked or not,
	// is loaded (normalized) as on this host's CPU.
	if exc != 0 && f.x87Raise(exc) && exc&excIE != 0 {
		return
	}
	f.push(v)
}

// x87LoadValue converts an FLD/FILD memory operand to 80 bits, with the
// exceptions the conversion raises: IE for a 32- or 64-bit SNaN (quieted),
// DE for a 32- or 64-bit denormal. 80-bit values load as they are.
func x87LoadValue(op x86asm.Op, b []byte) (ext80, uint16) {
	if op == x86asm.FILD {
		var v int64
		switch len(b) {
		case 2:
			v = int64(int16(le.Uint16(b)))
		case 4:
			v = int64(int32(le.Uint32(b)))
		default:
			v = int64(le.Uint64(b))
		}
		return packExt(fromInt(v)), 0
	}
	var u unpacked
	switch len(b) {
	case 10:
		return ext80{man: le.Uint64(b), se: le.Uint16(b[8:])}, 0
	case 4:
		u = unpackF(uint64(le.Uint32(b)), fmtF32)
	default:
		u = unpackF(le.Uint64(b), fmtF64)
	}
	var exc uint16
	switch {
	case u.cls == clsSNaN:
		exc = excIE
		u.sig |= 1 << 62
		u.cls = clsQNaN
	case u.denormal:
		exc = excDE
	}
	return packExt(u), exc
}

// storeValue converts ST0 for FST/FSTP to memory (size 4, 8 or 10). It
// returns the bytes to store (nil when an unmasked exception stops the
// store) and whether the instruction completes (FSTP then pops).
func (f *fpuState) storeValue(size int) ([]byte, bool) {
	p := f.top()
	rc := int(f.fcw()>>10) & 3
	put := func(v uint64) []byte {
		if size == 4 {
			return le.AppendUint32(nil, uint32(v))
		}
		return le.AppendUint64(nil, v)
	}
	ft := fmtF64
	if size == 4 {
		ft = fmtF32
	}
	if f.empty(p) { // stack underflow
		f.setC1(false)
		if f.x87Raise(excIE | fswSF) {
			return nil, false
		}
		if size == 10 {
			return append(le.AppendUint64(nil, extIndefinite.man), byte(extIndefinite.se), byte(extIndefinite.se>>8)), true
		}
		return put(ft.defaultNaN()), true
	}
	v := f.reg(p)
	f.setC1(false)
	if size == 10 {
		return append(le.AppendUint64(nil, v.man), byte(v.se), byte(v.se>>8)), true
	}
	u := unpackExt(v)
	var s uint64
	if u.sign {
		s = ft.signBit()
	}
	switch u.cls {
	case clsUnsupported:
		if f.x87Raise(excIE) {
			return nil, false
		}
		return put(ft.defaultNaN()), true
	case clsSNaN:
		if f.x87Raise(excIE) {
			return nil, false
		}
		return put(nanTo(u, ft)), true
	case clsQNaN:
		return put(nanTo(u, ft)), true
	case clsInf:
		return put(s | ft.expMax()<<ft.fracBits()), true
	case clsZero:
		return put(s), true
	}
	r := roundTo(u.sign, u.exp, u.sig, false, ft, rc)
	var exc uint16
	switch {
	case r.overflow:
		exc = excOE | excPE
	case r.tiny && (r.inexact || !f.x87Masked(excUE)):
		exc = excUE
		if r.inexact {
			exc |= excPE
		}
	case r.inexact:
		exc = excPE
	}
	if exc&(excOE|excUE) != 0 && !f.x87Masked(exc&(excOE|excUE)) {
		// An unmasked overflow or underflow stores nothing and does not pop.
		f.x87Raise(exc &^ excPE)
		return nil, false
	}
	f.setC1(r.up)
	if exc != 0 {
		f.x87Raise(exc)
	}
	return put(r.bits), true
}

// storeReg is FST/FSTP ST(i).
func (f *fpuState) storeReg(i int, pop bool) {
	p := f.top()
	dst := (p + i) & 7
	f.setC1(false)
	if f.empty(p) {
		if f.x87Raise(excIE | fswSF) {
			return
		}
		f.setReg(dst, extIndefinite)
		f.setTag(dst, true)
	} else {
		f.setReg(dst, f.reg(p))
		f.setTag(dst, true)
	}
	if pop {
		f.pop()
	}
}

// fxch is FXCH ST(i): an empty register is a stack underflow (IE, SF,
// C1 clear), masked: it reads as the QNaN indefinite.
func (f *fpuState) fxch(i int) {
	a, b := f.top(), (f.top()+i)&7
	f.setC1(false)
	if f.empty(a) || f.empty(b) {
		if f.x87Raise(excIE | fswSF) {
			return
		}
		for _, p := range []int{a, b} {
			if f.empty(p) {
				f.setReg(p, extIndefinite)
				f.setTag(p, true)
			}
		}
	}
	va, vb := f.reg(a), f.reg(b)
	f.setReg(a, vb)
	f.setReg(b, va)
}

// envSize is the size of the x87 environment in protected mode: 28 bytes
// with a 32-bit operand size (64-bit mode's too), 14 with a 16-bit one.
func envSize(inst *x86asm.Inst) int {
	if inst.DataSize == 16 {
		return 14
	}
	return 28
}

// envImage is FNSTENV's image (protected mode; SDM Vol. 1 figures 8-9
// and 8-10). The 32-bit format's unused upper halves read as ones, FIP and
// FDP are their low 32 bits, FCS and FDS the CS and DS selectors.
func (e *Emulator) envImage(st *state, f *fpuState, inst *x86asm.Inst) []byte {
	var tag uint16
	for p := range 8 {
		tag |= f.fullTag(p) << (2 * p)
	}
	fip := le.Uint64(f.b[8:])
	fdp := le.Uint64(f.b[16:])
	fop := le.Uint16(f.b[6:]) & 0x7ff
	cs, ds := st.sregs.CS.Selector, st.sregs.DS.Selector
	var b []byte
	if envSize(inst) == 14 {
		for _, w := range []uint16{f.fcw(), f.fsw(), tag, uint16(fip), cs, uint16(fdp), ds} {
			b = le.AppendUint16(b, w)
		}
		return b
	}
	for _, w := range []uint16{f.fcw(), f.fsw(), tag} {
		b = le.AppendUint32(b, 0xffff_0000|uint32(w))
	}
	b = le.AppendUint32(b, uint32(fip))
	b = le.AppendUint32(b, uint32(cs)|uint32(fop)<<16)
	b = le.AppendUint32(b, uint32(fdp))
	return le.AppendUint32(b, 0xffff_0000|uint32(ds))
}

// loadEnv is FLDENV's (and FRSTOR's) load of an environment image.
func (f *fpuState) loadEnv(b []byte, size int) {
	var fcw, fsw, tag uint16
	var fip, fdp uint64
	var fop uint16
	if size == 14 {
		fcw, fsw, tag = le.Uint16(b), le.Uint16(b[2:]), le.Uint16(b[4:])
		fip, fdp = uint64(le.Uint16(b[6:])), uint64(le.Uint16(b[10:]))
	} else {
		fcw, fsw, tag = le.Uint16(b), le.Uint16(b[4:]), le.Uint16(b[8:])
		fip, fdp = uint64(le.Uint32(b[12:])), uint64(le.Uint32(b[20:]))
		fop = le.Uint16(b[18:]) & 0x7ff
	}
	f.setFCW(fcw&fcwValid | fcwReserved)
	f.setTop(int(fsw>>11) & 7) // the registers keep their values
	f.setFSW(fsw)
	var ftw uint8
	for p := range 8 {
		if tag>>(2*p)&3 != 3 {
			ftw |= 1 << p
		}
	}
	f.setFTW(ftw)
	le.PutUint16(f.b[6:], fop)
	le.PutUint64(f.b[8:], fip)
	le.PutUint64(f.b[16:], fdp)
	f.recomputeES()
}

// fxsave executes FXSAVE/FXSAVE64 and FXRSTOR/FXRSTOR64: the 512-byte image
// at a 16-byte aligned address (#GP(0) otherwise), #NM with CR0.TS or
// CR0.EM. The 32-bit formats hold FIP and FDP's low 32 bits (FCS and FDS
// stored as 0); FXSAVE writes bytes 0-415 (the rest is reserved or the
// software's) and FXRSTOR reads 0-463. With EFER.FFXSR set (AMD's fast FXSAVE/FXRSTOR), 64-bit code at
// CPL0 saves and restores no XMM registers. FXRSTOR raises #GP(0) for an
// MXCSR with bits outside MXCSR_MASK, loads FCW as FLDCW does and derives
// ES and B from the flags and masks (as this host's CPU does).
func (e *Emulator) fxsave(st *state, inst *x86asm.Inst) (Kind, error) {
	if st.sregs.CR0&(cr0EM|cr0TS) != 0 {
		return KindNone, &guestFault{vector: vectorNM, why: "FXSAVE/FXRSTOR with CR0.EM or CR0.TS set"}
	}
	m, ok := inst.Args[0].(x86asm.Mem)
	if !ok {
		return KindNone, udFault("FXSAVE/FXRSTOR with a register operand")
	}
	mem, err := st.memOperand(inst, m, 512)
	if err != nil {
		return KindNone, err
	}
	if mem.lin%16 != 0 {
		return KindNone, alignFault("FXSAVE/FXRSTOR", mem.lin, 16)
	}
	f, err := st.fpu()
	if err != nil {
		return KindNone, err
	}
	wide := inst.Op == x86asm.FXSAVE64 || inst.Op == x86asm.FXRSTOR64
	fast := st.sregs.EFER&eferFFXSR != 0 && st.mode == 64 && st.cpl() == 0
	if inst.Op == x86asm.FXSAVE || inst.Op == x86asm.FXSAVE64 {
		img := append([]byte(nil), f.b[:464]...)
		if !wide {
			le.PutUint64(img[8:], uint64(uint32(le.Uint64(f.b[8:]))))
			le.PutUint64(img[16:], uint64(uint32(le.Uint64(f.b[16:]))))
		}
		le.PutUint16(img[6:], le.Uint16(img[6:])&0x7ff)
		le.PutUint32(img[28:], f.mxcsrMask())
		img = img[:416] // bytes 416-511 are not written
		if fast {
			// The XMM area is not written: keep what memory holds.
			old, err := e.readData(st, mem.lin+160, 256)
			if err != nil {
				return KindNone, err
			}
			copy(img[160:416], old)
		}
		if err := e.writeData(st, mem.lin, img); err != nil {
			return KindNone, err
		}
		return e.finish(st, inst.Len, KindX87)
	}
	img, err := e.readData(st, mem.lin, 464)
	if err != nil {
		return KindNone, err
	}
	mx := le.Uint32(img[24:])
	if mx&^f.mxcsrMask() != 0 {
		return KindNone, gpFault("FXRSTOR of an MXCSR with reserved bits set")
	}
	f.setFCW(le.Uint16(img[0:])&fcwValid | fcwReserved)
	f.setFSW(le.Uint16(img[2:]))
	f.recomputeES() // ES and B follow the flags and masks
	f.setFTW(img[4])
	le.PutUint16(f.b[6:], le.Uint16(img[6:])&0x7ff)
	if wide {
		copy(f.b[8:24], img[8:24])
	} else {
		le.PutUint64(f.b[8:], uint64(le.Uint32(img[8:])))
		le.PutUint64(f.b[16:], uint64(le.Uint32(img[16:])))
	}
	f.setMXCSR(mx)
	copy(f.b[32:160], img[32:160])
	if !fast {
		copy(f.b[160:416], img[160:416])
	}
	return e.finish(st, inst.Len, KindX87)
}
