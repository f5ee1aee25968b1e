//go:build linux && amd64

package emulate

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/arch/x86/x86asm"

	"godvm/internal/x86native"
	"godvm/kvm"
)

// The native comparison: every x87 and SSE instruction the emulator
// executes is run on this host's CPU (internal/x86native: the same bytes,
// in an executable page of the test process, between a prologue that loads
// the registers and an FXSAVE image and an epilogue that stores them) and
// on the emulator over a fake vCPU, from the same random state: general
// registers, RFLAGS, FCW/FSW/tags/ST0-ST7, MXCSR (rounding, DAZ/FTZ, masks,
// flags, AMD's MM), XMM0-XMM15 and a memory operand. The results must be
// the same: general registers, flags, the FXSAVE image (FOP/FIP/FDP from an
// FNSTENV after the instruction, as this AMD CPU hides them from FXSAVE
// while no exception is pending) and the memory buffer. An unmasked SIMD
// exception or a pending x87 one, which the CPU raises as SIGFPE (Go
// recovers it), must be #XM or #MF from the emulator, with the same MXCSR
// and FSW.

// nativeBuf is the guest-physical address of the memory operand buffer;
// the native run uses a host buffer at the same offsets.
const (
	nativeBuf     = 0x8000
	nativeBufSize = 1024
	regRSI        = 6
)

// nativeCase is one instruction form.
type nativeCase struct {
	name string
	// code builds the instruction's bytes (memory operands [rsi+disp8]).
	code func(r *rand.Rand) []byte
	// mem fills the buffer (nil: random bytes).
	mem func(r *rand.Rand, b []byte)
	// fx adjusts the random FXSAVE image (nil: as drawn).
	fx func(r *rand.Rand, fx []byte)
	// ignore lists byte ranges of the buffer not compared when the
	// instruction stored FSW (at fswAt, -1: none) without ES set: AMD
	// stores FOP/FIP/FDP in an FXSAVE image only with ES set.
	fxsaveAt int
	// envAt is where an x87 environment is stored in the buffer (-1:
	// none), with its format (14 or 28 bytes): FCS and FDS are not
	// compared (the emulator stores the vCPU's selectors).
	envAt, envSize int
}

// rex is a REX prefix for reg/rm numbers and W (0 when none is needed).
func rex(w bool, reg, rm int) []byte {
	b := byte(0x40)
	if w {
		b |= 8
	}
	if reg >= 8 {
		b |= 4
	}
	if rm >= 8 {
		b |= 1
	}
	if b == 0x40 {
		return nil
	}
	return []byte{b}
}

// sseEnc encodes a legacy SSE instruction: mandatory prefix (0 for none),
// the opcode bytes after 0f, reg field, and rm: a register, or with mem
// [rsi+disp8].
func sseEnc(pfx byte, op []byte, w bool, reg, rm int, mem bool, disp uint8, imm int) []byte {
	var b []byte
	if pfx != 0 {
		b = append(b, pfx)
	}
	if mem {
		b = append(b, rex(w, reg, 0)...)
	} else {
		b = append(b, rex(w, reg, rm)...)
	}
	b = append(b, 0x0f)
	b = append(b, op...)
	if mem {
		b = append(b, 0x40|byte(reg&7)<<3|regRSI, disp)
	} else {
		b = append(b, 0xc0|byte(reg&7)<<3|byte(rm&7))
	}
	if imm >= 0 {
		b = append(b, byte(imm))
	}
	return b
}

