package emulate

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// SSE and SSE2 instructions (legacy-encoded, XMM registers; MMX forms are
// not emulated): what a kernel's SIMD code runs between
// kernel_fpu_begin() and kernel_fpu_end() when its extensions are cleared
// or where KVM cannot execute them, e.g. blake2s_compress_ssse3 (with
// PSHUFB, the one SSSE3 instruction here), raid6 SSE2, the zeroing idioms:
//
//   - LDMXCSR, STMXCSR;
//   - moves: MOVAPS/MOVAPD/MOVDQA, MOVUPS/MOVUPD/MOVDQU, MOVNTPS/MOVNTPD/
//     MOVNTDQ, MOVD/MOVQ to and from general registers and memory, MOVQ
//     xmm<->xmm/m64, MOVSS/MOVSD, MOVLPS/MOVLPD/MOVHPS/MOVHPD, MOVHLPS/
//     MOVLHPS;
//   - bitwise: PAND, PANDN, POR, PXOR and the ANDPS/ANDNPS/ORPS/XORPS (PD)
//     forms;
//   - integer: PADD/PSUB B/W/D/Q, with signed and unsigned saturation,
//     PMULLW, PMULHW, PMULHUW, PMULUDQ, PMADDWD, PAVGB/W, PMINUB, PMAXUB,
//     PMINSW, PMAXSW, PSADBW, PCMPEQ/PCMPGT B/W/D, shifts (PSLL/PSRL W/D/Q,
//     PSRA W/D by register, memory or immediate; PSLLDQ/PSRLDQ);
//   - shuffles and packing: PUNPCKL/H BW/WD/DQ/QDQ, UNPCKL/HPS/PD, PACKSSWB,
//     PACKUSWB, PACKSSDW, PSHUFD, PSHUFLW, PSHUFHW, SHUFPS, SHUFPD, PSHUFB;
//   - PMOVMSKB, MOVMSKPS/PD, PEXTRW, PINSRW;
//   - floating point: CVTSI2SS/CVTSI2SD (32- and 64-bit sources), SQRTSS/
//     SQRTSD, rounded as MXCSR.RC says, DAZ honoured, exceptions flagged in
//     MXCSR and, unmasked, raising #XM (#UD without CR4.OSXMMEXCPT) with
//     the destination unchanged.
//
// As on the CPU: #UD for a LOCK prefix, with CR0.EM set or CR4.OSFXSR
// clear; #NM with CR0.TS set; #GP(0) for a 16-byte memory operand that is
// not aligned, except for the unaligned moves (and, with AMD's MXCSR.MM
// set, except for all but the aligned and non-temporal moves).

// vec is an XMM register's 128 bits, little-endian.
type vec [16]byte

func (v *vec) u16(i int) uint16      { return le.Uint16(v[2*i:]) }
func (v *vec) u32(i int) uint32      { return le.Uint32(v[4*i:]) }
func (v *vec) u64(i int) uint64      { return le.Uint64(v[8*i:]) }
func (v *vec) set16(i int, x uint16) { le.PutUint16(v[2*i:], x) }
func (v *vec) set32(i int, x uint32) { le.PutUint32(v[4*i:], x) }
func (v *vec) set64(i int, x uint64) { le.PutUint64(v[8*i:], x) }

func map8(a, b vec, f func(x, y uint8) uint8) (r vec) {
	for i := range 16 {
		r[i] = f(a[i], b[i])
	}
	return r
}

func map16(a, b vec, f func(x, y uint16) uint16) (r vec) {
	for i := range 8 {
		r.set16(i, f(a.u16(i), b.u16(i)))
	}
	return r
}

func map32(a, b vec, f func(x, y uint32) uint32) (r vec) {
	for i := range 4 {
		r.set32(i, f(a.u32(i), b.u32(i)))
	}
	return r
}

func map64(a, b vec, f func(x, y uint64) uint64) (r vec) {
	for i := range 2 {
		r.set64(i, f(a.u64(i), b.u64(i)))
	}
	return r
}

func satS8(v int) uint8 { return uint8(int8(max(-128, min(127, v)))) }
func satU8(v int) uint8 { return uint8(max(0, min(255, v))) }
func satS16(v int) uint16 {
	return uint16(int16(max(-32768, min(32767, v))))
}
func satU16(v int) uint16 { return uint16(max(0, min(65535, v))) }

