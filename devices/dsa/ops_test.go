package dsa

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/bits"
	"testing"
)

// Guest memory map used by the operation tests.
const (
	crA   = 0x1000 // completion records
	crB   = 0x1020
	srcA  = 0x10000
	dstA  = 0x80000
	dst2A = 0x100000
	listA = 0x2000 // batch descriptor lists
	outOf = memSize + 0x1000
	rcr   = FlagCRAV | FlagRCR
)

func opsRig(t *testing.T) *rig {
	r := newRig(t, DefaultConfig())
	r.w32(RegGenCtrl, 3)
	r.setupDWQ(32)
	return r
}

func TestMemMove(t *testing.T) {
	r := opsRig(t)
	fillRand(r.ram[srcA:srcA+8192], 1)
	r.run(newDesc(OpMemMove, rcr, crA, srcA, dstA, 8192))
	if c := r.cr(crA); c.status != StatusSuccess || c.result != 0 {
		t.Fatalf("CR %+v", c)
	}
	if !bytes.Equal(r.ram[srcA:srcA+8192], r.ram[dstA:dstA+8192]) {
		t.Fatal("data not copied")
	}
	// Overlapping, destination above source: memmove semantics, Result=1.
	want := append([]byte(nil), r.ram[srcA:srcA+4096]...)
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpMemMove, rcr, crA, srcA, srcA+100, 4096))
	if c := r.cr(crA); c.status != StatusSuccess || c.result != 1 {
		t.Fatalf("backward copy CR %+v", c)
	}
	if !bytes.Equal(r.ram[srcA+100:srcA+100+4096], want) {
		t.Fatal("overlapping copy corrupted data")
	}
	// Overlapping, destination below source.
	want = append([]byte(nil), r.ram[srcA+100:srcA+100+4096]...)
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpMemMove, rcr, crA, srcA+100, srcA, 4096))
	if c := r.cr(crA); c.status != StatusSuccess || c.result != 0 {
		t.Fatalf("forward overlap CR %+v", c)
	}
	if !bytes.Equal(r.ram[srcA:srcA+4096], want) {
		t.Fatal("forward overlapping copy corrupted data")
	}
	// Without RCR no record is written on success.
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpMemMove, FlagCRAV, crA, srcA, dstA, 64))
	if r.ram[crA] != 0 {
		t.Fatal("CR written without RCR")
	}
}

func TestMemMovePageFault(t *testing.T) {
	r := opsRig(t)
	// Destination runs off the end of guest memory: partial completion.
	dst := uint64(memSize - 1000)
	r.run(newDesc(OpMemMove, rcr, crA, srcA, dst, 4096))
	c := r.cr(crA)
	if c.status != StatusPageFault|StatusFaultWrite || c.fault != memSize || c.bytes != 1000 {
		t.Fatalf("CR %+v, want write page fault at %#x after 1000 bytes", c, memSize)
	}
	if !bytes.Equal(r.ram[dst:], r.ram[srcA:srcA+1000]) {
		t.Fatal("completed part not copied")
	}
	// Source entirely outside memory: read fault, nothing done.
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpMemMove, rcr, crA, outOf, dstA, 64))
	if c := r.cr(crA); c.status != StatusPageFault || c.fault != outOf || c.bytes != 0 {
		t.Fatalf("CR %+v", c)
	}
	// Address wrapping around 2^64.
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpMemMove, rcr, crA, ^uint64(0)-10, dstA, 64))
	if c := r.cr(crA); c.status != StatusPageFault {
		t.Fatalf("wrap CR %+v", c)
	}
}

func TestFill(t *testing.T) {
	r := opsRig(t)
	pat := uint64(0x0807060504030201)
	r.run(newDesc(OpFill, rcr, crA, pat, dstA+3, 1001))
	if c := r.cr(crA); c.status != StatusSuccess {
		t.Fatalf("CR %+v", c)
	}
	for i := range 1001 {
		if r.ram[dstA+3+i] != byte(i%8+1) {
			t.Fatalf("byte %d = %d", i, r.ram[dstA+3+i])
		}
	}
	if r.ram[dstA+3+1001] != 0 || r.ram[dstA+2] != 0 {
		t.Fatal("fill wrote outside the range")
	}
}

