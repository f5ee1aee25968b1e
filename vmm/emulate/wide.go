package emulate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"godvm/devices/bus"
	"godvm/kvm"
)

// MOVDIR64B (66 0f 38 f8 /r), ENQCMD (f2 ...) and ENQCMDS (f3 ...) are
// unknown to x86asm v0.33.0: it decodes them as a lone prefix. Their
// operands, though, are encoded exactly like LEA's (8d /r): ModRM.reg names
// a register, ModRM.rm with SIB and displacement a memory operand, and the
// address-size (67), segment (in 64-bit mode only FS/GS matter) and REX
// prefixes mean the same. So decodeWide only finds the prefix bytes and the
// three opcode bytes, then hands x86asm an LEA with the same prefixes (minus
// the mandatory 66/f2/f3) and the same ModRM/SIB/displacement bytes, and
// reads the register and memory operand off x86asm's result. No ModRM
// decoding is written here.

// wideInsn is a decoded MOVDIR64B/ENQCMD/ENQCMDS.
type wideInsn struct {
	kind     bus.WideKind
	length   int
	dst      int         // encoding number of the destination-address register
	src      x86asm.Mem  // the 64-byte source
	addrSize int         // 16, 32 or 64
	twin     x86asm.Inst // the LEA decoded in its place (for text)
}

// IA32_PASID (ENQCMD's PASID source) and its valid bit.
const (
	msrIA32PASID   = 0xd93
	pasidValid     = 1 << 31
	pasidMask      = 0xfffff
	enqcmdsKeepMsk = 0x800fffff // ENQCMDS keeps PASID (19:0) and privilege (31)
)

func isLegacyPrefix(c byte) bool {
	switch c {
	case 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3:
		return true
	}
	return false
}

// decodeWide recognises the 0f 38 f8 family. matched is false for any
// other instruction; with matched true, err says why the instruction is
// not a valid MOVDIR64B/ENQCMD/ENQCMDS: a *guestFault for what the CPU
// rejects (#UD for a LOCK prefix or a register operand, #GP(0) for more
// than 15 bytes), errTruncated when the bytes end early, else a plain
// error.
func decodeWide(b []byte, mode int) (w wideInsn, matched bool, err error) {
	i := 0
	var mandatory byte // last f2/f3, else 66
	var has66 bool
	for i < len(b) && i < maxInsnLen && isLegacyPrefix(b[i]) {
		switch b[i] {
		case 0xf2, 0xf3:
			mandatory = b[i]
		case 0x66:
			has66 = true
		}
		i++
	}
	prefixEnd := i
	if mode == 64 && i < len(b) && b[i]&0xf0 == 0x40 {
		i++ // REX
	}
	if len(b) < i+3 || b[i] != 0x0f || b[i+1] != 0x38 || b[i+2] != 0xf8 {
		return w, false, nil
	}
	switch {
	case mandatory == 0xf2:
		w.kind = bus.ENQCMD
	case mandatory == 0xf3:
		w.kind = bus.ENQCMDS
	case has66:
		w.kind = bus.MOVDIR64B
	default:
		return w, true, errors.New("0f 38 f8 without a 66/f2/f3 prefix is undefined")
	}
	// Build the LEA twin: prefixes without 66/f2/f3, REX if any, 8d, ModRM...
	twin := make([]byte, 0, len(b))
	removed := 0
	for _, c := range b[:prefixEnd] {
		if c == 0x66 || c == 0xf2 || c == 0xf3 {
			removed++
			continue
		}
		if c == 0xf0 {
			return w, true, udFault(fmt.Sprintf("LOCK prefix on %v", w.kind))
		}
		twin = append(twin, c)
	}
	if len(b) <= i+3 {
		return w, true, errTruncated // no ModRM
	}
	if b[i+3]>>6 == 3 {
		// The source must be memory. (With f2/f3 and a register operand,
		// CPUs with USER_MSR decode URDMSR/UWRMSR here; godvm does not
		// emulate those, and a CPU without USER_MSR raises #UD too.)
		return w, true, udFault(fmt.Sprintf("%v with a register source operand", w.kind))
	}
	twin = append(twin, b[prefixEnd:i]...)
	twin = append(twin, 0x8d)
	twin = append(twin, b[i+3:]...)
	inst, derr := x86asm.Decode(twin, mode)
	if errors.Is(derr, x86asm.ErrTruncated) {
		return w, true, errTruncated
	}
	if derr != nil || inst.Op != x86asm.LEA {
		return w, true, fmt.Errorf("the operands do not decode (%v)", derr)
	}
	reg, ok := inst.Args[0].(x86asm.Reg)
	mem, ok2 := inst.Args[1].(x86asm.Mem)
	idx, _, ok3 := regIndex(reg)
	if !ok || !ok2 || !ok3 {
		return w, true, errors.New("unexpected operands")
	}
	w.length = inst.Len - 1 + 3 + removed
	if w.length > maxInsnLen {
		return w, true, gpFault(fmt.Sprintf("%v longer than 15 bytes", w.kind))
	}
	w.dst, w.src, w.addrSize = idx, mem, inst.AddrSize
	w.twin = inst
	return w, true, nil
}