func mask8(c bool) uint8 {
	if c {
		return 0xff
	}
	return 0
}
func mask16(c bool) uint16 {
	if c {
		return 0xffff
	}
	return 0
}
func mask32(c bool) uint32 {
	if c {
		return 0xffffffff
	}
	return 0
}

// interleave takes elements of size bytes alternately from a and b,
// starting at the low (high = false) or high half.
func interleave(a, b vec, size int, high bool) (r vec) {
	off := 0
	if high {
		off = 8
	}
	for i := 0; i < 8/size; i++ {
		copy(r[2*i*size:], a[off+i*size:off+(i+1)*size])
		copy(r[(2*i+1)*size:], b[off+i*size:off+(i+1)*size])
	}
	return r
}

// shiftCount is a shift's count: the low 64 bits of the source.
func shiftCount(b vec) uint64 { return b.u64(0) }

// vecOps are the instructions of the form dst = f(dst, src[, imm8]) with
// a 128-bit source (an XMM register or 16-byte aligned memory).
var vecOps = map[x86asm.Op]func(a, b vec, imm uint8) vec{
	x86asm.PAND:   func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x & y }) },
	x86asm.PANDN:  func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return ^x & y }) },
	x86asm.POR:    func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x | y }) },
	x86asm.PXOR:   func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x ^ y }) },
	x86asm.ANDPS:  func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x & y }) },
	x86asm.ANDPD:  func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x & y }) },
	x86asm.ANDNPS: func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return ^x & y }) },
	x86asm.ANDNPD: func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return ^x & y }) },
	x86asm.ORPS:   func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x | y }) },
	x86asm.ORPD:   func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x | y }) },
	x86asm.XORPS:  func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x ^ y }) },
	x86asm.XORPD:  func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x ^ y }) },

	x86asm.PADDB: func(a, b vec, _ uint8) vec { return map8(a, b, func(x, y uint8) uint8 { return x + y }) },
	x86asm.PADDW: func(a, b vec, _ uint8) vec { return map16(a, b, func(x, y uint16) uint16 { return x + y }) },
	x86asm.PADDD: func(a, b vec, _ uint8) vec { return map32(a, b, func(x, y uint32) uint32 { return x + y }) },
	x86asm.PADDQ: func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x + y }) },
	x86asm.PSUBB: func(a, b vec, _ uint8) vec { return map8(a, b, func(x, y uint8) uint8 { return x - y }) },
	x86asm.PSUBW: func(a, b vec, _ uint8) vec { return map16(a, b, func(x, y uint16) uint16 { return x - y }) },
	x86asm.PSUBD: func(a, b vec, _ uint8) vec { return map32(a, b, func(x, y uint32) uint32 { return x - y }) },
	x86asm.PSUBQ: func(a, b vec, _ uint8) vec { return map64(a, b, func(x, y uint64) uint64 { return x - y }) },
	x86asm.PADDSB: func(a, b vec, _ uint8) vec {
		return map8(a, b, func(x, y uint8) uint8 { return satS8(int(int8(x)) + int(int8(y))) })
	},
	x86asm.PADDSW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return satS16(int(int16(x)) + int(int16(y))) })
	},
	x86asm.PSUBSB: func(a, b vec, _ uint8) vec {
		return map8(a, b, func(x, y uint8) uint8 { return satS8(int(int8(x)) - int(int8(y))) })
	},
	x86asm.PSUBSW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return satS16(int(int16(x)) - int(int16(y))) })
	},
	x86asm.PADDUSB: func(a, b vec, _ uint8) vec {
		return map8(a, b, func(x, y uint8) uint8 { return satU8(int(x) + int(y)) })
	},
	x86asm.PADDUSW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return satU16(int(x) + int(y)) })
	},
	x86asm.PSUBUSB: func(a, b vec, _ uint8) vec {
		return map8(a, b, func(x, y uint8) uint8 { return satU8(int(x) - int(y)) })
	},
	x86asm.PSUBUSW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return satU16(int(x) - int(y)) })
	},
	x86asm.PMULLW: func(a, b vec, _ uint8) vec { return map16(a, b, func(x, y uint16) uint16 { return x * y }) },
	x86asm.PMULHW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return uint16(int32(int16(x)) * int32(int16(y)) >> 16) })
	},
	x86asm.PMULHUW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return uint16(uint32(x) * uint32(y) >> 16) })
	},
	x86asm.PMULUDQ: func(a, b vec, _ uint8) vec {
		return map64(a, b, func(x, y uint64) uint64 { return uint64(uint32(x)) * uint64(uint32(y)) })
	},
	x86asm.PMADDWD: func(a, b vec, _ uint8) (r vec) {
		for i := range 4 {
			s := int32(int16(a.u16(2*i)))*int32(int16(b.u16(2*i))) + int32(int16(a.u16(2*i+1)))*int32(int16(b.u16(2*i+1)))
			r.set32(i, uint32(s))
		}
		return r
	},
	x86asm.PAVGB: func(a, b vec, _ uint8) vec {
		return map8(a, b, func(x, y uint8) uint8 { return uint8((uint(x) + uint(y) + 1) >> 1) })
	},
	x86asm.PAVGW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return uint16((uint(x) + uint(y) + 1) >> 1) })
	},
	x86asm.PMINUB: func(a, b vec, _ uint8) vec { return map8(a, b, func(x, y uint8) uint8 { return min(x, y) }) },
	x86asm.PMAXUB: func(a, b vec, _ uint8) vec { return map8(a, b, func(x, y uint8) uint8 { return max(x, y) }) },
	x86asm.PMINSW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return uint16(min(int16(x), int16(y))) })
	},
	x86asm.PMAXSW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return uint16(max(int16(x), int16(y))) })
	},
	x86asm.PSADBW: func(a, b vec, _ uint8) (r vec) {
		for h := range 2 {
			var s uint64
			for i := 8 * h; i < 8*h+8; i++ {
				s += uint64(max(a[i], b[i]) - min(a[i], b[i]))
			}
			r.set64(h, s)
		}
		return r
	},
	x86asm.PCMPEQB: func(a, b vec, _ uint8) vec { return map8(a, b, func(x, y uint8) uint8 { return mask8(x == y) }) },
	x86asm.PCMPEQW: func(a, b vec, _ uint8) vec { return map16(a, b, func(x, y uint16) uint16 { return mask16(x == y) }) },
	x86asm.PCMPEQD: func(a, b vec, _ uint8) vec { return map32(a, b, func(x, y uint32) uint32 { return mask32(x == y) }) },
	x86asm.PCMPGTB: func(a, b vec, _ uint8) vec {
		return map8(a, b, func(x, y uint8) uint8 { return mask8(int8(x) > int8(y)) })
	},
	x86asm.PCMPGTW: func(a, b vec, _ uint8) vec {
		return map16(a, b, func(x, y uint16) uint16 { return mask16(int16(x) > int16(y)) })
	},
	x86asm.PCMPGTD: func(a, b vec, _ uint8) vec {
		return map32(a, b, func(x, y uint32) uint32 { return mask32(int32(x) > int32(y)) })
	},

	x86asm.PUNPCKLBW:  func(a, b vec, _ uint8) vec { return interleave(a, b, 1, false) },
	x86asm.PUNPCKLWD:  func(a, b vec, _ uint8) vec { return interleave(a, b, 2, false) },
	x86asm.PUNPCKLDQ:  func(a, b vec, _ uint8) vec { return interleave(a, b, 4, false) },
	x86asm.PUNPCKLQDQ: func(a, b vec, _ uint8) vec { return interleave(a, b, 8, false) },
	x86asm.PUNPCKHBW:  func(a, b vec, _ uint8) vec { return interleave(a, b, 1, true) },
	x86asm.PUNPCKHWD:  func(a, b vec, _ uint8) vec { return interleave(a, b, 2, true) },
	x86asm.PUNPCKHDQ:  func(a, b vec, _ uint8) vec { return interleave(a, b, 4, true) },
	x86asm.PUNPCKHQDQ: func(a, b vec, _ uint8) vec { return interleave(a, b, 8, true) },
	x86asm.UNPCKLPS:   func(a, b vec, _ uint8) vec { return interleave(a, b, 4, false) },
	x86asm.UNPCKHPS:   func(a, b vec, _ uint8) vec { return interleave(a, b, 4, true) },
	x86asm.UNPCKLPD:   func(a, b vec, _ uint8) vec { return interleave(a, b, 8, false) },
	x86asm.UNPCKHPD:   func(a, b vec, _ uint8) vec { return interleave(a, b, 8, true) },
	x86asm.PACKSSWB: func(a, b vec, _ uint8) (r vec) {
		for i := range 8 {
			r[i] = satS8(int(int16(a.u16(i))))
			r[8+i] = satS8(int(int16(b.u16(i))))
		}
		return r
	},
	x86asm.PACKUSWB: func(a, b vec, _ uint8) (r vec) {
		for i := range 8 {
			r[i] = satU8(int(int16(a.u16(i))))
			r[8+i] = satU8(int(int16(b.u16(i))))
		}
		return r
	},
	x86asm.PACKSSDW: func(a, b vec, _ uint8) (r vec) {
		for i := range 4 {
			r.set16(i, satS16(int(int32(a.u32(i)))))
			r.set16(4+i, satS16(int(int32(b.u32(i)))))
		}
		return r
	},
	x86asm.PSHUFD: func(_, b vec, imm uint8) (r vec) {
		for i := range 4 {
			r.set32(i, b.u32(int(imm>>(2*i)&3)))
		}
		return r
	},
	x86asm.PSHUFLW: func(_, b vec, imm uint8) (r vec) {
		r = b
		for i := range 4 {
			r.set16(i, b.u16(int(imm>>(2*i)&3)))
		}
		return r
	},
	x86asm.PSHUFHW: func(_, b vec, imm uint8) (r vec) {
		r = b
		for i := range 4 {
			r.set16(4+i, b.u16(4+int(imm>>(2*i)&3)))
		}
		return r
	},
	x86asm.SHUFPS: func(a, b vec, imm uint8) (r vec) {
		r.set32(0, a.u32(int(imm&3)))
		r.set32(1, a.u32(int(imm>>2&3)))
		r.set32(2, b.u32(int(imm>>4&3)))
		r.set32(3, b.u32(int(imm>>6&3)))
		return r
	},
	x86asm.SHUFPD: func(a, b vec, imm uint8) (r vec) {
		r.set64(0, a.u64(int(imm&1)))
		r.set64(1, b.u64(int(imm>>1&1)))
		return r
	},
	x86asm.PSHUFB: func(a, b vec, _ uint8) (r vec) {
		for i := range 16 {
			if b[i]&0x80 == 0 {
				r[i] = a[b[i]&15]
			}
		}
		return r
	},

	x86asm.PSLLW: func(a, b vec, _ uint8) vec {
		n := shiftCount(b)
		return map16(a, a, func(x, _ uint16) uint16 { return uint16(uint64(x) << min(n, 16)) })
	},
	x86asm.PSLLD: func(a, b vec, _ uint8) vec {
		n := shiftCount(b)
		return map32(a, a, func(x, _ uint32) uint32 { return uint32(uint64(x) << min(n, 32)) })
	},
	x86asm.PSLLQ: func(a, b vec, _ uint8) vec {
		n := shiftCount(b)
		return map64(a, a, func(x, _ uint64) uint64 {
			if n > 63 {
				return 0
			}
			return x << n
		})
	},
	x86asm.PSRLW: func(a, b vec, _ uint8) vec {
		n := shiftCount(b)
		return map16(a, a, func(x, _ uint16) uint16 { return uint16(uint64(x) >> min(n, 16)) })
	},
	x86asm.PSRLD: func(a, b vec, _ uint8) vec {
		n := shiftCount(b)
		return map32(a, a, func(x, _ uint32) uint32 { return uint32(uint64(x) >> min(n, 32)) })
	},
	x86asm.PSRLQ: func(a, b vec, _ uint8) vec {
		n := shiftCount(b)
		return map64(a, a, func(x, _ uint64) uint64 {
			if n > 63 {
				return 0
			}
			return x >> n
		})
	},
	x86asm.PSRAW: func(a, b vec, _ uint8) vec {
		n := min(shiftCount(b), 15)
		return map16(a, a, func(x, _ uint16) uint16 { return uint16(int16(x) >> n) })
	},
	x86asm.PSRAD: func(a, b vec, _ uint8) vec {
		n := min(shiftCount(b), 31)
		return map32(a, a, func(x, _ uint32) uint32 { return uint32(int32(x) >> n) })
	},
	x86asm.PSLLDQ: func(a, b vec, _ uint8) (r vec) {
		n := int(min(shiftCount(b), 16))
		copy(r[n:], a[:16-n])
		return r
	},
	x86asm.PSRLDQ: func(a, b vec, _ uint8) (r vec) {
		n := int(min(shiftCount(b), 16))
		copy(r[:16-n], a[n:])
		return r
	},
}