func TestCompare(t *testing.T) {
	r := opsRig(t)
	fillRand(r.ram[srcA:srcA+5000], 2)
	copy(r.ram[dstA:], r.ram[srcA:srcA+5000])
	r.run(newDesc(OpCompare, rcr, crA, srcA, dstA, 5000))
	if c := r.cr(crA); c.status != StatusSuccess || c.result != 0 {
		t.Fatalf("equal: %+v", c)
	}
	r.ram[dstA+4321] ^= 1
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpCompare, rcr, crA, srcA, dstA, 5000))
	if c := r.cr(crA); c.status != StatusSuccess || c.result != 1 || c.bytes != 4321 {
		t.Fatalf("differ: %+v", c)
	}
	// Check Result with expected result 0: false predicate.
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpCompare, rcr|FlagCheckRes, crA, srcA, dstA, 5000))
	if c := r.cr(crA); c.status != StatusSuccessPred || c.result != 1 {
		t.Fatalf("check result: %+v", c)
	}
	clear(r.ram[crA : crA+32])
	d := newDesc(OpCompare, rcr|FlagCheckRes, crA, srcA, dstA, 5000)
	d[40] = 1
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccess {
		t.Fatalf("check result, expected 1: %+v", c)
	}
	// Compare pattern.
	for i := range 256 {
		r.ram[srcA+i] = byte(0xa0 + i%8)
	}
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpCompVal, rcr, crA, srcA, 0xa7a6a5a4a3a2a1a0, 256))
	if c := r.cr(crA); c.status != StatusSuccess || c.result != 0 {
		t.Fatalf("compval equal: %+v", c)
	}
	r.ram[srcA+77] = 0
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpCompVal, rcr, crA, srcA, 0xa7a6a5a4a3a2a1a0, 256))
	if c := r.cr(crA); c.result != 1 || c.bytes != 77 {
		t.Fatalf("compval differ: %+v", c)
	}
}

// refCRC32C is an independent bit-at-a-time CRC-32C in the MSB-first form
// the spec describes (polynomial 0x1EDC6F41), with the seed/result
// conventions documented in crc.go.
func refCRC32C(seed uint32, flags uint32, data []byte) uint32 {
	var reg uint32
	if flags&FlagCRCBypassInvRefl != 0 {
		reg = seed
	} else {
		reg = bits.Reverse32(^seed)
	}
	for _, b := range data {
		if flags&FlagCRCBypassDataRef == 0 {
			b = bits.Reverse8(b)
		}
		reg ^= uint32(b) << 24
		for range 8 {
			if reg&0x80000000 != 0 {
				reg = reg<<1 ^ 0x1EDC6F41
			} else {
				reg <<= 1
			}
		}
	}
	if flags&FlagCRCBypassInvRefl != 0 {
		return reg
	}
	return ^bits.Reverse32(reg)
}

func TestCRC(t *testing.T) {
	// Known answer: CRC-32C("123456789") = 0xE3069283.
	if got := refCRC32C(0, 0, []byte("123456789")); got != 0xE3069283 {
		t.Fatalf("reference CRC-32C check value %#x", got)
	}
	r := opsRig(t)
	fillRand(r.ram[srcA:srcA+10000], 3)
	data := r.ram[srcA : srcA+10000]
	r.run(newDesc(OpCRCGen, rcr, crA, srcA, 0, 10000))
	c := r.cr(crA)
	if got, want := binary.LittleEndian.Uint32(c.extra[:]), crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)); c.status != 1 || got != want {
		t.Fatalf("CRC %#x, want %#x (hash/crc32 Castagnoli), status %#x", got, want, c.status)
	}
	// Seed chaining: CRC of the second half seeded with the first half's CRC.
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpCRCGen, rcr, crA, srcA, 0, 4000))
	first := binary.LittleEndian.Uint32(r.ram[crA+16:])
	clear(r.ram[crA : crA+32])
	d := newDesc(OpCRCGen, rcr, crA, srcA+4000, 0, 6000)
	put32(d, 40, first)
	r.run(d)
	if got := binary.LittleEndian.Uint32(r.ram[crA+16:]); got != crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)) {
		t.Fatalf("chained CRC %#x", got)
	}
	// Seed read from memory.
	binary.LittleEndian.PutUint32(r.ram[0x3000:], first)
	clear(r.ram[crA : crA+32])
	d = newDesc(OpCRCGen, rcr|FlagCRCReadSeed, crA, srcA+4000, 0, 6000)
	put64(d, 48, 0x3000)
	r.run(d)
	if got := binary.LittleEndian.Uint32(r.ram[crA+16:]); got != crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)) {
		t.Fatalf("read-seed CRC %#x", got)
	}
	clear(r.ram[crA : crA+32])
	put64(d, 48, 0x3004)
	r.run(d)
	if c := r.cr(crA); c.status != StatusAddrAlign {
		t.Fatalf("misaligned seed address: %+v", c)
	}
	// Bypass flags against the bitwise reference.
	for _, f := range []uint32{0, FlagCRCBypassDataRef, FlagCRCBypassInvRefl, FlagCRCBypassInvRefl | FlagCRCBypassDataRef} {
		for _, seed := range []uint32{0, 0xdeadbeef} {
			clear(r.ram[crA : crA+32])
			d := newDesc(OpCRCGen, rcr|f, crA, srcA, 0, 999)
			put32(d, 40, seed)
			r.run(d)
			if got, want := binary.LittleEndian.Uint32(r.ram[crA+16:]), refCRC32C(seed, f, data[:999]); got != want {
				t.Errorf("flags %#x seed %#x: %#x, want %#x", f, seed, got, want)
			}
		}
	}
	// Copy with CRC.
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpCopyCRC, rcr, crA, srcA, dstA, 10000))
	if got := binary.LittleEndian.Uint32(r.ram[crA+16:]); got != crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)) || !bytes.Equal(r.ram[dstA:dstA+10000], data) {
		t.Fatalf("copy-crc %#x", got)
	}
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpCopyCRC, rcr, crA, srcA, srcA+10, 100))
	if c := r.cr(crA); c.status != StatusOverlap {
		t.Fatalf("overlapping copy-crc: %+v", c)
	}
}