// gprs are the general registers a random operand may name (not RSP,
// which the native run cannot load, nor RSI, the buffer pointer).
var gprs = []int{0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// disp is a random displacement into the buffer, a multiple of align,
// leaving room for n bytes.
func disp(r *rand.Rand, align, n int) uint8 {
	return uint8(r.IntN((128-n)/align+1) * align)
}

// vecCase is a dst = f(dst, src) instruction with register and (aligned)
// memory sources.
func vecCase(name string, pfx byte, op []byte, imm bool) nativeCase {
	return nativeCase{name: name, code: func(r *rand.Rand) []byte {
		i := -1
		if imm {
			i = r.IntN(256)
		}
		if r.IntN(2) == 0 {
			return sseEnc(pfx, op, false, r.IntN(16), r.IntN(16), false, 0, i)
		}
		return sseEnc(pfx, op, false, r.IntN(16), 0, true, disp(r, 16, 16), i)
	}}
}

// shiftImmCase is a shift by an immediate (66 0f 71/72/73 /ext ib).
func shiftImmCase(name string, op byte, ext int) nativeCase {
	return nativeCase{name: name, code: func(r *rand.Rand) []byte {
		n := r.IntN(20)
		if r.IntN(4) == 0 {
			n = r.IntN(256)
		}
		return sseEnc(0x66, []byte{op}, false, ext, r.IntN(16), false, 0, n)
	}}
}

// shiftCountMem makes shift counts by register or memory small often:
// a random 64-bit count shifts everything out.
func shiftCountFX(r *rand.Rand, fx []byte) {
	for i := range 16 {
		if r.IntN(2) == 0 {
			binary.LittleEndian.PutUint64(fx[kvm.FXXMM0+16*i:], uint64(r.IntN(70)))
		}
	}
}

func shiftCountMem(r *rand.Rand, b []byte) {
	fillRandom(r, b)
	for i := 0; i < len(b); i += 16 {
		if r.IntN(2) == 0 {
			binary.LittleEndian.PutUint64(b[i:], uint64(r.IntN(70)))
		}
	}
}

func fillRandom(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// Random floating-point values, mostly interesting ones.
func randF64(r *rand.Rand) uint64 {
	s := uint64(r.IntN(2)) << 63
	switch r.IntN(12) {
	case 0:
		return s // zero
	case 1:
		return s | r.Uint64()&(1<<52-1) | 1 // denormal
	case 2:
		return s | 0x7ff<<52 // infinity
	case 3:
		return s | 0x7ff<<52 | 1<<51 | r.Uint64()&(1<<51-1) // QNaN
	case 4:
		return s | 0x7ff<<52 | r.Uint64()&(1<<51-1) | 1 // SNaN
	case 5:
		return s | 1<<52 // smallest normal
	case 6:
		return s | 0x7fe<<52 | 1<<52 - 1 // largest
	case 7:
		return s | uint64(1023+r.IntN(64)-32)<<52 | r.Uint64()&(1<<52-1)
	}
	return r.Uint64()
}

func randF32(r *rand.Rand) uint32 {
	s := uint32(r.IntN(2)) << 31
	switch r.IntN(12) {
	case 0:
		return s
	case 1:
		return s | r.Uint32()&(1<<23-1) | 1
	case 2:
		return s | 0xff<<23
	case 3:
		return s | 0xff<<23 | 1<<22 | r.Uint32()&(1<<22-1)
	case 4:
		return s | 0xff<<23 | r.Uint32()&(1<<22-1) | 1
	case 5:
		return s | 1<<23
	case 6:
		return s | 0xfe<<23 | 1<<23 - 1
	case 7:
		return s | uint32(127+r.IntN(40)-20)<<23 | r.Uint32()&(1<<23-1)
	}
	return r.Uint32()
}

// randExt is a random 80-bit value: every class, including those that
// round to the edges of the 32- and 64-bit formats.
func randExt(r *rand.Rand) ext80 {
	s := uint16(r.IntN(2)) << 15
	m := r.Uint64()
	switch r.IntN(16) {
	case 0:
		return ext80{se: s}
	case 1:
		return ext80{man: m >> 1, se: s} // denormal
	case 2:
		return ext80{man: m | 1<<63, se: s} // pseudo-denormal
	case 3:
		return ext80{man: 1 << 63, se: s | 0x7fff}
	case 4:
		return ext80{man: m | 3<<62, se: s | 0x7fff} // QNaN
	case 5:
		return ext80{man: m&^(1<<62) | 1<<63 | 1, se: s | 0x7fff} // SNaN
	case 6:
		return ext80{man: m &^ (1 << 63), se: s | uint16(1+r.IntN(0x7ffe))} // unnormal
	case 7:
		return ext80{man: m &^ (1 << 63), se: s | 0x7fff} // pseudo-NaN/infinity
	case 8: // around the 64-bit format's range
		return ext80{man: m | 1<<63, se: s | uint16(extBias-1022-60+r.IntN(64))}
	case 9:
		return ext80{man: m | 1<<63, se: s | uint16(extBias+1023-2+r.IntN(4))}
	case 10: // around the 32-bit format's
		return ext80{man: m | 1<<63, se: s | uint16(extBias-126-30+r.IntN(34))}
	case 11:
		return ext80{man: m | 1<<63, se: s | uint16(extBias+127-2+r.IntN(4))}
	case 12: // exactly representable, or halfway
		return ext80{man: (m|1<<63)&^(1<<11-1) | uint64(r.IntN(2))<<10, se: s | uint16(extBias+r.IntN(40)-20)}
	}
	return ext80{man: m | 1<<63, se: s | uint16(extBias+r.IntN(200)-100)}
}

func putExt(b []byte, v ext80) {
	binary.LittleEndian.PutUint64(b, v.man)
	binary.LittleEndian.PutUint16(b[8:], v.se)
}

// hostMXCSRMask is MXCSR_MASK on this CPU.
var hostMXCSRMask = func() uint32 {
	var in x86native.State
	binary.LittleEndian.PutUint16(in.FX[0:], 0x37f)
	binary.LittleEndian.PutUint32(in.FX[24:], 0x1f80)
	out, err := x86native.Run(nil, &in)
	if err != nil {
		panic(err)
	}
	if m := binary.LittleEndian.Uint32(out.FX[28:]); m != 0 {
		return m
	}
	return mxcsrDefaultMask
}()

// randFX is a random FXSAVE image: x87 state with any TOP, tags, flags and
// values; MXCSR valid for this CPU, usually with every exception masked
// (an unmasked one is tested too: SIGFPE natively, #XM emulated).
func randFX(r *rand.Rand, fx []byte) {
	clear(fx)
	le := binary.LittleEndian
	fcw := uint16(0x40 | r.IntN(0x2000)&0x1f3f)
	if r.IntN(3) != 0 {
		fcw |= 0x3f
	}
	le.PutUint16(fx[0:], fcw)
	// FXRSTOR derives ES and B from the flags and masks: only such
	// status words are states a vCPU can be in.
	fsw := uint16(r.IntN(0x10000)) &^ (fswES | fswB)
	if r.IntN(3) != 0 { // usually nothing pending
		fsw &^= excAll &^ fcw
	}
	if fsw&^fcw&excAll != 0 {
		fsw |= fswES | fswB
	}
	le.PutUint16(fx[2:], fsw)
	fx[4] = byte(r.IntN(256))
	le.PutUint16(fx[6:], uint16(r.IntN(0x800)))
	le.PutUint64(fx[8:], r.Uint64()&0xffff_ffff_fff0)
	le.PutUint64(fx[16:], r.Uint64()&0xffff_ffff_fff0)
	mx := uint32(0x1f80 | r.IntN(0x10000)&0xe07f)
	if r.IntN(4) == 0 {
		mx = uint32(r.IntN(0x10000))
	}
	if r.IntN(4) == 0 {
		mx |= mxcsrMM
	}
	le.PutUint32(fx[24:], mx&hostMXCSRMask)
	le.PutUint32(fx[28:], hostMXCSRMask)
	for i := range 8 {
		putExt(fx[32+16*i:], randExt(r))
	}
	for i := range 16 {
		for j := 0; j < 16; j += 8 {
			v := r.Uint64()
			switch r.IntN(4) {
			case 0:
				v = randF64(r)
			case 1:
				v = uint64(randF32(r)) | uint64(randF32(r))<<32
			}
			le.PutUint64(fx[160+16*i+j:], v)
		}
	}
}

// x87Case is an x87 instruction with fixed bytes, or with a memory
// operand [rsi+disp8] (modrm's reg field ext).
func x87Fixed(name string, b ...byte) nativeCase {
	return nativeCase{name: name, code: func(*rand.Rand) []byte { return b }}
}

func x87Mem(name string, pfx []byte, op byte, ext int, align, n int, mem func(r *rand.Rand, b []byte)) nativeCase {
	return nativeCase{name: name, mem: mem, code: func(r *rand.Rand) []byte {
		b := append([]byte(nil), pfx...)
		return append(b, op, 0x40|byte(ext)<<3|regRSI, disp(r, align, n))
	}}
}

func x87Reg(name string, op, base byte) nativeCase {
	return nativeCase{name: name, code: func(r *rand.Rand) []byte { return []byte{op, base + byte(r.IntN(8))} }}
}

// memOf fills the buffer with values of a kind.
func memF32(r *rand.Rand, b []byte) {
	for i := 0; i+4 <= len(b); i += 4 {
		binary.LittleEndian.PutUint32(b[i:], randF32(r))
	}
}

func memF64(r *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], randF64(r))
	}
}