// unalignedOK are the instructions whose 16-byte memory operand need not
// be aligned.
var unalignedOK = map[x86asm.Op]bool{x86asm.MOVUPS: true, x86asm.MOVUPD: true, x86asm.MOVDQU: true}

// strictlyAligned are those that need alignment even with AMD's MXCSR.MM.
var strictlyAligned = map[x86asm.Op]bool{
	x86asm.MOVAPS: true, x86asm.MOVAPD: true, x86asm.MOVDQA: true,
	x86asm.MOVNTPS: true, x86asm.MOVNTPD: true, x86asm.MOVNTDQ: true,
}

// sseOps are the other SSE instructions emulated (vecOps apart).
var sseOps = map[x86asm.Op]bool{
	x86asm.LDMXCSR: true, x86asm.STMXCSR: true,
	x86asm.MOVAPS: true, x86asm.MOVAPD: true, x86asm.MOVDQA: true, x86asm.MOVUPS: true, x86asm.MOVUPD: true, x86asm.MOVDQU: true,
	x86asm.MOVNTPS: true, x86asm.MOVNTPD: true, x86asm.MOVNTDQ: true,
	x86asm.MOVD: true, x86asm.MOVQ: true, x86asm.MOVSS: true, x86asm.MOVSD_XMM: true,
	x86asm.MOVLPS: true, x86asm.MOVLPD: true, x86asm.MOVHPS: true, x86asm.MOVHPD: true, x86asm.MOVHLPS: true, x86asm.MOVLHPS: true,
	x86asm.PMOVMSKB: true, x86asm.MOVMSKPS: true, x86asm.MOVMSKPD: true, x86asm.PEXTRW: true, x86asm.PINSRW: true,
	x86asm.CVTSI2SS: true, x86asm.CVTSI2SD: true, x86asm.SQRTSS: true, x86asm.SQRTSD: true,
}

