package emulate

import (
	"math/big"
	"math/bits"
)

// Floating point for the x87 and SSE instructions the emulator executes:
// conversions between the 32-, 64- and 80-bit formats and integers, and
// square root, each rounded as the rounding-control field says (x87 FCW.RC
// or MXCSR.RC) and reporting the exceptions the SDM (Vol. 1 4.9) defines.
// Nothing here uses the host's floating point: every result is computed on
// integers, so it is what the guest's CPU computes whatever the host's
// rounding mode, and the native-comparison tests check it against the
// host CPU bit for bit.

// Exception flags: the same bit in the x87 status word (FSW) and in MXCSR,
// and, shifted left by 7, the mask bit in FCW (bits 0-5) and MXCSR (7-12).
const (
	excIE = 1 << 0 // invalid operation
	excDE = 1 << 1 // denormal operand
	excZE = 1 << 2 // divide by zero
	excOE = 1 << 3 // overflow
	excUE = 1 << 4 // underflow
	excPE = 1 << 5 // precision (inexact)

	excAll = 0x3f
)

// Rounding control (FCW bits 11:10, MXCSR bits 14:13).
const (
	rcNearest = 0 // to nearest, ties to even
	rcDown    = 1 // toward -infinity
	rcUp      = 2 // toward +infinity
	rcZero    = 3 // toward zero
)

// fpFormat is an IEEE binary format with an implicit integer bit.
type fpFormat struct {
	prec int // significand bits, the implicit one included
	bias int
}

var (
	fmtF32 = fpFormat{prec: 24, bias: 127}
	fmtF64 = fpFormat{prec: 53, bias: 1023}
)

func (f fpFormat) expMax() uint64   { return uint64(2*f.bias + 1) } // the all-ones exponent field
func (f fpFormat) fracBits() int    { return f.prec - 1 }
func (f fpFormat) signBit() uint64  { return 1 << (f.fracBits() + f.expBits()) }
func (f fpFormat) expBits() int     { return bits.Len(uint(2*f.bias + 1)) }
func (f fpFormat) fracMask() uint64 { return 1<<f.fracBits() - 1 }
func (f fpFormat) quietBit() uint64 { return 1 << (f.fracBits() - 1) }

// defaultNaN is the "real indefinite" QNaN of the format: negative, quiet,
// no payload.
func (f fpFormat) defaultNaN() uint64 {
	return f.signBit() | f.expMax()<<f.fracBits() | f.quietBit()
}

// Value classes.
const (
	clsZero        = iota
	clsFinite      // nonzero, normal or denormal
	clsInf         //
	clsQNaN        //
	clsSNaN        //
	clsUnsupported // an 80-bit encoding the x87 rejects: unnormal, pseudo-NaN, pseudo-infinity
)

// unpacked is a value taken apart. A finite value is sig × 2^(exp-63) with
// bit 63 of sig set; a NaN's sig is its significand as the 80-bit format
// holds it (bit 63 set, bit 62 the quiet bit, the payload below).
type unpacked struct {
	cls      int
	sign     bool
	exp      int
	sig      uint64
	denormal bool // the encoding was a denormal (a DE candidate)
}

// unpackF takes apart a 32- or 64-bit encoding.
func unpackF(v uint64, f fpFormat) unpacked {
	u := unpacked{sign: v&f.signBit() != 0}
	e := v >> f.fracBits() & f.expMax()
	frac := v & f.fracMask()
	shift := 64 - f.prec // frac's top bit goes to bit 62
	switch {
	case e == f.expMax() && frac == 0:
		u.cls = clsInf
	case e == f.expMax():
		u.cls = clsSNaN
		if frac&f.quietBit() != 0 {
			u.cls = clsQNaN
		}
		u.sig = 1<<63 | frac<<shift
	case e == 0 && frac == 0:
		u.cls = clsZero
	case e == 0: // denormal: frac × 2^(1-bias-fracBits)
		u.cls, u.denormal = clsFinite, true
		lz := bits.LeadingZeros64(frac)
		u.sig = frac << lz
		u.exp = 1 - f.bias - f.fracBits() + 63 - lz
	default:
		u.cls = clsFinite
		u.sig = 1<<63 | frac<<shift
		u.exp = int(e) - f.bias
	}
	return u
}

// ext80 is an x87 register's 80-bit extended-precision value: a 64-bit
// significand with an explicit integer bit (bit 63) and sign+exponent.
type ext80 struct {
	man uint64
	se  uint16
}

const extBias = 16383

// extIndefinite is the x87's QNaN "real indefinite".
var extIndefinite = ext80{man: 0xc000_0000_0000_0000, se: 0xffff}

// unpackExt takes apart an 80-bit value.
func unpackExt(x ext80) unpacked {
	u := unpacked{sign: x.se&0x8000 != 0}
	e := int(x.se & 0x7fff)
	j := x.man>>63 != 0
	switch {
	case e == 0x7fff && !j:
		u.cls = clsUnsupported // pseudo-infinity, pseudo-NaN
	case e == 0x7fff && x.man<<1 == 0:
		u.cls = clsInf
	case e == 0x7fff:
		u.cls = clsSNaN
		if x.man&(1<<62) != 0 {
			u.cls = clsQNaN
		}
		u.sig = x.man
	case e != 0 && !j:
		u.cls = clsUnsupported // unnormal
	case x.man == 0:
		u.cls = clsZero
	case e == 0: // denormal or pseudo-denormal: man × 2^(1-bias-63)
		u.cls, u.denormal = clsFinite, true
		lz := bits.LeadingZeros64(x.man)
		u.sig = x.man << lz
		u.exp = 1 - extBias - lz
	default:
		u.cls = clsFinite
		u.sig = x.man
		u.exp = e - extBias
	}
	return u
}