func memExt(r *rand.Rand, b []byte) {
	for i := 0; i+10 <= len(b); i += 10 {
		putExt(b[i:], randExt(r))
	}
}

// memMXCSR fills the buffer with dwords that are valid MXCSR values.
func memMXCSR(r *rand.Rand, b []byte) {
	for i := 0; i+4 <= len(b); i += 4 {
		binary.LittleEndian.PutUint32(b[i:], uint32(r.IntN(0x40000))&hostMXCSRMask)
	}
}

// memFX fills the buffer with FXSAVE images (valid MXCSR at each 16-byte
// offset's +24) and environments.
func memFX(r *rand.Rand, b []byte) {
	fillRandom(r, b)
	if r.IntN(2) == 0 { // register images that are numbers of every class
		for i := 0; i+10 <= len(b); i += 10 {
			putExt(b[i:], randExt(r))
		}
	}
	for i := 0; i+32 <= len(b); i += 16 {
		binary.LittleEndian.PutUint32(b[i+24:], uint32(r.IntN(0x40000))&hostMXCSRMask)
	}
}

func nativeCases() []nativeCase {
	cs := []nativeCase{
		x87Fixed("fninit", 0xdb, 0xe3),
		x87Fixed("fnclex", 0xdb, 0xe2),
		x87Mem("fnstcw", nil, 0xd9, 7, 1, 2, nil),
		x87Mem("fldcw", nil, 0xd9, 5, 1, 2, nil),
		x87Fixed("fnstsw ax", 0xdf, 0xe0),
		x87Mem("fnstsw m16", nil, 0xdd, 7, 1, 2, nil),
		x87Fixed("emms", 0x0f, 0x77),
		x87Fixed("fld1", 0xd9, 0xe8),
		x87Fixed("fldz", 0xd9, 0xee),
		x87Mem("fld m32", nil, 0xd9, 0, 1, 4, memF32),
		x87Mem("fld m64", nil, 0xdd, 0, 1, 8, memF64),
		x87Mem("fld m80", nil, 0xdb, 5, 1, 10, memExt),
		x87Reg("fld st(i)", 0xd9, 0xc0),
		x87Mem("fild m16", nil, 0xdf, 0, 1, 2, nil),
		x87Mem("fild m32", nil, 0xdb, 0, 1, 4, nil),
		x87Mem("fild m64", nil, 0xdf, 5, 1, 8, nil),
		x87Mem("fst m32", nil, 0xd9, 2, 1, 4, nil),
		x87Mem("fst m64", nil, 0xdd, 2, 1, 8, nil),
		x87Mem("fstp m32", nil, 0xd9, 3, 1, 4, nil),
		x87Mem("fstp m64", nil, 0xdd, 3, 1, 8, nil),
		x87Mem("fstp m80", nil, 0xdb, 7, 1, 10, nil),
		x87Reg("fst st(i)", 0xdd, 0xd0),
		x87Reg("fstp st(i)", 0xdd, 0xd8),
		x87Reg("fxch", 0xd9, 0xc8),
		x87Reg("ffree", 0xdd, 0xc0),
		x87Fixed("fincstp", 0xd9, 0xf7),
		x87Fixed("fdecstp", 0xd9, 0xf6),
		x87Fixed("fnop", 0xd9, 0xd0),
		x87Fixed("fwait", 0x9b),
		{name: "fnstenv", envAt: 0, envSize: 28, fxsaveAt: -1, code: func(*rand.Rand) []byte { return []byte{0xd9, 0x76, 0x00} }},
		{name: "fnstenv16", envAt: 0, envSize: 14, fxsaveAt: -1, code: func(*rand.Rand) []byte { return []byte{0x66, 0xd9, 0x76, 0x00} }},
		{name: "fnsave", envAt: 0, envSize: 28, fxsaveAt: -1, code: func(*rand.Rand) []byte { return []byte{0xdd, 0x76, 0x00} }},
		{name: "fnsave16", envAt: 0, envSize: 14, fxsaveAt: -1, code: func(*rand.Rand) []byte { return []byte{0x66, 0xdd, 0x76, 0x00} }},
		x87Mem("fldenv", nil, 0xd9, 4, 4, 28, memFX),
		x87Mem("fldenv16", []byte{0x66}, 0xd9, 4, 2, 14, memFX),
		x87Mem("frstor", nil, 0xdd, 4, 4, 108, memFX),
		x87Mem("frstor16", []byte{0x66}, 0xdd, 4, 2, 94, memFX),
		{name: "fxsave", fxsaveAt: 0, envAt: -1, code: func(*rand.Rand) []byte { return []byte{0x0f, 0xae, 0x46, 0x00} }},
		{name: "fxsave64", fxsaveAt: 0, envAt: -1, code: func(*rand.Rand) []byte { return []byte{0x48, 0x0f, 0xae, 0x46, 0x00} }},
		{name: "fxrstor", mem: memFX, code: func(r *rand.Rand) []byte { return []byte{0x0f, 0xae, 0x4e, byte(16 * r.IntN(8))} }},
		{name: "fxrstor64", mem: memFX, code: func(r *rand.Rand) []byte { return []byte{0x48, 0x0f, 0xae, 0x4e, byte(16 * r.IntN(8))} }},

		x87Mem("ldmxcsr", nil, 0x0f, 2, 4, 4, memMXCSR),
		x87Mem("stmxcsr", nil, 0x0f, 3, 1, 4, nil),
	}
	// ldmxcsr/stmxcsr are 0f ae /2, /3: fix the opcode.
	for i := range cs {
		if cs[i].name == "ldmxcsr" || cs[i].name == "stmxcsr" {
			ext := 2
			if cs[i].name == "stmxcsr" {
				ext = 3
			}
			mem := cs[i].mem
			cs[i] = nativeCase{name: cs[i].name, mem: mem, code: func(r *rand.Rand) []byte {
				return []byte{0x0f, 0xae, 0x40 | byte(ext)<<3 | regRSI, disp(r, 4, 4)}
			}}
		}
	}
	vec := []struct {
		name string
		pfx  byte
		op   []byte
		imm  bool
	}{
		{"pand", 0x66, []byte{0xdb}, false}, {"pandn", 0x66, []byte{0xdf}, false}, {"por", 0x66, []byte{0xeb}, false},
		{"pxor", 0x66, []byte{0xef}, false}, {"andps", 0, []byte{0x54}, false}, {"andpd", 0x66, []byte{0x54}, false},
		{"andnps", 0, []byte{0x55}, false}, {"andnpd", 0x66, []byte{0x55}, false}, {"orps", 0, []byte{0x56}, false},
		{"orpd", 0x66, []byte{0x56}, false}, {"xorps", 0, []byte{0x57}, false}, {"xorpd", 0x66, []byte{0x57}, false},
		{"paddb", 0x66, []byte{0xfc}, false}, {"paddw", 0x66, []byte{0xfd}, false}, {"paddd", 0x66, []byte{0xfe}, false},
		{"paddq", 0x66, []byte{0xd4}, false}, {"psubb", 0x66, []byte{0xf8}, false}, {"psubw", 0x66, []byte{0xf9}, false},
		{"psubd", 0x66, []byte{0xfa}, false}, {"psubq", 0x66, []byte{0xfb}, false}, {"paddsb", 0x66, []byte{0xec}, false},
		{"paddsw", 0x66, []byte{0xed}, false}, {"psubsb", 0x66, []byte{0xe8}, false}, {"psubsw", 0x66, []byte{0xe9}, false},
		{"paddusb", 0x66, []byte{0xdc}, false}, {"paddusw", 0x66, []byte{0xdd}, false}, {"psubusb", 0x66, []byte{0xd8}, false},
		{"psubusw", 0x66, []byte{0xd9}, false}, {"pmullw", 0x66, []byte{0xd5}, false}, {"pmulhw", 0x66, []byte{0xe5}, false},
		{"pmulhuw", 0x66, []byte{0xe4}, false}, {"pmuludq", 0x66, []byte{0xf4}, false}, {"pmaddwd", 0x66, []byte{0xf5}, false},
		{"pavgb", 0x66, []byte{0xe0}, false}, {"pavgw", 0x66, []byte{0xe3}, false}, {"pminub", 0x66, []byte{0xda}, false},
		{"pmaxub", 0x66, []byte{0xde}, false}, {"pminsw", 0x66, []byte{0xea}, false}, {"pmaxsw", 0x66, []byte{0xee}, false},
		{"psadbw", 0x66, []byte{0xf6}, false}, {"pcmpeqb", 0x66, []byte{0x74}, false}, {"pcmpeqw", 0x66, []byte{0x75}, false},
		{"pcmpeqd", 0x66, []byte{0x76}, false}, {"pcmpgtb", 0x66, []byte{0x64}, false}, {"pcmpgtw", 0x66, []byte{0x65}, false},
		{"pcmpgtd", 0x66, []byte{0x66}, false}, {"punpcklbw", 0x66, []byte{0x60}, false}, {"punpcklwd", 0x66, []byte{0x61}, false},
		{"punpckldq", 0x66, []byte{0x62}, false}, {"punpcklqdq", 0x66, []byte{0x6c}, false}, {"punpckhbw", 0x66, []byte{0x68}, false},
		{"punpckhwd", 0x66, []byte{0x69}, false}, {"punpckhdq", 0x66, []byte{0x6a}, false}, {"punpckhqdq", 0x66, []byte{0x6d}, false},
		{"unpcklps", 0, []byte{0x14}, false}, {"unpckhps", 0, []byte{0x15}, false}, {"unpcklpd", 0x66, []byte{0x14}, false},
		{"unpckhpd", 0x66, []byte{0x15}, false}, {"packsswb", 0x66, []byte{0x63}, false}, {"packuswb", 0x66, []byte{0x67}, false},
		{"packssdw", 0x66, []byte{0x6b}, false}, {"pshufd", 0x66, []byte{0x70}, true}, {"pshuflw", 0xf2, []byte{0x70}, true},
		{"pshufhw", 0xf3, []byte{0x70}, true}, {"shufps", 0, []byte{0xc6}, true}, {"shufpd", 0x66, []byte{0xc6}, true},
		{"pshufb", 0x66, []byte{0x38, 0x00}, false},
	}
	for _, v := range vec {
		cs = append(cs, vecCase(v.name, v.pfx, v.op, v.imm))
	}
	for _, s := range []struct {
		name string
		op   byte
	}{{"psrlw", 0xd1}, {"psrld", 0xd2}, {"psrlq", 0xd3}, {"psraw", 0xe1}, {"psrad", 0xe2}, {"psllw", 0xf1}, {"pslld", 0xf2}, {"psllq", 0xf3}} {
		c := vecCase(s.name, 0x66, []byte{s.op}, false)
		c.fx, c.mem = func(r *rand.Rand, fx []byte) { shiftCountFX(r, fx) }, shiftCountMem
		cs = append(cs, c)
	}
	for _, s := range []struct {
		name string
		op   byte
		ext  int
	}{{"psrlw imm", 0x71, 2}, {"psraw imm", 0x71, 4}, {"psllw imm", 0x71, 6}, {"psrld imm", 0x72, 2}, {"psrad imm", 0x72, 4},
		{"pslld imm", 0x72, 6}, {"psrlq imm", 0x73, 2}, {"psrldq", 0x73, 3}, {"psllq imm", 0x73, 6}, {"pslldq", 0x73, 7}} {
		cs = append(cs, shiftImmCase(s.name, s.op, s.ext))
	}
	// Moves: loads (reg or memory source; aligned for the A forms) and
	// stores.
	move := func(name string, pfx byte, load, store byte, align int) {
		cs = append(cs, nativeCase{name: name + " load", code: func(r *rand.Rand) []byte {
			if r.IntN(2) == 0 {
				return sseEnc(pfx, []byte{load}, false, r.IntN(16), r.IntN(16), false, 0, -1)
			}
			return sseEnc(pfx, []byte{load}, false, r.IntN(16), 0, true, disp(r, align, 16), -1)
		}})
		if store != 0 {
			cs = append(cs, nativeCase{name: name + " store", code: func(r *rand.Rand) []byte {
				if r.IntN(3) == 0 && load != 0 && store != 0x2b && store != 0xe7 {
					return sseEnc(pfx, []byte{store}, false, r.IntN(16), r.IntN(16), false, 0, -1)
				}
				return sseEnc(pfx, []byte{store}, false, r.IntN(16), 0, true, disp(r, align, 16), -1)
			}})
		}
	}
	move("movaps", 0, 0x28, 0x29, 16)
	move("movapd", 0x66, 0x28, 0x29, 16)
	move("movups", 0, 0x10, 0x11, 1)
	move("movupd", 0x66, 0x10, 0x11, 1)
	move("movdqa", 0x66, 0x6f, 0x7f, 16)
	move("movdqu", 0xf3, 0x6f, 0x7f, 1)
	for _, nt := range []struct {
		name string
		pfx  byte
		op   byte
	}{{"movntps", 0, 0x2b}, {"movntpd", 0x66, 0x2b}, {"movntdq", 0x66, 0xe7}} {
		cs = append(cs, nativeCase{name: nt.name, code: func(r *rand.Rand) []byte {
			return sseEnc(nt.pfx, []byte{nt.op}, false, r.IntN(16), 0, true, disp(r, 16, 16), -1)
		}})
	}
	// Scalar and partial moves: register or unaligned memory forms.
	partial := func(name string, pfx byte, op byte, w bool, regForm bool, n int, gpr bool) {
		cs = append(cs, nativeCase{name: name, code: func(r *rand.Rand) []byte {
			if regForm && r.IntN(2) == 0 {
				rm := r.IntN(16)
				if gpr {
					rm = gprs[r.IntN(len(gprs))]
				}
				return sseEnc(pfx, []byte{op}, w, r.IntN(16), rm, false, 0, -1)
			}
			return sseEnc(pfx, []byte{op}, w, r.IntN(16), 0, true, disp(r, 1, n), -1)
		}})
	}
	partial("movd xmm<-r/m32", 0x66, 0x6e, false, true, 4, true)
	partial("movd r/m32<-xmm", 0x66, 0x7e, false, true, 4, true)
	partial("movq xmm<-r/m64", 0x66, 0x6e, true, true, 8, true)
	partial("movq r/m64<-xmm", 0x66, 0x7e, true, true, 8, true)
	partial("movq xmm<-xmm/m64", 0xf3, 0x7e, false, true, 8, false)
	partial("movq xmm/m64<-xmm", 0x66, 0xd6, false, true, 8, false)
	partial("movss load", 0xf3, 0x10, false, true, 4, false)
	partial("movss store", 0xf3, 0x11, false, true, 4, false)
	partial("movsd load", 0xf2, 0x10, false, true, 8, false)
	partial("movsd store", 0xf2, 0x11, false, true, 8, false)
	partial("movlps/movhlps", 0, 0x12, false, true, 8, false)
	partial("movlps store", 0, 0x13, false, false, 8, false)
	partial("movhps/movlhps", 0, 0x16, false, true, 8, false)
	partial("movhps store", 0, 0x17, false, false, 8, false)
	partial("movlpd", 0x66, 0x12, false, false, 8, false)
	partial("movlpd store", 0x66, 0x13, false, false, 8, false)
	partial("movhpd", 0x66, 0x16, false, false, 8, false)
	partial("movhpd store", 0x66, 0x17, false, false, 8, false)
	for _, m := range []struct {
		name string
		pfx  byte
		op   byte
		w    bool
	}{{"pmovmskb", 0x66, 0xd7, false}, {"pmovmskb r64", 0x66, 0xd7, true}, {"movmskps", 0, 0x50, false}, {"movmskpd", 0x66, 0x50, false}} {
		cs = append(cs, nativeCase{name: m.name, code: func(r *rand.Rand) []byte {
			return sseEnc(m.pfx, []byte{m.op}, m.w, gprs[r.IntN(len(gprs))], r.IntN(16), false, 0, -1)
		}})
	}
	cs = append(cs, nativeCase{name: "pextrw", code: func(r *rand.Rand) []byte {
		return sseEnc(0x66, []byte{0xc5}, r.IntN(2) == 0, gprs[r.IntN(len(gprs))], r.IntN(16), false, 0, r.IntN(256))
	}}, nativeCase{name: "pinsrw", code: func(r *rand.Rand) []byte {
		if r.IntN(2) == 0 {
			return sseEnc(0x66, []byte{0xc4}, false, r.IntN(16), gprs[r.IntN(len(gprs))], false, 0, r.IntN(256))
		}
		return sseEnc(0x66, []byte{0xc4}, false, r.IntN(16), 0, true, disp(r, 1, 2), r.IntN(256))
	}})
	for _, cv := range []struct {
		name string
		pfx  byte
		w    bool
		n    int
	}{{"cvtsi2ss r32", 0xf3, false, 4}, {"cvtsi2ss r64", 0xf3, true, 8}, {"cvtsi2sd r32", 0xf2, false, 4}, {"cvtsi2sd r64", 0xf2, true, 8}} {
		cs = append(cs, nativeCase{name: cv.name, code: func(r *rand.Rand) []byte {
			if r.IntN(2) == 0 {
				return sseEnc(cv.pfx, []byte{0x2a}, cv.w, r.IntN(16), gprs[r.IntN(len(gprs))], false, 0, -1)
			}
			return sseEnc(cv.pfx, []byte{0x2a}, cv.w, r.IntN(16), 0, true, disp(r, 1, cv.n), -1)
		}})
	}
	cs = append(cs, nativeCase{name: "sqrtss", mem: memF32, code: func(r *rand.Rand) []byte {
		if r.IntN(2) == 0 {
			return sseEnc(0xf3, []byte{0x51}, false, r.IntN(16), r.IntN(16), false, 0, -1)
		}
		return sseEnc(0xf3, []byte{0x51}, false, r.IntN(16), 0, true, disp(r, 4, 4), -1)
	}}, nativeCase{name: "sqrtsd", mem: memF64, code: func(r *rand.Rand) []byte {
		if r.IntN(2) == 0 {
			return sseEnc(0xf2, []byte{0x51}, false, r.IntN(16), r.IntN(16), false, 0, -1)
		}
		return sseEnc(0xf2, []byte{0x51}, false, r.IntN(16), 0, true, disp(r, 8, 8), -1)
	}})
	for i := range cs {
		if cs[i].envAt == 0 && cs[i].envSize == 0 {
			cs[i].envAt = -1
		}
		if cs[i].fxsaveAt == 0 && !bytes.HasPrefix([]byte(cs[i].name), []byte("fxsave")) {
			cs[i].fxsaveAt = -1
		}
	}
	return cs
}