func TestDualcast(t *testing.T) {
	r := opsRig(t)
	fillRand(r.ram[srcA:srcA+3000], 4)
	d := newDesc(OpDualcast, rcr, crA, srcA, dstA+0x123, 3000)
	put64(d, 40, dst2A+0x123)
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccess {
		t.Fatalf("%+v", c)
	}
	if !bytes.Equal(r.ram[dstA+0x123:dstA+0x123+3000], r.ram[srcA:srcA+3000]) || !bytes.Equal(r.ram[dst2A+0x123:dst2A+0x123+3000], r.ram[srcA:srcA+3000]) {
		t.Fatal("dualcast data")
	}
	clear(r.ram[crA : crA+32])
	put64(d, 40, dst2A+0x124)
	r.run(d)
	if c := r.cr(crA); c.status != StatusDualcastAlign {
		t.Fatalf("bits 11:0 differ: %+v", c)
	}
}

func TestDelta(t *testing.T) {
	r := opsRig(t)
	const n = 4096
	fillRand(r.ram[srcA:srcA+n], 5)
	copy(r.ram[dstA:], r.ram[srcA:srcA+n])
	changed := []int{0, 8 * 7, 8 * 100, n - 8}
	for _, o := range changed {
		r.ram[dstA+o+3] ^= 0x55
	}
	const rec = 0x200000
	d := newDesc(OpCRDelta, rcr, crA, srcA, dstA, n)
	put64(d, 40, rec)
	put32(d, 48, 800)
	r.run(d)
	c := r.cr(crA)
	if c.status != StatusSuccess || c.result != 1 || binary.LittleEndian.Uint32(c.extra[:]) != uint32(10*len(changed)) {
		t.Fatalf("create delta: %+v", c)
	}
	for i, o := range changed {
		e := r.ram[rec+10*i:]
		if int(binary.LittleEndian.Uint16(e))*8 != o || !bytes.Equal(e[2:10], r.ram[dstA+o:dstA+o+8]) {
			t.Fatalf("entry %d wrong", i)
		}
	}
	// Apply the delta to a copy of the original.
	copy(r.ram[dst2A:], r.ram[srcA:srcA+n])
	clear(r.ram[crA : crA+32])
	d = newDesc(OpAPDelta, rcr, crA, rec, dst2A, n)
	put32(d, 40, uint32(10*len(changed)))
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccess || !bytes.Equal(r.ram[dst2A:dst2A+n], r.ram[dstA:dstA+n]) {
		t.Fatalf("apply delta: %+v", c)
	}
	// Overflow: max 80 bytes = 8 entries, 20 differences.
	for i := range 20 {
		r.ram[dstA+8*i+100*8] ^= 1
	}
	clear(r.ram[crA : crA+32])
	d = newDesc(OpCRDelta, rcr, crA, srcA, dstA, n)
	put64(d, 40, rec)
	put32(d, 48, 80)
	r.run(d)
	if c := r.cr(crA); c.result != 2 || binary.LittleEndian.Uint32(c.extra[:]) != 80 {
		t.Fatalf("overflow: %+v", c)
	}
	// Equal regions with expected-result mask bit 0: success; with mask bit 1 only: false predicate.
	clear(r.ram[crA : crA+32])
	d = newDesc(OpCRDelta, rcr|FlagCheckRes, crA, srcA, srcA, n)
	put64(d, 40, rec)
	put32(d, 48, 80)
	d[56] = 2
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccessPred || c.result != 0 {
		t.Fatalf("mask: %+v", c)
	}
	// Bad sizes and records.
	for _, tc := range []struct {
		d    *[64]byte
		want byte
	}{
		{func() *[64]byte { d := newDesc(OpCRDelta, rcr, crA, srcA, dstA, 12); put32(d, 48, 80); return d }(), StatusXferSize},
		{func() *[64]byte { d := newDesc(OpCRDelta, rcr, crA, srcA, dstA, 64); put32(d, 48, 85); return d }(), StatusDeltaSize},
		{func() *[64]byte { d := newDesc(OpAPDelta, rcr, crA, rec, dst2A, n); put32(d, 40, 15); return d }(), StatusDeltaSize},
		{func() *[64]byte { d := newDesc(OpCRDelta, rcr, crA, srcA+4, dstA, 64); put32(d, 48, 80); return d }(), StatusAddrAlign},
	} {
		clear(r.ram[crA : crA+32])
		r.run(tc.d)
		if c := r.cr(crA); c.status != tc.want {
			t.Errorf("status %#x, want %#x", c.status, tc.want)
		}
	}
	// Non-increasing offsets, and an offset past the end.
	binary.LittleEndian.PutUint16(r.ram[rec:], 5)
	binary.LittleEndian.PutUint16(r.ram[rec+10:], 5)
	clear(r.ram[crA : crA+32])
	d = newDesc(OpAPDelta, rcr, crA, rec, dst2A, n)
	put32(d, 40, 20)
	r.run(d)
	if c := r.cr(crA); c.status != StatusDeltaNoInc {
		t.Fatalf("no-inc: %+v", c)
	}
	binary.LittleEndian.PutUint16(r.ram[rec+10:], n/8)
	clear(r.ram[crA : crA+32])
	r.run(d)
	if c := r.cr(crA); c.status != StatusDeltaRange {
		t.Fatalf("range: %+v", c)
	}
}

