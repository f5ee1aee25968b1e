package dsa

import (
	"encoding/binary"
)

// T10 DIF operations (SPEC 8.3.12-8.3.15). Each protected block is followed
// by 8 bytes of protection information, big-endian: guard tag (CRC-16
// T10-DIF of the block's data), application tag, reference tag.
//
// Descriptor bytes (uapi dsa_hw_desc):
//
//	Check/Strip: 40 source DIF flags, 42 DIF flags, 48 ref tag seed, 52 app tag mask, 54 app tag seed
//	Insert:      41 dest DIF flags,   42 DIF flags, 56 ref tag seed, 60 app tag mask, 62 app tag seed
//	Update:      40 source flags, 41 dest flags, 42 DIF flags, 48/52/54 source seeds, 56/60/62 dest seeds
//
// DIF flags: 1:0 block size (512, 520, 4096, 4104), 2 invert CRC seed
// (guard CRC starts at 0xFFFF), 3 invert CRC result.
// Source flags: 7 ref tag fixed (else incrementing per block), 6 ref tag
// check disable, 5 guard check disable, 4 app tag incrementing (else fixed),
// 3 app+ref tag all-F detect, 2 app tag all-F detect, 1 all-F detect,
// 0 report all-F detection as an error.
// Dest flags: 7 ref tag fixed, 6 ref tag pass-through, 5 guard pass-through,
// 4 app tag incrementing, 3 app tag pass-through (pass-through only for Update).
// App tag mask: a 1 bit is not checked (SPDK passes ~mask).
//
// DIF status (CR byte 1) on error 0x09: bit 0 guard, bit 1 app tag, bit 2
// ref tag mismatch, bit 3 all-F error. Bytes completed counts the source
// bytes of the blocks processed before the failing one; CR bytes 16-23 hold
// the source tags expected for the next (failing) block, and for
// Insert/Update bytes 24-31 the destination tags for the next block, so
// software can continue.

const difPI = 8

var difBlockSizes = [4]uint64{512, 520, 4096, 4104}

const (
	difSrcRefFixed    = 1 << 7
	difSrcRefNoCheck  = 1 << 6
	difSrcGuardNoChk  = 1 << 5
	difSrcAppInc      = 1 << 4
	difSrcAppRefFDet  = 1 << 3
	difSrcAppFDet     = 1 << 2
	difSrcAllFDet     = 1 << 1
	difSrcAllFErr     = 1 << 0
	difDstRefFixed    = 1 << 7
	difDstRefPass     = 1 << 6
	difDstGuardPass   = 1 << 5
	difDstAppInc      = 1 << 4
	difDstAppPass     = 1 << 3
	difInvertSeed     = 1 << 2
	difInvertResult   = 1 << 3
	difStatusGuard    = 1 << 0
	difStatusApp      = 1 << 1
	difStatusRef      = 1 << 2
	difStatusAllFErr  = 1 << 3
	difFlagsValidMask = 0x0f
)

type difTags struct {
	ref     uint32
	appMask uint16
	app     uint16
}

func (t difTags) next(refFixed, appInc bool) difTags {
	if !refFixed {
		t.ref++
	}
	if appInc {
		t.app++
	}
	return t
}

func (t difTags) put(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], t.ref)
	binary.LittleEndian.PutUint16(b[4:], t.appMask)
	binary.LittleEndian.PutUint16(b[6:], t.app)
}

func difGuard(flags byte, data []byte) uint16 {
	var seed uint16
	if flags&difInvertSeed != 0 {
		seed = 0xffff
	}
	g := crc16T10(seed, data)
	if flags&difInvertResult != 0 {
		g = ^g
	}
	return g
}

// difCheckBlock checks one block's PI against the expected tags.
func difCheckBlock(flags, src byte, data, pi []byte, t difTags) byte {
	guard := binary.BigEndian.Uint16(pi[0:])
	app := binary.BigEndian.Uint16(pi[2:])
	ref := binary.BigEndian.Uint32(pi[4:])
	allF := guard == 0xffff && app == 0xffff && ref == 0xffffffff
	if src&difSrcAllFDet != 0 && allF {
		if src&difSrcAllFErr != 0 {
			return difStatusAllFErr
		}
		return 0
	}
	if src&difSrcAppFDet != 0 && app == 0xffff {
		return 0
	}
	if src&difSrcAppRefFDet != 0 && app == 0xffff && ref == 0xffffffff {
		return 0
	}
	var st byte
	if src&difSrcGuardNoChk == 0 && guard != difGuard(flags, data) {
		st |= difStatusGuard
	}
	if (app^t.app)&^t.appMask != 0 {
		st |= difStatusApp
	}
	if src&difSrcRefNoCheck == 0 && ref != t.ref {
		st |= difStatusRef
	}
	return st
}