// alignedBuf is a 64-byte aligned host buffer.
func alignedBuf(n int) []byte {
	raw := make([]byte, n+64)
	off := (64 - int(uintptr(unsafe.Pointer(&raw[0]))%64)) % 64
	return raw[off : off+n]
}

// compareOne runs one random instance of c natively and emulated and
// reports the differences ("" when there are none).
func compareOne(t testing.TB, c nativeCase, r *rand.Rand) string {
	code := c.code(r)
	var in x86native.State
	randFX(r, in.FX[:])
	if c.fx != nil {
		c.fx(r, in.FX[:])
	}
	for i := range in.GPR {
		in.GPR[i] = r.Uint64()
		if r.IntN(4) == 0 {
			in.GPR[i] = uint64(int64(int32(r.Uint32() >> uint(r.IntN(32)))))
		}
	}
	in.RFLAGS = r.Uint64() & x86native.ArithFlags
	buf := alignedBuf(nativeBufSize)
	if c.mem != nil {
		c.mem(r, buf)
	} else {
		fillRandom(r, buf)
	}
	memIn := append([]byte(nil), buf...)
	in.GPR[regRSI] = uint64(uintptr(unsafe.Pointer(&buf[0])))
	if fdp := binary.LittleEndian.Uint32(in.FX[16:]); fdp-uint32(in.GPR[regRSI]) < nativeBufSize+64 {
		in.FX[19] ^= 0x80 // a random FDP that looks like the buffer's address
	}
	out, err := x86native.Run(code, &in)
	if err != nil {
		t.Fatal(err)
	}

	rg := newRig(t)
	cpu := &fakeCPU{sregs: longMode()}
	cpu.regs = kvm.Regs{RAX: in.GPR[0], RCX: in.GPR[1], RDX: in.GPR[2], RBX: in.GPR[3], RSP: in.GPR[4], RBP: in.GPR[5],
		RSI: nativeBuf, RDI: in.GPR[7], R8: in.GPR[8], R9: in.GPR[9], R10: in.GPR[10], R11: in.GPR[11],
		R12: in.GPR[12], R13: in.GPR[13], R14: in.GPR[14], R15: in.GPR[15], RIP: codeAddr, RFLAGS: 2 | in.RFLAGS}
	cpu.xsave = new(kvm.XSave)
	copy(cpu.xsave.Bytes(), in.FX[:])
	binary.LittleEndian.PutUint64(cpu.xsave.Bytes()[kvm.XSaveBV:], 3)
	copy(rg.ram[codeAddr:], code)
	copy(rg.ram[nativeBuf:], memIn)
	rg.tables(cpu)
	k, emuErr := rg.emu.Emulate(cpu, nil)

	inst, _ := x86asm.Decode(code, 64)
	what := fmt.Sprintf("%s [% x] (%s)", c.name, code, x86asm.IntelSyntax(inst, codeAddr, nil))
	var diffs []string
	diff := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	if emuErr != nil {
		return fmt.Sprintf("%s: emulator: %v", what, emuErr)
	}
	emuFX := cpu.xsave.Bytes()[:512]
	le := binary.LittleEndian
	if out.Fault != "" {
		want := uint8(vectorXM)
		if out.Fault == "#MF" {
			want = vectorMF
		}
		if k != KindFault || len(cpu.injected) != 1 || cpu.injected[0].vector != want {
			diff("the CPU raised %s, the emulator: kind %v, injected %+v", out.Fault, k, cpu.injected)
		}
		// The state at the fault: all of it but FOP/FIP/FDP.
		if g, w := emuFX[:6], out.FX[:6]; !bytes.Equal(g, w) {
			diff("FCW/FSW/FTW at the fault % x, CPU % x", g, w)
		}
		if g, w := emuFX[24:28], out.FX[24:28]; !bytes.Equal(g, w) {
			diff("MXCSR at the fault % x, CPU % x (in % x)", g, w, in.FX[24:28])
		}
		for i := range 8 {
			if g, w := emuFX[32+16*i:42+16*i], out.FX[32+16*i:42+16*i]; !bytes.Equal(g, w) {
				diff("ST%d at the fault % x, CPU % x", i, g, w)
			}
		}
		if g, w := emuFX[160:416], out.FX[160:416]; !bytes.Equal(g, w) {
			diff("XMM registers at the fault differ")
		}
		if !bytes.Equal(rg.ram[nativeBuf:nativeBuf+nativeBufSize], memIn) || !bytes.Equal(buf, memIn) {
			diff("memory written before the fault (emulator %v, CPU %v)",
				!bytes.Equal(rg.ram[nativeBuf:nativeBuf+nativeBufSize], memIn), !bytes.Equal(buf, memIn))
		}
		if cpu.regs.RIP != codeAddr || cpu.setRegs != 0 {
			diff("registers written at the fault: RIP %#x, %d KVM_SET_REGS", cpu.regs.RIP, cpu.setRegs)
		}
	} else {
		if k == KindFault {
			return fmt.Sprintf("%s: the emulator injected %+v, the CPU ran it (FSW %#x MXCSR %#x in)", what, cpu.injected,
				le.Uint16(in.FX[2:]), le.Uint32(in.FX[24:]))
		}
		if cpu.regs.RIP != codeAddr+uint64(len(code)) {
			diff("RIP %#x, want %#x", cpu.regs.RIP, codeAddr+uint64(len(code)))
		}
		got := []uint64{cpu.regs.RAX, cpu.regs.RCX, cpu.regs.RDX, cpu.regs.RBX, 0, cpu.regs.RBP, cpu.regs.RSI, cpu.regs.RDI,
			cpu.regs.R8, cpu.regs.R9, cpu.regs.R10, cpu.regs.R11, cpu.regs.R12, cpu.regs.R13, cpu.regs.R14, cpu.regs.R15}
		for i, g := range got {
			w := out.GPR[i]
			switch i {
			case 4:
				continue
			case regRSI:
				g, w = g-nativeBuf, w-in.GPR[regRSI]
			}
			if g != w {
				diff("GPR %d = %#x, CPU %#x", i, g, w)
			}
		}
		if g, w := cpu.regs.RFLAGS&arithFlags, out.RFLAGS&x86native.ArithFlags; g != w {
			diff("RFLAGS %#x, CPU %#x", g, w)
		}
		type field struct {
			name     string
			off, len int
		}
		for _, f := range []field{{"FCW", 0, 2}, {"FSW", 2, 2}, {"FTW", 4, 1}, {"MXCSR", 24, 4}} {
			if g, w := emuFX[f.off:f.off+f.len], out.FX[f.off:f.off+f.len]; !bytes.Equal(g, w) {
				diff("%s % x, CPU % x (in % x)", f.name, g, w, in.FX[f.off:f.off+f.len])
			}
		}
		for i := range 8 {
			if g, w := emuFX[32+16*i:42+16*i], out.FX[32+16*i:42+16*i]; !bytes.Equal(g, w) {
				diff("ST%d % x, CPU % x (in % x)", i, g, w, in.FX[32+16*i:42+16*i])
			}
		}
		for i := range 16 {
			if g, w := emuFX[160+16*i:176+16*i], out.FX[160+16*i:176+16*i]; !bytes.Equal(g, w) {
				diff("XMM%d % x, CPU % x (in % x)", i, g, w, in.FX[160+16*i:176+16*i])
			}
		}
		// FOP, FIP, FDP: the CPU's from its FNSTENV (low 32 bits).
		fop, fip, fdp := le.Uint16(out.Env[18:])&0x7ff, le.Uint32(out.Env[12:]), le.Uint32(out.Env[20:])
		efop, efip, efdp := le.Uint16(emuFX[6:])&0x7ff, le.Uint64(emuFX[8:]), le.Uint64(emuFX[16:])
		inES := le.Uint16(in.FX[2:])&fswES != 0
		if !inES || le.Uint16(out.FX[2:])&fswES == 0 {
			// A context switch in the middle of the run (before or
			// after the instruction, while ES was clear): this AMD
			// CPU's XSAVES does not save FOP/FIP/FDP without ES, so
			// the host kernel's restore zeroes them. A zero is not
			// compared.
			if fop == 0 {
				efop = 0
			}
			if fip == 0 {
				efip = 0
			}
			if fdp == 0 {
				efdp = 0
			}
		}
		if fop != efop {
			diff("FOP %#x, CPU %#x", efop, fop)
		}
		switch {
		case fip == uint32(out.Code):
			if efip != codeAddr {
				diff("FIP %#x, CPU: the instruction", efip)
			}
		case uint32(efip) != fip:
			diff("FIP %#x, CPU %#x", efip, fip)
		}
		hostBuf := uint32(in.GPR[regRSI])
		switch {
		case fdp-hostBuf < nativeBufSize:
			if efdp != uint64(nativeBuf+fdp-hostBuf) {
				diff("FDP %#x, CPU: buffer+%#x", efdp, fdp-hostBuf)
			}
		case uint32(efdp) != fdp:
			diff("FDP %#x, CPU %#x", efdp, fdp)
		}
		mem := append([]byte(nil), rg.ram[nativeBuf:nativeBuf+nativeBufSize]...)
		cpuMem := append([]byte(nil), buf...)
		if c.fxsaveAt >= 0 && le.Uint16(cpuMem[c.fxsaveAt+2:])&fswES == 0 {
			// AMD: FOP, FIP, FDP (bytes 6-23) stored as 0 without ES.
			clear(mem[c.fxsaveAt+6 : c.fxsaveAt+24])
			clear(cpuMem[c.fxsaveAt+6 : c.fxsaveAt+24])
		}
		if c.envAt >= 0 {
			cs, ds, fsw := 16, 24, 4
			ptrs := [][2]int{{12, 4}, {18, 2}, {20, 4}} // FIP, FOP, FDP
			if c.envSize == 14 {
				cs, ds, fsw = 8, 12, 2
				ptrs = [][2]int{{6, 2}, {10, 2}}
			}
			for _, o := range []int{cs, ds} {
				mem[c.envAt+o], mem[c.envAt+o+1] = 0, 0
				cpuMem[c.envAt+o], cpuMem[c.envAt+o+1] = 0, 0
			}
			if !inES || le.Uint16(cpuMem[c.envAt+fsw:])&fswES == 0 {
				// FOP/FIP/FDP lost to a context switch (see above).
				for _, p := range ptrs {
					if f := cpuMem[c.envAt+p[0] : c.envAt+p[0]+p[1]]; bytes.Count(f, []byte{0}) == len(f) {
						clear(mem[c.envAt+p[0] : c.envAt+p[0]+p[1]])
					}
				}
			}
		}
		if !bytes.Equal(mem, cpuMem) {
			for i := range mem {
				if mem[i] != cpuMem[i] {
					diff("memory differs from buffer+%d: % x, CPU % x (in % x)", i, mem[i:min(i+16, len(mem))],
						cpuMem[i:min(i+16, len(mem))], memIn[i:min(i+16, len(mem))])
					break
				}
			}
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	s := what + ":"
	for _, d := range diffs {
		s += "\n\t" + d
	}
	return s
}

// softCPU names the CPU these tests run on when it is a software model, not
// hardware: QEMU's TCG (images/nested runs the vmm packages there), whose x87
// state is no reference (it stores the outer kernel's FIP/FDP, no FOP, and
// FCW's reserved bits as written). "" on hardware, including under a
// hardware hypervisor. Asked once per process: the fuzz target checks it
// for every input.
var softCPU = sync.OnceValues(func() (string, error) {
	cpuid := func(leaf uint32) (*x86native.State, error) {
		in := &x86native.State{}
		in.GPR[0] = uint64(leaf)
		out, err := x86native.Run([]byte{0x0f, 0xa2}, in) // CPUID
		if err != nil {
			return nil, fmt.Errorf("CPUID %#x: %w", leaf, err)
		}
		return out, nil
	}
	r, err := cpuid(1)
	if err != nil || r.GPR[1]>>31&1 == 0 {
		return "", err // no hypervisor
	}
	if r, err = cpuid(0x40000000); err != nil {
		return "", err
	}
	var v [12]byte
	binary.LittleEndian.PutUint32(v[0:], uint32(r.GPR[3]))
	binary.LittleEndian.PutUint32(v[4:], uint32(r.GPR[1]))
	binary.LittleEndian.PutUint32(v[8:], uint32(r.GPR[2]))
	if string(v[:]) == "TCGTCGTCGTCG" {
		return "QEMU TCG", nil
	}
	return "", nil
})

// skipSoftCPU skips a comparison with the CPU where the CPU is a software
// model; the same test runs against the hardware on the host.
func skipSoftCPU(t *testing.T) {
	t.Helper()
	m, err := softCPU()
	if err != nil {
		t.Fatal(err)
	}
	if m != "" {
		t.Skipf("the CPU here is %s, a software model, not a hardware reference for x87/SSE state; "+
			"this comparison runs against the host's CPU outside the nested VM", m)
	}
}

// TestNativeCompare checks every emulated x87 and SSE instruction form
// against this host's CPU on random inputs.
func TestNativeCompare(t *testing.T) {
	skipSoftCPU(t)
	n := 400
	if testing.Short() {
		n = 50
	}
	for i, c := range nativeCases() {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(i), 12))
			fails := 0
			for range n {
				if d := compareOne(t, c, r); d != "" {
					t.Error(d)
					if fails++; fails >= 3 {
						t.Fatal("stopping after 3 differences")
					}
				}
			}
		})
	}
}

// FuzzNativeCompare is the same comparison driven by the fuzzer: a case
// and the seed of its random state.
func FuzzNativeCompare(f *testing.F) {
	cs := nativeCases()
	for i := range cs {
		f.Add(uint16(i), uint64(i)*7919)
	}
	f.Fuzz(func(t *testing.T, which uint16, seed uint64) {
		skipSoftCPU(t)
		c := cs[int(which)%len(cs)]
		if d := compareOne(t, c, rand.New(rand.NewPCG(seed, seed>>32))); d != "" {
			t.Error(d)
		}
	})
}