// refCRC16T10 is an independent, table-free CRC-16/T10-DIF.
func refCRC16T10(crc uint16, data []byte) uint16 {
	for _, b := range data {
		crc ^= uint16(b) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x8BB7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func TestDIF(t *testing.T) {
	if got := refCRC16T10(0, []byte("123456789")); got != 0xD0DB {
		t.Fatalf("reference CRC-16/T10-DIF check value %#x", got)
	}
	r := opsRig(t)
	const bs, blocks = 512, 4
	fillRand(r.ram[srcA:srcA+bs*blocks], 6)
	// Insert with ref tag seed 100 (incrementing) and app tag 0x1234 (fixed).
	d := newDesc(OpDIFInsert, rcr, crA, srcA, dstA, bs*blocks)
	put32(d, 56, 100)
	put16(d, 62, 0x1234)
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccess || binary.LittleEndian.Uint32(c.extra[8:]) != 100+blocks {
		t.Fatalf("insert: %+v", c)
	}
	for i := range blocks {
		blk := r.ram[dstA+i*(bs+8):]
		if !bytes.Equal(blk[:bs], r.ram[srcA+i*bs:srcA+(i+1)*bs]) {
			t.Fatalf("block %d data", i)
		}
		pi := blk[bs : bs+8]
		if g := binary.BigEndian.Uint16(pi); g != refCRC16T10(0, blk[:bs]) {
			t.Fatalf("block %d guard %#x", i, g)
		}
		if binary.BigEndian.Uint16(pi[2:]) != 0x1234 || binary.BigEndian.Uint32(pi[4:]) != uint32(100+i) {
			t.Fatalf("block %d tags % x", i, pi)
		}
	}
	// Check passes with the same seeds.
	check := func(ref uint32, app uint16, srcFlags byte) crec {
		clear(r.ram[crA : crA+32])
		d := newDesc(OpDIFCheck, rcr, crA, dstA, 0, (bs+8)*blocks)
		d[40] = srcFlags
		put32(d, 48, ref)
		put16(d, 54, app)
		r.run(d)
		return r.cr(crA)
	}
	if c := check(100, 0x1234, 0); c.status != StatusSuccess {
		t.Fatalf("check: %+v", c)
	}
	if c := check(101, 0x1234, 0); c.status != StatusDIFErr || c.result != difStatusRef || c.bytes != 0 {
		t.Fatalf("wrong ref seed: %+v", c)
	}
	if c := check(101, 0x1234, difSrcRefNoCheck); c.status != StatusSuccess {
		t.Fatalf("ref check disabled: %+v", c)
	}
	if c := check(100, 0x1235, 0); c.status != StatusDIFErr || c.result != difStatusApp {
		t.Fatalf("wrong app tag: %+v", c)
	}
	// Corrupt block 2's data: guard error after 2 blocks.
	r.ram[dstA+2*(bs+8)+17] ^= 0x80
	if c := check(100, 0x1234, 0); c.status != StatusDIFErr || c.result != difStatusGuard || c.bytes != 2*(bs+8) || binary.LittleEndian.Uint32(c.extra[:]) != 102 {
		t.Fatalf("guard error: %+v", c)
	}
	if c := check(100, 0x1234, difSrcGuardNoChk); c.status != StatusSuccess {
		t.Fatalf("guard check disabled: %+v", c)
	}
	r.ram[dstA+2*(bs+8)+17] ^= 0x80
	// Strip.
	clear(r.ram[crA : crA+32])
	d = newDesc(OpDIFStrip, rcr, crA, dstA, dst2A, (bs+8)*blocks)
	put32(d, 48, 100)
	put16(d, 54, 0x1234)
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccess || !bytes.Equal(r.ram[dst2A:dst2A+bs*blocks], r.ram[srcA:srcA+bs*blocks]) {
		t.Fatalf("strip: %+v", c)
	}
	// Update: new ref tags from 7, fixed.
	clear(r.ram[crA : crA+32])
	d = newDesc(OpDIFUpdate, rcr, crA, dstA, dst2A, (bs+8)*blocks)
	put32(d, 48, 100)
	put16(d, 54, 0x1234)
	d[41] = difDstRefFixed
	put32(d, 56, 7)
	put16(d, 62, 0x4321)
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccess {
		t.Fatalf("update: %+v", c)
	}
	for i := range blocks {
		pi := r.ram[dst2A+i*(bs+8)+bs:]
		if binary.BigEndian.Uint16(pi) != refCRC16T10(0, r.ram[srcA+i*bs:srcA+(i+1)*bs]) || binary.BigEndian.Uint16(pi[2:]) != 0x4321 || binary.BigEndian.Uint32(pi[4:]) != 7 {
			t.Fatalf("updated block %d: % x", i, pi[:8])
		}
	}
	// Inverted seed and result (DIF flags bits 2, 3) with 4096-byte blocks.
	clear(r.ram[crA : crA+32])
	d = newDesc(OpDIFInsert, rcr, crA, srcA, dst2A, 4096)
	d[42] = 2 | difInvertSeed | difInvertResult
	r.run(d)
	if g := binary.BigEndian.Uint16(r.ram[dst2A+4096:]); g != ^refCRC16T10(0xffff, r.ram[srcA:srcA+4096]) {
		t.Fatalf("inverted guard %#x", g)
	}
	// Transfer size not a multiple of the block.
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpDIFCheck, rcr, crA, dstA, 0, 1000))
	if c := r.cr(crA); c.status != StatusXferSize {
		t.Fatalf("size: %+v", c)
	}
	// All-F escape.
	for i := range 8 {
		r.ram[dstA+bs+i] = 0xff
	}
	if c := check(100, 0x1234, difSrcAllFDet); c.status != StatusSuccess {
		t.Fatalf("all-F detect: %+v", c)
	}
	if c := check(100, 0x1234, difSrcAllFDet|difSrcAllFErr); c.status != StatusDIFErr || c.result != difStatusAllFErr {
		t.Fatalf("all-F error: %+v", c)
	}
}