func (x *executor) dif(d *desc, c *completion) {
	m := x.mem
	raw := d.raw
	flags := raw[42]
	if flags&^difFlagsValidMask != 0 {
		c.status = StatusNonZeroRsvd // reserved DIF flag bits
		return
	}
	bs := difBlockSizes[flags&3]
	srcFlags, dstFlags := raw[40], raw[41]
	n := uint64(d.size)
	var inBlk, outBlk uint64 // source / destination bytes per block
	switch d.op {
	case OpDIFCheck:
		inBlk = bs + difPI
	case OpDIFInsert:
		inBlk, outBlk = bs, bs+difPI
	case OpDIFStrip:
		inBlk, outBlk = bs+difPI, bs
	case OpDIFUpdate:
		inBlk, outBlk = bs+difPI, bs+difPI
	}
	if n%inBlk != 0 {
		c.status = StatusXferSize
		return
	}
	blocks := n / inBlk
	src, dst := d.a16, d.a24
	if outBlk != 0 && overlaps(src, n, dst, blocks*outBlk) {
		c.status = StatusOverlap
		return
	}
	srcT := difTags{ref: d.u32(48), appMask: d.u16(52), app: d.u16(54)}
	dstT := difTags{ref: d.u32(56), appMask: d.u16(60), app: d.u16(62)}
	buf := make([]byte, bs+difPI)
	for i := uint64(0); i < blocks; i++ {
		in := buf[:inBlk]
		sa := src + i*inBlk
		if err := m.ReadAt(in, sa); err != nil {
			c.pageFault(sa+validPrefix(m, sa, inBlk), false, i*inBlk)
			srcT.put(c.extra[0:])
			dstT.put(c.extra[8:])
			return
		}
		var st byte
		switch d.op {
		case OpDIFCheck, OpDIFStrip, OpDIFUpdate:
			st = difCheckBlock(flags, srcFlags, in[:bs], in[bs:bs+difPI], srcT)
		}
		if st != 0 {
			c.status, c.result, c.bytes = StatusDIFErr, st, uint32(i*inBlk)
			srcT.put(c.extra[0:])
			if d.op == OpDIFUpdate {
				dstT.put(c.extra[8:])
			}
			return
		}
		if outBlk != 0 {
			out := buf[:outBlk]
			if d.op == OpDIFInsert || d.op == OpDIFUpdate {
				var pi [difPI]byte
				old := in[bs:inBlk:inBlk]
				g := difGuard(flags, in[:bs])
				app, ref := dstT.app, dstT.ref
				if d.op == OpDIFUpdate {
					if dstFlags&difDstGuardPass != 0 {
						g = binary.BigEndian.Uint16(old[0:])
					}
					if dstFlags&difDstAppPass != 0 {
						app = binary.BigEndian.Uint16(old[2:])
					}
					if dstFlags&difDstRefPass != 0 {
						ref = binary.BigEndian.Uint32(old[4:])
					}
				}
				binary.BigEndian.PutUint16(pi[0:], g)
				binary.BigEndian.PutUint16(pi[2:], app)
				binary.BigEndian.PutUint32(pi[4:], ref)
				copy(out[bs:], pi[:])
			}
			da := dst + i*outBlk
			if err := m.WriteAt(out, da); err != nil {
				c.pageFault(da+validPrefix(m, da, outBlk), true, i*inBlk)
				srcT.put(c.extra[0:])
				dstT.put(c.extra[8:])
				return
			}
		}
		srcT = srcT.next(srcFlags&difSrcRefFixed != 0, srcFlags&difSrcAppInc != 0)
		dstT = dstT.next(dstFlags&difDstRefFixed != 0, dstFlags&difDstAppInc != 0)
	}
	switch d.op {
	case OpDIFCheck, OpDIFStrip:
		srcT.put(c.extra[0:])
	case OpDIFInsert:
		dstT.put(c.extra[8:])
	case OpDIFUpdate:
		srcT.put(c.extra[0:])
		dstT.put(c.extra[8:])
	}
}