// isSSE reports whether the emulator handles op as an SSE instruction.
func isSSE(op x86asm.Op) bool { return vecOps[op] != nil || sseOps[op] }

// xmmReg is the XMM register an argument names.
func xmmReg(a x86asm.Arg) (int, bool) {
	r, ok := a.(x86asm.Reg)
	if !ok || r < x86asm.X0 || r > x86asm.X15 {
		return 0, false
	}
	return int(r - x86asm.X0), true
}

// hasMMX reports an MMX register operand (the MMX forms are not emulated).
func hasMMX(inst *x86asm.Inst) bool {
	for _, a := range inst.Args {
		if r, ok := a.(x86asm.Reg); ok && r >= x86asm.M0 && r <= x86asm.M7 {
			return true
		}
	}
	return false
}

// sseCtx is one SSE instruction being executed.
type sseCtx struct {
	e    *Emulator
	st   *state
	inst *x86asm.Inst
	f    *fpuState
}

// operand reads an argument of n bytes: an XMM register (its low n
// bytes), a general register, or memory (aligned to 16 if n is 16 and the
// instruction requires it).
func (c *sseCtx) operand(a x86asm.Arg, n int) (vec, error) {
	var v vec
	if i, ok := xmmReg(a); ok {
		v = c.f.xmm(i)
		clear(v[n:])
		return v, nil
	}
	if r, ok := a.(x86asm.Reg); ok {
		idx, _, ok := regIndex(r)
		if !ok {
			return v, c.st.unhandled("unexpected register operand", "")
		}
		le.PutUint64(v[:], *c.st.gpr(idx))
		clear(v[n:])
		return v, nil
	}
	m, ok := a.(x86asm.Mem)
	if !ok {
		return v, c.st.unhandled("unexpected operand", "")
	}
	arg, err := c.mem(m, n)
	if err != nil {
		return v, err
	}
	b, err := c.e.readData(c.st, arg.lin, n)
	if err != nil {
		return v, err
	}
	copy(v[:], b)
	return v, nil
}