// text is the Intel-syntax disassembly: the destination register at
// address size, the source as x86asm prints LEA's memory operand. Built only
// for reports.
func (w *wideInsn) text() string {
	dreg := x86asm.RAX + x86asm.Reg(w.dst)
	switch w.addrSize {
	case 32:
		dreg = x86asm.EAX + x86asm.Reg(w.dst)
	case 16:
		dreg = x86asm.AX + x86asm.Reg(w.dst)
	}
	memText := x86asm.IntelSyntax(w.twin, 0, nil)
	if j := strings.Index(memText, ", "); j >= 0 {
		memText = memText[j+2:]
	}
	memText = strings.Replace(memText, "ptr ", "zmmword ptr ", 1)
	return fmt.Sprintf("%s %s, %s", strings.ToLower(w.kind.String()), strings.ToLower(dreg.String()), memText)
}

// wide emulates MOVDIR64B/ENQCMD/ENQCMDS: 64 bytes from the source memory
// operand go to the device at ES:[dst] with bus.Write64B.
func (e *Emulator) wide(st *state, w wideInsn) (Kind, error) {
	kind := KindMOVDIR64B
	switch w.kind {
	case bus.ENQCMD:
		kind = KindENQCMD
	case bus.ENQCMDS:
		kind = KindENQCMDS
	}
	if w.kind == bus.ENQCMDS && st.cpl() != 0 {
		return KindNone, gpFault("ENQCMDS at CPL > 0")
	}
	nextRIP := st.regs.RIP + uint64(w.length)
	dstEA := *st.gpr(w.dst) & widthMask(w.addrSize)
	dstLin := st.segLinear(x86asm.ES, dstEA)
	if err := st.checkCanonical(x86asm.ES, dstLin, 64); err != nil {
		return KindNone, err
	}
	if dstLin%64 != 0 {
		return KindNone, gpFault(fmt.Sprintf("%v destination %#x not 64-byte aligned", w.kind, dstLin))
	}
	srcLin, seg, err := st.memLinear(w.src, w.addrSize, nextRIP)
	if err != nil {
		return KindNone, st.unhandled(err.Error(), "")
	}
	if err := st.checkCanonical(seg, srcLin, 64); err != nil {
		return KindNone, err
	}
	src, err := e.readVirt(st, srcLin, 64, access{})
	if err != nil {
		if gf, ok := err.(*guestFault); ok {
			return KindNone, gf
		}
		return KindNone, st.unhandled(fmt.Sprintf("%s: reading the 64-byte source at linear %#x: %v", w.kind, srcLin, err), "")
	}
	var data [64]byte
	copy(data[:], src)
	switch w.kind {
	case bus.ENQCMD:
		msr := []kvm.MSREntry{{Index: msrIA32PASID}}
		if err := st.cpu.MSRs(msr); err != nil {
			return KindNone, st.unhandled("ENQCMD: reading IA32_PASID: "+err.Error(), "")
		}
		if msr[0].Data&pasidValid == 0 {
			return KindNone, gpFault("ENQCMD with IA32_PASID not valid")
		}
		// The first dword becomes the PASID from the MSR, privilege 0.
		binary.LittleEndian.PutUint32(data[0:], uint32(msr[0].Data)&pasidMask)
	case bus.ENQCMDS:
		maskENQCMDS(&data)
	}
	// The destination is written: 64 bytes in one page (it is aligned).
	dstGPA, err := e.translate(st, dstLin, access{write: true})
	if err != nil {
		if gf, ok := err.(*guestFault); ok {
			return KindNone, gf
		}
		return KindNone, st.unhandled(fmt.Sprintf("%s: destination linear %#x: %v", w.kind, dstLin, err), "")
	}
	found, accepted := e.store64B(dstGPA, &data, w.kind)
	if !found {
		if w.kind == bus.MOVDIR64B && e.Mem.Contains(dstGPA, 64) {
			// A direct store to ordinary RAM is legal.
			if err := e.Mem.WriteAt(data[:], dstGPA); err != nil {
				return KindNone, st.unhandled(err.Error(), "")
			}
		} else {
			return KindNone, st.unhandled(fmt.Sprintf("%s to guest-physical %#x: no device there", w.kind, dstGPA), "")
		}
	}
	if w.kind != bus.MOVDIR64B {
		st.regs.RFLAGS &^= arithFlags
		if !accepted {
			st.regs.RFLAGS |= flagZF // "retry"
		}
	}
	st.advance(w.length)
	return kind, st.commit()
}

// maskENQCMDS keeps what ENQCMDS takes from the source's first dword: the
// PASID (bits 19:0) and the privilege bit (31); the rest reads as zero at
// the device.
func maskENQCMDS(data *[64]byte) {
	v := binary.LittleEndian.Uint32(data[0:])
	binary.LittleEndian.PutUint32(data[0:], v&enqcmdsKeepMsk)
}

// store64B hands 64 bytes to the MMIO device at a guest-physical address:
// the one seam both the emulated instructions and the paravirtual port
// (pv.go) deliver through. found is false when nothing is mapped there.
func (e *Emulator) store64B(dstGPA uint64, data *[64]byte, kind bus.WideKind) (found, accepted bool) {
	if e.MMIO == nil {
		return false, false
	}
	return e.MMIO.Write64B(dstGPA, data, kind)
}