// packExt builds the 80-bit value of an unpacked one that fits: every
// 32- and 64-bit value and every integer does, exactly.
func packExt(u unpacked) ext80 {
	var se uint16
	if u.sign {
		se = 0x8000
	}
	switch u.cls {
	case clsZero:
		return ext80{se: se}
	case clsInf:
		return ext80{man: 1 << 63, se: se | 0x7fff}
	case clsQNaN, clsSNaN:
		return ext80{man: u.sig, se: se | 0x7fff}
	}
	return ext80{man: u.sig, se: se | uint16(u.exp+extBias)}
}

// fromInt unpacks a signed integer.
func fromInt(v int64) unpacked {
	if v == 0 {
		return unpacked{cls: clsZero}
	}
	u := unpacked{cls: clsFinite, sign: v < 0}
	m := uint64(v)
	if v < 0 {
		m = -m
	}
	lz := bits.LeadingZeros64(m)
	u.sig = m << lz
	u.exp = 63 - lz
	return u
}

// rounded is a finite value rounded into a format.
type rounded struct {
	bits     uint64
	inexact  bool // PE
	tiny     bool // nonzero and below the smallest normal after rounding with an unbounded exponent
	overflow bool // too large after rounding: bits hold the masked response (infinity or the largest finite)
	up       bool // the result's magnitude is larger than the exact value's (x87 C1)
}

// roundShift drops the low n bits of sig (sticky: more nonzero bits below
// them) and rounds the rest as rc says for a value of the given sign.
func roundShift(sig uint64, sticky bool, n int, rc int, sign bool) (q uint64, inexact, inc bool) {
	var guard, rest bool
	switch {
	case n == 0:
		q, rest = sig, sticky
	case n < 64:
		q = sig >> n
		rem := sig & (1<<n - 1)
		guard = rem>>(n-1)&1 != 0
		rest = rem&(1<<(n-1)-1) != 0 || sticky
	case n == 64:
		guard = sig>>63 != 0
		rest = sig<<1 != 0 || sticky
	default:
		rest = sig != 0 || sticky
	}
	inexact = guard || rest
	switch rc {
	case rcNearest:
		inc = guard && (rest || q&1 != 0)
	case rcDown:
		inc = inexact && sign
	case rcUp:
		inc = inexact && !sign
	}
	if inc {
		q++
	}
	return q, inexact, inc
}

// roundTo rounds the finite value sig × 2^(exp-63) (sig normalized; sticky
// for nonzero bits below sig) into f, as the SDM describes for the masked
// responses: denormal results where the exponent is too small, infinity
// or the largest finite number on overflow as rc says.
func roundTo(sign bool, exp int, sig uint64, sticky bool, f fpFormat, rc int) rounded {
	var r rounded
	var s uint64
	if sign {
		s = f.signBit()
	}
	emin, emax := 1-f.bias, f.bias
	q, inexact, inc := roundShift(sig, sticky, 64-f.prec, rc, sign)
	e := exp
	if q == 1<<f.prec {
		q >>= 1
		e++
	}
	if e > emax {
		r.overflow, r.inexact = true, true
		toInf := rc == rcNearest || rc == rcUp && !sign || rc == rcDown && sign
		if toInf {
			r.bits, r.up = s|f.expMax()<<f.fracBits(), true
		} else {
			r.bits = s | (f.expMax()-1)<<f.fracBits() | f.fracMask()
		}
		return r
	}
	if e >= emin {
		r.bits = s | uint64(e+f.bias)<<f.fracBits() | q&f.fracMask()
		r.inexact, r.up = inexact, inc
		return r
	}
	// Tiny: round again at the denormal's fixed point 2^(emin-fracBits).
	// A result that rounds up to 2^emin is the smallest normal, which the
	// encoding gives by itself (the carry lands in the exponent field).
	r.tiny = true
	q, inexact, inc = roundShift(sig, sticky, 64-f.prec+emin-exp, rc, sign)
	r.bits = s | q
	r.inexact, r.up = inexact, inc
	return r
}

// nanTo converts a NaN (quieted) into f: sign, quiet bit set, the payload's
// top bits.
func nanTo(u unpacked, f fpFormat) uint64 {
	var s uint64
	if u.sign {
		s = f.signBit()
	}
	return s | f.expMax()<<f.fracBits() | u.sig<<1>>(64-f.fracBits()) | f.quietBit()
}

// sqrtSig is the square root of sig × 2^(exp-63) (finite, positive),
// normalized, with sticky set when it is not exact.
func sqrtSig(exp int, sig uint64) (rexp int, rsig uint64, sticky bool) {
	// value = sig × 2^(exp-63) = m × 2^e with e even.
	m := new(big.Int).SetUint64(sig)
	e := exp - 63
	if e&1 != 0 {
		m.Lsh(m, 1)
		e--
	}
	// sqrt(m × 2^130) = sqrt(m) × 2^65 has 96 or more bits: plenty for
	// a 64-bit significand and the remainder decides the sticky bit.
	m.Lsh(m, 130)
	r := new(big.Int).Sqrt(m)
	sticky = new(big.Int).Mul(r, r).Cmp(m) != 0
	n := r.BitLen()
	low := new(big.Int).And(r, new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(n-64)), big.NewInt(1)))
	sticky = sticky || low.Sign() != 0
	rsig = new(big.Int).Rsh(r, uint(n-64)).Uint64()
	// r × 2^(e/2 - 65) with r's top bit at n-1: the value is
	// rsig × 2^(n-64) × 2^(e/2-65) = rsig × 2^(rexp-63).
	rexp = n - 64 + e/2 - 65 + 63
	return rexp, rsig, sticky
}