// mem computes a memory operand of n bytes and checks its alignment.
func (c *sseCtx) mem(m x86asm.Mem, n int) (memArg, error) {
	arg, err := c.st.memOperand(c.inst, m, n)
	if err != nil {
		return arg, err
	}
	op := c.inst.Op
	if n == 16 && arg.lin%16 != 0 && !unalignedOK[op] && (strictlyAligned[op] || c.f.mxcsr()&mxcsrMM == 0) {
		return arg, alignFault(op.String(), arg.lin, 16)
	}
	return arg, nil
}

// store writes the low n bytes of v to a destination argument: an XMM
// register (merged into its other bytes unless zeroUpper), a general
// register (n 4 or 8: zero-extended to 64 bits), or memory.
func (c *sseCtx) store(a x86asm.Arg, v vec, n int, zeroUpper bool) error {
	if i, ok := xmmReg(a); ok {
		old := c.f.xmm(i)
		if zeroUpper {
			old = vec{}
		}
		copy(old[:n], v[:n])
		c.f.setXMM(i, old)
		return nil
	}
	if r, ok := a.(x86asm.Reg); ok {
		idx, w, ok := regIndex(r)
		if !ok {
			return c.st.unhandled("unexpected register operand", "")
		}
		val := le.Uint64(v[:])
		if w == 32 || n == 4 {
			val = uint64(uint32(val))
		}
		*c.st.gpr(idx) = val
		return nil
	}
	m, ok := a.(x86asm.Mem)
	if !ok {
		return c.st.unhandled("unexpected operand", "")
	}
	arg, err := c.mem(m, n)
	if err != nil {
		return err
	}
	return c.e.writeData(c.st, arg.lin, v[:n])
}