func TestNoopCacheFlushAndInterrupts(t *testing.T) {
	r := opsRig(t)
	r.intr.reset()
	d := newDesc(OpNOOP, rcr|FlagRCI, crA, 0, 0, 0)
	put16(d, 36, 1)
	r.run(d)
	if r.cr(crA).status != StatusSuccess || r.intr.count(1) != 1 {
		t.Fatalf("noop: CR %+v, vector 1 fired %d times", r.cr(crA), r.intr.count(1))
	}
	// MSIXPERM Ignore suppresses the interrupt (the record is still written).
	r.w32(MSIXPermOffset+8, msixPermIgnore)
	clear(r.ram[crA : crA+32])
	r.run(d)
	if r.cr(crA).status != StatusSuccess || r.intr.count(1) != 1 {
		t.Fatalf("ignored entry: CR %+v, vector 1 fired %d times", r.cr(crA), r.intr.count(1))
	}
	r.w32(MSIXPermOffset+8, 0)
	// Invalid interrupt handle: status 0x19, no interrupt.
	clear(r.ram[crA : crA+32])
	put16(d, 36, 9)
	r.run(d)
	if r.cr(crA).status != StatusIntHandle || r.intr.count(9) != 0 {
		t.Fatalf("bad handle: %+v", r.cr(crA))
	}
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpCFlush, rcr, crA, 0, dstA, 4096))
	if r.cr(crA).status != StatusSuccess {
		t.Fatalf("cflush %+v", r.cr(crA))
	}
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpCFlush, rcr, crA, 0, outOf, 4096))
	if c := r.cr(crA); c.status&0x3f != StatusPageFault || c.fault != outOf {
		t.Fatalf("cflush outside memory %+v", c)
	}
	// Drain descriptor completes (after earlier work) with its interrupt.
	clear(r.ram[crA : crA+32])
	for i := range 10 {
		r.submit(0, newDesc(OpMemMove, 0, 0, srcA, dstA+uint64(i)*65536, 65536))
	}
	d = newDesc(OpDrain, rcr|FlagRCI, crA, 0, 0, 0)
	put16(d, 36, 1)
	r.run(d)
	if r.cr(crA).status != StatusSuccess {
		t.Fatalf("drain %+v", r.cr(crA))
	}
}

