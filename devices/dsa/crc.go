package dsa

import (
	"hash/crc32"
	"math/bits"
)

// CRC-32C as DSA computes it (SPEC Appendix A). The default (no bypass flags)
// is the ordinary iSCSI CRC-32C with the seed used as a running value: the
// seed is inverted on entry, data is processed LSB-first (reflected) and the
// result is inverted on exit, so CRC(seed=0) is the standard CRC-32C and
// feeding a result back as the next seed continues the computation. This is
// exactly hash/crc32.Update with the Castagnoli table.
//
// Bypass flags: "bypass data reflection" processes each byte MSB-first;
// "bypass CRC inversion and reflection" takes the seed as the raw register
// value of the MSB-first (non-reflected) engine and returns the raw register,
// neither inverted nor reflected. Both can be combined.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const crc32cPoly = 0x1EDC6F41 // MSB-first form of 0x11EDC6F41

var crc32cMSBTable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ crc32cPoly
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return
}()

// crcState carries a CRC across chunks of one operation.
type crcState struct {
	flags uint32
	reg   uint32 // reflected register (default path) or MSB-first register
}

func newCRC(seed uint32, flags uint32) crcState {
	s := crcState{flags: flags}
	if flags&FlagCRCBypassInvRefl != 0 {
		s.reg = seed // raw MSB-first register
	} else {
		s.reg = ^seed // reflected register (hash/crc32 convention)
	}
	return s
}

func (s *crcState) update(p []byte) {
	inv := s.flags&FlagCRCBypassInvRefl != 0
	dataRefl := s.flags&FlagCRCBypassDataRef == 0
	switch {
	case !inv && dataRefl:
		// hash/crc32 inverts on entry and exit; undo that around it.
		s.reg = ^crc32.Update(^s.reg, castagnoli, p)
	case !inv && !dataRefl:
		// reflected engine fed with bit-reversed bytes
		r := s.reg
		for _, b := range p {
			r = castagnoli[byte(r)^bits.Reverse8(b)] ^ r>>8
		}
		s.reg = r
	default:
		// MSB-first engine; reflected data means bytes are bit-reversed first
		r := s.reg
		for _, b := range p {
			if dataRefl {
				b = bits.Reverse8(b)
			}
			r = crc32cMSBTable[byte(r>>24)^b] ^ r<<8
		}
		s.reg = r
	}
}

func (s *crcState) sum() uint32 {
	if s.flags&FlagCRCBypassInvRefl != 0 {
		return s.reg
	}
	return ^s.reg
}

// CRC-16 T10-DIF (polynomial 0x8BB7, MSB-first, no reflection) for DIF guard tags.
var crc16T10Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x8BB7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return
}()

func crc16T10(crc uint16, p []byte) uint16 {
	for _, b := range p {
		crc = crc16T10Table[byte(crc>>8)^b] ^ crc<<8
	}
	return crc
}