// gprWidth is a general-register argument's width in bytes (0 for
// others).
func gprWidth(a x86asm.Arg) int {
	if r, ok := a.(x86asm.Reg); ok {
		if _, w, ok := regIndex(r); ok {
			return w / 8
		}
	}
	return 0
}

// sse executes one SSE instruction.
func (e *Emulator) sse(st *state, inst *x86asm.Inst) (Kind, error) {
	if hasMMX(inst) {
		return KindNone, st.unhandled("MMX form not emulated", "")
	}
	if err := st.sseAvailable(); err != nil {
		return KindNone, err
	}
	f, err := st.fpu()
	if err != nil {
		return KindNone, err
	}
	c := &sseCtx{e: e, st: st, inst: inst, f: f}
	op := inst.Op
	a0, a1 := inst.Args[0], inst.Args[1]
	var imm uint8
	for _, a := range inst.Args {
		if i, ok := a.(x86asm.Imm); ok {
			imm = uint8(i)
		}
	}
	kind := KindSSE
	if fn := vecOps[op]; fn != nil {
		d, ok := xmmReg(a0)
		if !ok {
			return KindNone, st.unhandled("unexpected destination", "")
		}
		var src vec
		if i, ok := a1.(x86asm.Imm); ok { // shifts by an immediate
			src[0] = uint8(i)
		} else if src, err = c.operand(a1, 16); err != nil {
			return KindNone, err
		}
		f.setXMM(d, fn(f.xmm(d), src, imm))
		return e.finish(st, inst.Len, kind)
	}
	switch op {
	case x86asm.LDMXCSR:
		m, ok := a0.(x86asm.Mem)
		if !ok {
			return KindNone, udFault("LDMXCSR with a register operand")
		}
		arg, err := st.memOperand(inst, m, 4)
		if err != nil {
			return KindNone, err
		}
		b, err := e.readData(st, arg.lin, 4)
		if err != nil {
			return KindNone, err
		}
		v := le.Uint32(b)
		if v&^f.mxcsrMask() != 0 {
			return KindNone, gpFault(fmt.Sprintf("LDMXCSR of %#x: reserved bits (MXCSR_MASK %#x)", v, f.mxcsrMask()))
		}
		f.setMXCSR(v)
		kind = KindLDMXCSR
	case x86asm.STMXCSR:
		m, ok := a0.(x86asm.Mem)
		if !ok {
			return KindNone, udFault("STMXCSR with a register operand")
		}
		arg, err := st.memOperand(inst, m, 4)
		if err != nil {
			return KindNone, err
		}
		if err := e.writeData(st, arg.lin, le.AppendUint32(nil, f.mxcsr())); err != nil {
			return KindNone, err
		}
		kind = KindSTMXCSR
	case x86asm.MOVAPS, x86asm.MOVAPD, x86asm.MOVDQA, x86asm.MOVUPS, x86asm.MOVUPD, x86asm.MOVDQU,
		x86asm.MOVNTPS, x86asm.MOVNTPD, x86asm.MOVNTDQ:
		if _, ok := a0.(x86asm.Mem); !ok {
			if _, ok := xmmReg(a0); !ok {
				return KindNone, st.unhandled("unexpected destination", "")
			}
		}
		v, err := c.operand(a1, 16)
		if err != nil {
			return KindNone, err
		}
		if err := c.store(a0, v, 16, false); err != nil {
			return KindNone, err
		}
	case x86asm.MOVD, x86asm.MOVQ:
		// 66 [REX.W] 0f 6e: xmm <- r/m; 66 [REX.W] 0f 7e: r/m <- xmm;
		// f3 0f 7e: xmm <- xmm/m64; 66 0f d6: xmm/m64 <- xmm. Every
		// XMM destination but a 66 0f d6 store to memory has its upper
		// bytes zeroed.
		n := 4
		if op == x86asm.MOVQ {
			n = 8
		}
		v, err := c.operand(a1, n)
		if err != nil {
			return KindNone, err
		}
		if err := c.store(a0, v, n, true); err != nil {
			return KindNone, err
		}
	case x86asm.MOVSS, x86asm.MOVSD_XMM:
		n := 4
		if op == x86asm.MOVSD_XMM {
			n = 8
		}
		v, err := c.operand(a1, n)
		if err != nil {
			return KindNone, err
		}
		_, fromMem := a1.(x86asm.Mem)
		if err := c.store(a0, v, n, fromMem); err != nil {
			return KindNone, err
		}
	case x86asm.MOVLPS, x86asm.MOVLPD, x86asm.MOVHPS, x86asm.MOVHPD:
		high := op == x86asm.MOVHPS || op == x86asm.MOVHPD
		if m, ok := a0.(x86asm.Mem); ok { // store the half
			s, ok := xmmReg(a1)
			if !ok {
				return KindNone, st.unhandled("unexpected source", "")
			}
			v := f.xmm(s)
			if high {
				copy(v[:8], v[8:])
			}
			arg, err := c.mem(m, 8)
			if err != nil {
				return KindNone, err
			}
			if err := e.writeData(st, arg.lin, v[:8]); err != nil {
				return KindNone, err
			}
			break
		}
		d, ok := xmmReg(a0)
		if !ok {
			return KindNone, st.unhandled("unexpected destination", "")
		}
		v, err := c.operand(a1, 8)
		if err != nil {
			return KindNone, err
		}
		r := f.xmm(d)
		if high {
			copy(r[8:], v[:8])
		} else {
			copy(r[:8], v[:8])
		}
		f.setXMM(d, r)
	case x86asm.MOVHLPS, x86asm.MOVLHPS:
		d, ok1 := xmmReg(a0)
		s, ok2 := xmmReg(a1)
		if !ok1 || !ok2 {
			return KindNone, st.unhandled("unexpected operands", "")
		}
		r, v := f.xmm(d), f.xmm(s)
		if op == x86asm.MOVHLPS {
			copy(r[:8], v[8:])
		} else {
			copy(r[8:], v[:8])
		}
		f.setXMM(d, r)
	case x86asm.PMOVMSKB, x86asm.MOVMSKPS, x86asm.MOVMSKPD:
		s, ok := xmmReg(a1)
		idx, _, ok2 := regIndex(regOf(a0))
		if !ok || !ok2 {
			return KindNone, st.unhandled("unexpected operands", "")
		}
		v := f.xmm(s)
		var m uint64
		step := map[x86asm.Op]int{x86asm.PMOVMSKB: 1, x86asm.MOVMSKPS: 4, x86asm.MOVMSKPD: 8}[op]
		for i := 0; i < 16/step; i++ {
			m |= uint64(v[(i+1)*step-1]>>7) << i
		}
		*st.gpr(idx) = m
	case x86asm.PEXTRW:
		s, ok := xmmReg(a1)
		if !ok {
			return KindNone, st.unhandled("unexpected source", "")
		}
		v := f.xmm(s)
		var r vec
		r.set16(0, v.u16(int(imm&7)))
		n := 2
		if gprWidth(a0) != 0 {
			n = 8 // zero-extended into the whole register
		}
		if err := c.store(a0, r, n, false); err != nil {
			return KindNone, err
		}
	case x86asm.PINSRW:
		d, ok := xmmReg(a0)
		if !ok {
			return KindNone, st.unhandled("unexpected destination", "")
		}
		v, err := c.operand(a1, 2)
		if err != nil {
			return KindNone, err
		}
		r := f.xmm(d)
		r.set16(int(imm&7), v.u16(0))
		f.setXMM(d, r)
	case x86asm.CVTSI2SS, x86asm.CVTSI2SD:
		return c.cvtsi2(op, a0, a1)
	case x86asm.SQRTSS, x86asm.SQRTSD:
		return c.sqrt(op, a0, a1)
	default:
		return KindNone, st.unhandled("instruction not emulated", "")
	}
	return e.finish(st, inst.Len, kind)
}