func TestDescriptorErrors(t *testing.T) {
	r := opsRig(t)
	cases := []struct {
		name string
		d    *[64]byte
		want byte
	}{
		{"unsupported opcode 0x0a", newDesc(0x0a, rcr, crA, 0, 0, 0), StatusBadOpcode},
		{"opcode 0x30", newDesc(0x30, rcr, crA, 0, 0, 0), StatusBadOpcode},
		{"opcode 0xff", newDesc(0xff, rcr, crA, 0, 0, 0), StatusBadOpcode},
		{"fence outside batch", newDesc(OpNOOP, rcr|FlagFence, crA, 0, 0, 0), StatusInvalFlags},
		{"block on fault", newDesc(OpMemMove, rcr|FlagBOF, crA, srcA, dstA, 8), StatusInvalFlags},
		{"reserved flag 15", newDesc(OpMemMove, rcr|1<<15, crA, srcA, dstA, 8), StatusInvalFlags},
		{"check result on memmove", newDesc(OpMemMove, rcr|FlagCheckRes, crA, srcA, dstA, 8), StatusInvalFlags},
		{"CRC64 on DSA 1.0", newDesc(OpCRCGen, rcr|FlagCRC64, crA, srcA, 0, 8), StatusInvalFlags},
		{"zero size", newDesc(OpMemMove, rcr, crA, srcA, dstA, 0), StatusXferSize},
		{"size over WQ max (2 MiB)", newDesc(OpMemMove, rcr, crA, srcA, dstA, 2<<20+1), StatusXferSize},
		{"reserved bytes 38-39", func() *[64]byte { d := newDesc(OpNOOP, rcr, crA, 0, 0, 0); d[39] = 1; return d }(), StatusNonZeroRsvd},
	}
	for _, c := range cases {
		clear(r.ram[crA : crA+32])
		r.run(c.d)
		if got := r.cr(crA); got.status != c.want {
			t.Errorf("%s: status %#x, want %#x", c.name, got.status, c.want)
		}
	}
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpMemMove, rcr|1<<15|1<<20, crA, srcA, dstA, 8))
	if c := r.cr(crA); c.extra[0] != 0 || c.extra[1] != 0x80 || c.extra[2] != 0x10 {
		t.Errorf("invalid flags field % x", c.extra[:3])
	}
}

func swerr(r *rig) [4]uint64 {
	var q [4]uint64
	for i := range q {
		q[i] = r.r64(RegSWErr + uint64(8*i))
	}
	return q
}

func TestSWError(t *testing.T) {
	r := opsRig(t)
	r.intr.reset()
	// Error with CRAV=0: reported in SWERROR.
	r.run(newDesc(OpMemMove, 0, 0, outOf, dstA, 64))
	q := swerr(r)
	if q[0]&1 == 0 || q[0]>>8&0xff != StatusPageFault || q[0]>>32&0xff != OpMemMove || q[0]>>3&1 != 1 || q[0]>>16&0xff != 0 || q[2] != outOf {
		t.Fatalf("SWERROR % x", q)
	}
	if r.r32(RegIntCause)&IntSWErr == 0 || r.intr.count(0) == 0 {
		t.Fatal("no software-error interrupt")
	}
	// A second error sets Overflow and keeps the first.
	r.run(newDesc(OpMemMove, FlagCRAV|FlagRCR, crA+8, srcA, dstA, 64))
	q2 := swerr(r)
	if q2[0]&2 == 0 || q2[0]>>8&0xff != StatusPageFault {
		t.Fatalf("overflow: % x", q2)
	}
	// Driver clears Valid|Overflow by writing them back.
	r.w64(RegSWErr, q2[0]&3)
	r.w32(RegIntCause, IntSWErr)
	if swerr(r)[0]&3 != 0 {
		t.Fatal("SWERROR not cleared")
	}
	// Misaligned completion record.
	r.run(newDesc(OpMemMove, FlagCRAV|FlagRCR, crA+8, srcA, dstA, 64))
	if q := swerr(r); q[0]>>8&0xff != StatusCRAlign {
		t.Fatalf("misaligned CR: % x", q)
	}
	r.w64(RegSWErr, 3)
	// Completion record outside memory.
	r.run(newDesc(OpMemMove, FlagCRAV|FlagRCR, outOf, srcA, dstA, 64))
	if q := swerr(r); q[0]>>8&0xff != StatusCRFault || q[2] != outOf {
		t.Fatalf("CR fault: % x", q)
	}
	r.w64(RegSWErr, 3)
	// No interrupt when GENCTRL disables it.
	r.w32(RegGenCtrl, 0)
	r.intr.reset()
	r.run(newDesc(OpMemMove, 0, 0, outOf, dstA, 64))
	if r.intr.count(0) != 1 || swerr(r)[0]&1 == 0 { // 1: the Drain WQ completion
		t.Fatal("GENCTRL[0]=0 must suppress the interrupt but still log")
	}
}