// regOf is an argument's register (0 if none).
func regOf(a x86asm.Arg) x86asm.Reg {
	r, _ := a.(x86asm.Reg)
	return r
}

// simdResult applies MXCSR's masks to the exceptions an operation raised:
// the flags are set in MXCSR either way; an unmasked one faults (#XM or
// #UD) and the destination is not written.
func (c *sseCtx) simdResult(exc uint32) error {
	mx := c.f.mxcsr()
	if exc != 0 {
		c.f.setMXCSR(mx | exc)
	}
	if exc&^(mx>>7)&excAll != 0 {
		return c.st.simdFault(exc)
	}
	return nil
}

// cvtsi2 is CVTSI2SS/CVTSI2SD: a 32- or 64-bit signed integer to the low
// element, rounded as MXCSR.RC says (PE when inexact).
func (c *sseCtx) cvtsi2(op x86asm.Op, a0, a1 x86asm.Arg) (Kind, error) {
	d, ok := xmmReg(a0)
	if !ok {
		return KindNone, c.st.unhandled("unexpected destination", "")
	}
	n := c.inst.DataSize / 8
	if w := gprWidth(a1); w != 0 {
		n = w
	}
	if n != 8 {
		n = 4
	}
	v, err := c.operand(a1, n)
	if err != nil {
		return KindNone, err
	}
	x := int64(v.u64(0))
	if n == 4 {
		x = int64(int32(v.u32(0)))
	}
	ft, size := fmtF64, 8
	if op == x86asm.CVTSI2SS {
		ft, size = fmtF32, 4
	}
	u := fromInt(x)
	var res uint64
	var exc uint32
	if u.cls == clsFinite {
		r := roundTo(u.sign, u.exp, u.sig, false, ft, int(c.f.mxcsr()>>13)&3)
		res = r.bits
		if r.inexact {
			exc = excPE
		}
	}
	if err := c.simdResult(exc); err != nil {
		return KindNone, err
	}
	var out vec
	out.set64(0, res)
	if err := c.store(x86asm.X0+x86asm.Reg(d), out, size, false); err != nil {
		return KindNone, err
	}
	return c.e.finish(c.st, c.inst.Len, KindSSE)
}