func batchRig(t *testing.T) *rig { return opsRig(t) }

func TestBatch(t *testing.T) {
	r := batchRig(t)
	fillRand(r.ram[srcA:srcA+4096], 7)
	members := []*[64]byte{
		newDesc(OpMemMove, rcr, 0x3000, srcA, dstA, 4096),
		newDesc(OpFill, rcr, 0x3020, 0x4242424242424242, dst2A, 100),
		newDesc(OpCRCGen, rcr, 0x3040, srcA, 0, 4096),
	}
	for i, m := range members {
		copy(r.ram[listA+64*i:], m[:])
	}
	d := newDesc(OpBatch, rcr|FlagRCI, crA, listA, 0, uint32(len(members)))
	put16(d, 36, 1)
	r.intr.reset()
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccess || c.bytes != 3 {
		t.Fatalf("batch CR %+v", c)
	}
	if r.intr.count(1) != 1 {
		t.Fatal("batch interrupt")
	}
	for i := range members {
		if r.ram[0x3000+32*i] != StatusSuccess {
			t.Fatalf("member %d status %#x", i, r.ram[0x3000+32*i])
		}
	}
	if !bytes.Equal(r.ram[dstA:dstA+4096], r.ram[srcA:srcA+4096]) || r.ram[dst2A+99] != 0x42 {
		t.Fatal("batch members not executed")
	}
	// Count limits, alignment, list outside memory.
	for _, tc := range []struct {
		list  uint64
		count uint32
		want  byte
	}{
		{listA, 1, StatusDescCount},
		{listA, 33, StatusDescCount}, // WQ max batch 2^5
		{listA + 32, 2, StatusDescListAlign},
		{memSize - 64, 2, StatusBatchPF},
	} {
		clear(r.ram[crA : crA+32])
		r.run(newDesc(OpBatch, rcr, crA, tc.list, 0, tc.count))
		if c := r.cr(crA); c.status != tc.want {
			t.Errorf("batch list %#x count %d: %#x, want %#x", tc.list, tc.count, c.status, tc.want)
		}
	}
	if c := r.cr(crA); c.fault != memSize || c.bytes != 1 {
		t.Errorf("batch page fault CR %+v", c)
	}
	// Nested batch and drain in a batch fail as unsupported opcodes; the
	// batch reports 0x05 and still runs the other members.
	clear(r.ram[0x3000:0x3100])
	copy(r.ram[listA:], newDesc(OpBatch, rcr, 0x3000, listA, 0, 2)[:])
	copy(r.ram[listA+64:], newDesc(OpDrain, rcr, 0x3020, 0, 0, 0)[:])
	copy(r.ram[listA+128:], newDesc(OpNOOP, rcr, 0x3040, 0, 0, 0)[:])
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpBatch, rcr, crA, listA, 0, 3))
	if c := r.cr(crA); c.status != StatusBatchFail || c.bytes != 3 || r.ram[0x3000] != StatusBadOpcode || r.ram[0x3020] != StatusBadOpcode || r.ram[0x3040] != StatusSuccess {
		t.Fatalf("nested: CR %+v members %#x %#x %#x", c, r.ram[0x3000], r.ram[0x3020], r.ram[0x3040])
	}
}

func TestBatchFence(t *testing.T) {
	r := batchRig(t)
	clear(r.ram[0x3000:0x3100])
	copy(r.ram[listA:], newDesc(OpMemMove, rcr, 0x3000, outOf, dstA, 64)[:]) // fails
	copy(r.ram[listA+64:], newDesc(OpNOOP, rcr, 0x3020, 0, 0, 0)[:])         // runs (no fence)
	copy(r.ram[listA+128:], newDesc(OpNOOP, rcr|FlagFence, 0x3040, 0, 0, 0)[:])
	copy(r.ram[listA+192:], newDesc(OpNOOP, rcr, 0x3060, 0, 0, 0)[:])
	r.run(newDesc(OpBatch, rcr, crA, listA, 0, 4))
	c := r.cr(crA)
	if c.status != StatusBatchFail || c.bytes != 2 {
		t.Fatalf("batch CR %+v", c)
	}
	if r.ram[0x3020] != StatusSuccess || r.ram[0x3040] != 0 || r.ram[0x3060] != 0 {
		t.Fatalf("fence: members %#x %#x %#x", r.ram[0x3020], r.ram[0x3040], r.ram[0x3060])
	}
	// A false predicate also stops fenced descriptors (conditional execution),
	// but is not a batch failure by itself.
	clear(r.ram[0x3000:0x3100])
	copy(r.ram[srcA:], "abcd")
	copy(r.ram[dstA:], "abce")
	copy(r.ram[listA:], newDesc(OpCompare, rcr|FlagCheckRes, 0x3000, srcA, dstA, 4)[:])
	copy(r.ram[listA+64:], newDesc(OpNOOP, rcr|FlagFence, 0x3020, 0, 0, 0)[:])
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpBatch, rcr, crA, listA, 0, 2))
	if r.ram[0x3000] != StatusSuccessPred || r.ram[0x3020] != 0 {
		t.Fatalf("predicate: %#x %#x", r.ram[0x3000], r.ram[0x3020])
	}
}

func TestFenceReservedOutsideBatchButAllowedInside(t *testing.T) {
	r := batchRig(t)
	copy(r.ram[listA:], newDesc(OpNOOP, rcr|FlagFence, 0x3000, 0, 0, 0)[:])
	copy(r.ram[listA+64:], newDesc(OpNOOP, rcr|FlagFence, 0x3020, 0, 0, 0)[:])
	r.run(newDesc(OpBatch, rcr, crA, listA, 0, 2))
	if r.cr(crA).status != StatusSuccess || r.ram[0x3000] != StatusSuccess || r.ram[0x3020] != StatusSuccess {
		t.Fatal("fenced members in a batch")
	}
}

func TestDIFFlags(t *testing.T) {
	r := opsRig(t)
	const bs = 520
	fillRand(r.ram[srcA:srcA+2*bs], 13)
	d := newDesc(OpDIFInsert, rcr, crA, srcA, dstA, 2*bs)
	d[42] = 1 // 520-byte blocks
	d[41] = difDstAppInc
	put32(d, 56, 0x10)
	put16(d, 62, 0x0a00)
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccess {
		t.Fatalf("insert %+v", c)
	}
	blk1 := r.ram[dstA+bs+8:]
	if binary.BigEndian.Uint16(blk1[bs+2:]) != 0x0a01 || binary.BigEndian.Uint32(blk1[bs+4:]) != 0x11 {
		t.Fatalf("incrementing app tag / ref tag % x", blk1[bs:bs+8])
	}
	check := func(src byte, app, mask uint16, ref uint32) crec {
		clear(r.ram[crA : crA+32])
		d := newDesc(OpDIFCheck, rcr, crA, dstA, 0, 2*(bs+8))
		d[40], d[42] = src, 1
		put32(d, 48, ref)
		put16(d, 52, mask)
		put16(d, 54, app)
		r.run(d)
		return r.cr(crA)
	}
	if c := check(difSrcAppInc, 0x0a00, 0, 0x10); c.status != StatusSuccess {
		t.Fatalf("check incrementing app tag %+v", c)
	}
	if c := check(0, 0x0a00, 0, 0x10); c.status != StatusDIFErr || c.result != difStatusApp || c.bytes != bs+8 {
		t.Fatalf("fixed app tag on incrementing data %+v", c)
	}
	if c := check(0, 0x0a00, 0x000f, 0x10); c.status != StatusSuccess {
		t.Fatalf("masked app tag bits %+v", c)
	}
	if c := check(difSrcRefFixed|difSrcAppInc, 0x0a00, 0, 0x10); c.status != StatusDIFErr || c.result != difStatusRef {
		t.Fatalf("fixed ref tag on incrementing data %+v", c)
	}
	// App tag 0xFFFF escape: block 1 is not checked at all.
	binary.BigEndian.PutUint16(blk1[bs+2:], 0xffff)
	blk1[0] ^= 1 // and its guard is now wrong
	if c := check(difSrcAppInc|difSrcAppFDet, 0x0a00, 0, 0x10); c.status != StatusSuccess {
		t.Fatalf("app tag F detect %+v", c)
	}
	if c := check(difSrcAppInc, 0x0a00, 0, 0x10); c.status != StatusDIFErr || c.result&difStatusGuard == 0 {
		t.Fatalf("without F detect %+v", c)
	}
	blk1[0] ^= 1
	binary.BigEndian.PutUint16(blk1[bs+2:], 0x0a01)
	// Update with guard, app and ref pass-through copies the source PI.
	clear(r.ram[crA : crA+32])
	d = newDesc(OpDIFUpdate, rcr, crA, dstA, dst2A, 2*(bs+8))
	d[40], d[41], d[42] = difSrcAppInc, difDstGuardPass|difDstAppPass|difDstRefPass, 1
	put32(d, 48, 0x10)
	put16(d, 54, 0x0a00)
	put32(d, 56, 0x999)
	r.run(d)
	if c := r.cr(crA); c.status != StatusSuccess || !bytes.Equal(r.ram[dst2A:dst2A+2*(bs+8)], r.ram[dstA:dstA+2*(bs+8)]) {
		t.Fatalf("pass-through update %+v", c)
	}
}