// sqrt is SQRTSS/SQRTSD of the low element: IE (and the default NaN) for
// a negative operand or an SNaN (quieted), a QNaN passed through, DE for
// a denormal operand unless DAZ makes it zero, PE when inexact.
func (c *sseCtx) sqrt(op x86asm.Op, a0, a1 x86asm.Arg) (Kind, error) {
	d, ok := xmmReg(a0)
	if !ok {
		return KindNone, c.st.unhandled("unexpected destination", "")
	}
	ft, size := fmtF64, 8
	if op == x86asm.SQRTSS {
		ft, size = fmtF32, 4
	}
	v, err := c.operand(a1, size)
	if err != nil {
		return KindNone, err
	}
	mx := c.f.mxcsr()
	in := v.u64(0)
	if size == 4 {
		in = uint64(v.u32(0))
	}
	u := unpackF(in, ft)
	if u.denormal && mx&mxcsrDAZ != 0 {
		u = unpacked{cls: clsZero, sign: u.sign}
	}
	var res uint64
	var exc uint32
	sign := uint64(0)
	if u.sign {
		sign = ft.signBit()
	}
	switch {
	case u.cls == clsSNaN:
		exc, res = excIE, nanTo(u, ft)
	case u.cls == clsQNaN:
		res = in
	case u.cls == clsZero:
		res = sign
	case u.sign:
		exc, res = excIE, ft.defaultNaN()
	case u.cls == clsInf:
		res = in
	default:
		if u.denormal {
			exc = excDE
			if exc&^(mx>>7) != 0 { // unmasked: a pre-computation exception
				break
			}
		}
		rexp, rsig, sticky := sqrtSig(u.exp, u.sig)
		r := roundTo(false, rexp, rsig, sticky, ft, int(mx>>13)&3)
		res = r.bits
		if r.inexact {
			exc |= excPE
		}
	}
	if err := c.simdResult(exc); err != nil {
		return KindNone, err
	}
	var out vec
	out.set64(0, res)
	if err := c.store(x86asm.X0+x86asm.Reg(d), out, size, false); err != nil {
		return KindNone, err
	}
	return c.e.finish(c.st, c.inst.Len, KindSSE)
}
