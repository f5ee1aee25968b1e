package dsa

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"unsafe"

	"godvm/guestmem"
)

// The descriptor engine: validation, the operations, completion records and
// completion interrupts (dsa-model.md §4; SPEC ch. 5 and 8). It touches guest
// memory only through *guestmem.Memory and never panics on guest input.

// Interrupter raises an MSI-X vector of the device. The MSI-X model behind it
// honours the entry's mask (setting the PBA bit instead).
type Interrupter interface {
	Notify(vector int)
}

// SWError is one software-error report (the SWERROR register, SPEC 9.2.15).
type SWError struct {
	Code       uint8
	WQ         int // -1: no WQ index
	Desc       bool
	Opcode     uint8
	PASID      uint32
	Priv       bool
	Batch      bool
	BatchIndex uint16
	FaultAddr  uint64
	FaultWrite bool
	// InvalidFlags is the bitmask of the descriptor's invalid flags for
	// code 0x11 (SWERROR qword 1 bits 63:32, with Error Info Valid).
	InvalidFlags uint32
}

// wqParams is what a WQ's configuration fixes for the descriptors it accepts
// (snapshotted at Enable WQ).
type wqParams struct {
	id        int
	dedicated bool
	maxXfer   uint64
	maxBatch  uint32
	bof       bool
	pasid     uint32
	priv      bool
	opcap     [4]uint64
}

// executor runs descriptors. It is shared by the device's engines, the
// standalone runner and the fuzz targets.
type executor struct {
	mem         *guestmem.Memory // set with setMem
	ram         []ramRange       // mem's regions (setMem)
	intr        Interrupter      // nil: no interrupts
	vectors     int
	version     uint32
	swerr       func(SWError)    // nil: dropped
	drain       func(wq int)     // waits for earlier descriptors of the WQ (Drain op); nil: no-op
	ignored     func(v int) bool // MSIXPERM Ignore; nil: none ignored
	opcap       uint64
	readbackCap bool
}

// work is one accepted descriptor.
type work struct {
	desc  [64]byte
	p     *wqParams
	gen   uint64
	seq   uint64
	pasid uint32
	slot  uint8 // epoch slot it is counted in (workQueue.cnt)
	ims   bool  // came through an IMS portal
	priv  bool
	isDrn bool
	// guarded: memory faults already panic on this goroutine (an engine
	// sets debug.SetPanicOnFault once for its lifetime).
	guarded bool
	// shared: the group has several engines (activity is counted for
	// Drain descriptors).
	shared bool
}

// completion is a completion record being built.
type completion struct {
	status byte
	result byte
	bytes  uint32
	fault  uint64
	extra  [16]byte // CR bytes 16..31
}

func (c *completion) pageFault(addr uint64, write bool, done uint64) {
	c.status = StatusPageFault
	if write {
		c.status |= StatusFaultWrite
	}
	c.fault = addr
	c.bytes = uint32(done)
}

type desc struct {
	raw    *[64]byte
	flags  uint32
	op     byte
	crAddr uint64
	a16    uint64 // src / pattern / desc list
	a24    uint64 // dst / src2 / pattern
	size   uint32 // transfer size / desc count
	handle uint16
}

// parse fills d from the descriptor's bytes, field by field in place:
// building a desc value and copying it would load it back in 16-byte words
// over the narrower stores that built it, which the CPU cannot forward (a
// stall of several nanoseconds per descriptor, measured).
func (d *desc) parse(raw *[64]byte) {
	le := binary.LittleEndian
	w1 := le.Uint32(raw[4:])
	d.raw = raw
	d.flags = w1 & 0xffffff
	d.op = byte(w1 >> 24)
	d.crAddr = le.Uint64(raw[8:])
	d.a16 = le.Uint64(raw[16:])
	d.a24 = le.Uint64(raw[24:])
	d.size = le.Uint32(raw[32:])
	d.handle = le.Uint16(raw[36:])
}

func (d *desc) u64(off int) uint64 { return binary.LittleEndian.Uint64(d.raw[off:]) }
func (d *desc) u32(off int) uint32 { return binary.LittleEndian.Uint32(d.raw[off:]) }
func (d *desc) u16(off int) uint16 { return binary.LittleEndian.Uint16(d.raw[off:]) }

const (
	commonFlags = FlagCRAV | FlagRCR | FlagRCI | FlagCC | FlagAddr1TC | FlagAddr2TC |
		FlagAddr3TC | FlagCRTC | FlagStrictOrd
	writesDest = 1 << iota
	hasSize
	checkResult
	// needsRCR: the operation's result is only in the completion record, so
	// Request Completion Record must be 1 (SPEC 8.3: Compare, Compare
	// Pattern, Create Delta Record, CRC Generation, Copy with CRC
	// Generation; dsa-model.md §4.2).
	needsRCR
)

// opRules: which generic rules apply to an opcode (opInfo's table is made
// from it).
func opRules(op byte) (props int, opFlags uint32) {
	switch op {
	case OpNOOP:
		return 0, 0
	case OpBatch:
		return 0, 0
	case OpDrain:
		return 0, 0
	case OpMemMove, OpFill, OpDualcast, OpCopyCRC, OpDIFInsert, OpDIFStrip, OpDIFUpdate:
		if op == OpCopyCRC {
			return writesDest | hasSize | needsRCR, FlagCRCReadSeed | FlagCRCBypassInvRefl | FlagCRCBypassDataRef
		}
		return writesDest | hasSize, 0
	case OpCompare, OpCompVal:
		return hasSize | checkResult | needsRCR, 0
	case OpCRDelta:
		return writesDest | hasSize | checkResult | needsRCR, 0
	case OpAPDelta:
		return writesDest | hasSize, 0
	case OpCRCGen:
		return hasSize | needsRCR, FlagCRCReadSeed | FlagCRCBypassInvRefl | FlagCRCBypassDataRef
	case OpDIFCheck:
		return hasSize, 0
	case OpCFlush:
		return hasSize, 0
	}
	return 0, 0
}

// opInfos is opRules for every opcode, looked up per descriptor.
var opInfos = func() (t [256]struct {
	props   int
	opFlags uint32
}) {
	for op := range t {
		t[op].props, t[op].opFlags = opRules(byte(op))
	}
	return t
}()

// opInfo: which generic rules apply to an opcode.
func opInfo(op byte) (props int, opFlags uint32) {
	e := &opInfos[op]
	return e.props, e.opFlags
}

// run executes one descriptor (not part of a batch when batchIdx < 0),
// writes its completion record, raises its interrupt and returns its status.
//
// One deferred recovery guards the whole descriptor, the operation and its
// completion record (see "Memory that vanishes" below): a fault while the
// operation runs completes the descriptor with a page fault, one while the
// record is written is reported as a completion-record fault; either way the
// interrupt is still raised. On the normal path the guard costs a deferred
// call that finds nothing to do.
func (x *executor) run(w *work, raw *[64]byte, batchIdx int, buf *[]byte) (st byte) {
	if !w.guarded {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	}
	var d desc
	d.parse(raw)
	var c completion
	phase := phaseExecute
	defer func() {
		if phase == phaseDone {
			return
		}
		r := recover()
		if r == nil {
			return // runtime.Goexit
		}
		addr, ok := faultAddr(r)
		if !ok {
			panic(r)
		}
		if phase == phaseExecute {
			x.faultCompletion(&d, addr, &c)
			x.record(w, &d, batchIdx, &c, true)
		} else {
			x.report(w, &d, batchIdx, &c, StatusCRFault, d.crAddr, true)
		}
		x.interrupt(w, &d, &c)
		st = c.status &^ StatusFaultWrite
	}()
	x.execute(w, &d, batchIdx, &c, buf)
	phase = phaseRecord
	x.record(w, &d, batchIdx, &c, false)
	phase = phaseDone
	x.interrupt(w, &d, &c)
	return c.status &^ StatusFaultWrite
}

// Phases of a descriptor under run's guard.
const (
	phaseExecute = iota
	phaseRecord
	phaseDone
)

// Memory that vanishes under the device.
//
// Guest memory is normally the VMM's own RAM, but behind `godvm dsa-server`
// it is the client's file, mapped at DMA_MAP time. The server checks the
// file's size then (vfiouser checkDMAFile), yet a hostile or buggy client can
// still truncate the file afterwards (a memfd that is not sealed, a tmpfs or
// hugetlbfs file cannot be sealed at all), and the next access to a page past
// the new end is a SIGBUS that would kill the whole server. So every access
// the engine makes to guest memory runs with runtime/debug.SetPanicOnFault:
// the fault becomes a recoverable panic on this goroutine, and the descriptor
// completes with a page fault at the guest address that faulted, which is
// what an IOMMU translation failure looks like to software. The flag is set
// and restored around each descriptor (it is per goroutine and costs a store).

// faultCompletion makes c the completion of a descriptor whose operation
// faulted at host address addr: a page fault at the page, but not below the
// start of the operand it is in, and 0 bytes completed, since the copy may
// have run in any order.
func (x *executor) faultCompletion(d *desc, addr uintptr, c *completion) {
	gpa := x.gpaOf(addr)
	fault := gpa &^ 0xfff
	write := false
	n := uint64(d.size)
	props, _ := opInfo(d.op)
	for i, a := range [2]uint64{d.a16, d.a24} {
		if gpa >= a && gpa-a < n {
			fault = max(fault, a)
			write = i == 1 && props&writesDest != 0
			break
		}
	}
	*c = completion{}
	c.pageFault(fault, write, 0)
}

// faultAddr returns the address of a memory fault turned into a panic by
// debug.SetPanicOnFault (a runtime.Error with an Addr method).
func faultAddr(r any) (uintptr, bool) {
	e, ok := r.(interface {
		runtime.Error
		Addr() uintptr
	})
	if !ok {
		return 0, false
	}
	return e.Addr(), true
}

// gpaOf maps a host address inside guest memory back to its guest address
// (0 if it is not in guest memory).
func (x *executor) gpaOf(addr uintptr) uint64 {
	for _, r := range x.mem.Regions() {
		h := r.Host()
		if len(h) == 0 {
			continue
		}
		base := uintptr(unsafe.Pointer(unsafe.SliceData(h)))
		if addr >= base && addr-base < uintptr(len(h)) {
			return r.GPA + uint64(addr-base)
		}
	}
	return 0
}

// writeRecord writes a completion record, status byte last with release
// ordering; false if its memory is not there. A fault of memory that
// vanished (see above) panics, for run's guard, unless guarded, when it is
// caught here and also answered false.
//
// The record is 32-byte aligned (checked by the caller), so it lies in one
// region and its first four bytes (status, result, fault info, reserved)
// are one aligned word: bytes 4-31 are stored straight into guest memory,
// then that word with one atomic (release) store, so the status byte
// becomes visible together with, and never before, the rest.
func (x *executor) writeRecord(addr uint64, c *completion, guarded bool) (ok bool) {
	if guarded {
		defer func() {
			if r := recover(); r != nil {
				if _, isFault := faultAddr(r); !isFault {
					panic(r)
				}
				ok = false
			}
		}()
	}
	if b, found := x.slice(addr, CompletionRecLen); found && uintptr(unsafe.Pointer(&b[0]))&3 == 0 {
		b = b[:CompletionRecLen]
		le := binary.LittleEndian
		le.PutUint32(b[4:], c.bytes)
		le.PutUint64(b[8:], c.fault)
		copy(b[16:32], c.extra[:])
		atomic.StoreUint32((*uint32)(unsafe.Pointer(&b[0])), uint32(c.status)|uint32(c.result)<<8)
		return true
	}
	// Not in one region or not word-aligned in the host mapping: byte
	// writes, then the status byte.
	var rec [CompletionRecLen]byte
	rec[1] = c.result
	binary.LittleEndian.PutUint32(rec[4:], c.bytes)
	binary.LittleEndian.PutUint64(rec[8:], c.fault)
	copy(rec[16:], c.extra[:])
	if err := x.mem.WriteAt(rec[1:], addr+1); err != nil {
		return false
	}
	return x.mem.StoreU8Release(addr, c.status) == nil
}

func (x *executor) execute(w *work, d *desc, batchIdx int, c *completion, buf *[]byte) {
	p := w.p
	inBatch := batchIdx >= 0
	props, opFlags := opInfo(d.op)
	supported := x.opcap&p.opcap[0]&(1<<d.op) != 0 && d.op < 64
	if d.op >= 64 {
		supported = false
	}
	if !supported || (inBatch && (d.op == OpBatch || d.op == OpDrain)) {
		c.status = StatusBadOpcode
		return
	}
	allowed := uint32(commonFlags) | opFlags
	if inBatch {
		allowed |= FlagFence
	}
	if p.bof {
		allowed |= FlagBOF
	}
	if props&checkResult != 0 {
		allowed |= FlagCheckRes
	}
	if props&writesDest != 0 && x.readbackCap {
		allowed |= FlagDestRdback
	}
	bad := d.flags &^ allowed
	if d.flags&FlagRCR != 0 && d.flags&FlagCRAV == 0 {
		bad |= FlagRCR
	}
	// A flag that must be 1 and is 0 is as invalid as one that must be 0:
	// the bitmask names the flags whose value is wrong.
	if props&needsRCR != 0 && d.flags&FlagRCR == 0 {
		bad |= FlagRCR
	}
	if d.op == OpDrain && d.flags&(FlagRCR|FlagRCI) == 0 {
		// Drain must request a completion record or an interrupt (SPEC
		// 8.3.3): otherwise nobody could tell when it finished.
		bad |= FlagRCR | FlagRCI
	}
	if bad != 0 {
		c.status = StatusInvalFlags
		c.extra[0], c.extra[1], c.extra[2] = byte(bad), byte(bad>>8), byte(bad>>16)
		return
	}
	if d.u16(38) != 0 {
		c.status = StatusNonZeroRsvd
		return
	}
	if d.flags&FlagRCI != 0 && (w.ims || int(d.handle) >= x.vectors) {
		c.status = StatusIntHandle
		return
	}
	if props&hasSize != 0 && (d.size == 0 || uint64(d.size) > p.maxXfer) {
		c.status = StatusXferSize
		return
	}
	c.status = StatusSuccess
	m := x.mem
	n := uint64(d.size)
	switch d.op {
	case OpNOOP:
	case OpDrain:
		if x.drain != nil && p != nil {
			x.drain(p.id)
		}
	case OpBatch:
		x.batch(w, d, c, buf)
	case OpMemMove:
		src, dst := d.a16, d.a24
		backward := dst > src && dst < src+n
		if ds, ok := x.slice(dst, n); ok {
			if ss, ok := x.slice(src, n); ok {
				// Fast path: each operand in one region, bounds checked
				// once; one copy (memmove) straight between them.
				copy(ds, ss)
				if backward {
					c.result = 1
				}
				return
			}
		}
		ns, nd := validPrefix(m, src, n), validPrefix(m, dst, n)
		k := min(ns, nd)
		if k < n {
			if backward {
				k = 0
			}
			copyGuest(m, dst, src, k, buf)
			if ns == min(ns, nd) {
				c.pageFault(src+ns, false, k)
			} else {
				c.pageFault(dst+nd, true, k)
			}
			if backward {
				c.result = 1
			}
			return
		}
		copyGuest(m, dst, src, n, buf)
		if backward {
			c.result = 1
		}
	case OpFill:
		var pat [8]byte
		binary.LittleEndian.PutUint64(pat[:], d.a16)
		dst := d.a24
		if b, ok := x.slice(dst, n); ok {
			fillPattern(b, pat[:], 0)
			return
		}
		k := validPrefix(m, dst, n)
		forEach(m, dst, k, func(b []byte, off uint64) bool {
			fillPattern(b, pat[:], off)
			return true
		})
		if k < n {
			c.pageFault(dst+k, true, k)
		}
	case OpCompare:
		a, b := d.a16, d.a24
		na, nb := validPrefix(m, a, n), validPrefix(m, b, n)
		k := min(na, nb)
		if off, diff := x.compare(a, b, k, buf); diff {
			c.result, c.bytes = 1, uint32(off)
		} else if k < n {
			if na == k {
				c.pageFault(a+na, false, k)
			} else {
				c.pageFault(b+nb, false, k)
			}
			return
		}
		x.checkResult(d, c, d.raw[40]&1 == c.result)
	case OpCompVal:
		var pat [8]byte
		binary.LittleEndian.PutUint64(pat[:], d.a24)
		src := d.a16
		k := validPrefix(m, src, n)
		diffAt := uint64(0)
		diff := false
		forEach(m, src, k, func(b []byte, off uint64) bool {
			if i, ok := comparePattern(b, &pat, off); !ok {
				diffAt, diff = off+uint64(i), true
				return false
			}
			return true
		})
		if diff {
			c.result, c.bytes = 1, uint32(diffAt)
		} else if k < n {
			c.pageFault(src+k, false, k)
			return
		}
		x.checkResult(d, c, d.raw[40]&1 == c.result)
	case OpCRDelta:
		x.createDelta(d, c)
	case OpAPDelta:
		x.applyDelta(d, c, buf)
	case OpDualcast:
		src, d1, d2 := d.a16, d.a24, d.u64(40)
		if d1&0xfff != d2&0xfff {
			c.status = StatusDualcastAlign
			return
		}
		if overlaps(src, n, d1, n) || overlaps(src, n, d2, n) || overlaps(d1, n, d2, n) {
			c.status = StatusOverlap
			return
		}
		ns, n1, n2 := validPrefix(m, src, n), validPrefix(m, d1, n), validPrefix(m, d2, n)
		k := min(ns, n1, n2)
		copyGuest(m, d1, src, k, buf)
		copyGuest(m, d2, src, k, buf)
		if k < n {
			switch k {
			case ns:
				c.pageFault(src+k, false, k)
			case n1:
				c.pageFault(d1+k, true, k)
			default:
				c.pageFault(d2+k, true, k)
			}
		}
	case OpCRCGen, OpCopyCRC:
		x.crc(d, c, buf)
	case OpDIFCheck, OpDIFInsert, OpDIFStrip, OpDIFUpdate:
		x.dif(d, c)
	case OpCFlush:
		// Nothing is cached on the device's side of a software model; the
		// range must still be memory.
		if k := validPrefix(m, d.a24, n); k < n {
			c.pageFault(d.a24+k, true, k)
		}
	}
}

func (x *executor) checkResult(d *desc, c *completion, expected bool) {
	if d.flags&FlagCheckRes != 0 && !expected {
		c.status = StatusSuccessPred
	}
}

func fillPattern(b, pat []byte, off uint64) {
	if len(b) == 0 {
		return
	}
	// first up to 8 bytes aligned to the pattern phase, then words up to
	// 256 bytes, then doubling copies
	n := min(len(b), 8)
	for i := range n {
		b[i] = pat[(off+uint64(i))&7]
	}
	if n < 8 {
		return
	}
	w := binary.LittleEndian.Uint64(b)
	for ; n+8 <= min(len(b), 256); n += 8 {
		binary.LittleEndian.PutUint64(b[n:], w)
	}
	for filled := n; filled < len(b); {
		filled += copy(b[filled:], b[:filled-(filled%8)])
	}
}

// compare finds the first differing byte of two RAM ranges.
func (x *executor) compare(a, b, n uint64, buf *[]byte) (uint64, bool) {
	m := x.mem
	if sa, ok := x.slice(a, n); ok {
		if sb, ok := x.slice(b, n); ok {
			if bytes.Equal(sa, sb) {
				return 0, false
			}
			for i := range sa {
				if sa[i] != sb[i] {
					return uint64(i), true
				}
			}
		}
	}
	if len(*buf) < 2*chunk {
		*buf = make([]byte, 2*chunk)
	}
	ba, bb := (*buf)[:chunk], (*buf)[chunk:2*chunk]
	for done := uint64(0); done < n; {
		k := min(n-done, chunk)
		m.ReadAt(ba[:k], a+done)
		m.ReadAt(bb[:k], b+done)
		for i := range k {
			if ba[i] != bb[i] {
				return done + i, true
			}
		}
		done += k
	}
	return 0, false
}

func (x *executor) crc(d *desc, c *completion, buf *[]byte) {
	m := x.mem
	n := uint64(d.size)
	seed := d.u32(40)
	if d.flags&FlagCRCReadSeed != 0 {
		sa := d.u64(48)
		if sa&7 != 0 {
			c.status = StatusAddrAlign
			return
		}
		v, err := m.ReadU32(sa)
		if err != nil {
			c.pageFault(sa, false, 0)
			return
		}
		seed = v
	}
	src := d.a16
	k := validPrefix(m, src, n)
	var fault uint64
	var faultW bool
	if d.op == OpCopyCRC {
		dst := d.a24
		if overlaps(src, n, dst, n) {
			c.status = StatusOverlap
			return
		}
		kd := validPrefix(m, dst, n)
		if kd < k {
			fault, faultW = dst+kd, true
			k = kd
		} else if k < n {
			fault = src + k
		}
		copyGuest(m, dst, src, k, buf)
	} else if k < n {
		fault = src + k
	}
	s := newCRC(seed, d.flags)
	if b, ok := x.slice(src, k); ok {
		s.update(b)
	} else {
		forEach(m, src, k, func(b []byte, _ uint64) bool { s.update(b); return true })
	}
	binary.LittleEndian.PutUint32(c.extra[0:], s.sum())
	if k < n {
		c.pageFault(fault, faultW, k)
	}
}

// Delta records (SPEC 8.3.7/8.3.8): 10-byte entries, a 16-bit offset in
// 8-byte units followed by the 8 bytes of new data.
const (
	deltaEntry   = 10
	maxDeltaXfer = 0x80000 // offsets are 16-bit in 8-byte units
)

func (x *executor) createDelta(d *desc, c *completion) {
	m := x.mem
	n := uint64(d.size)
	if n%8 != 0 || n > maxDeltaXfer {
		c.status = StatusXferSize
		return
	}
	rec, maxRec := d.u64(40), uint64(d.u32(48))
	if maxRec < 80 || maxRec%deltaEntry != 0 {
		c.status = StatusDeltaSize
		return
	}
	a, b := d.a16, d.a24
	if (a|b|rec)&7 != 0 { // sources and delta record are 8-byte aligned
		c.status = StatusAddrAlign
		return
	}
	if na := validPrefix(m, a, n); na < n {
		c.pageFault(a+na, false, 0)
		return
	}
	if nb := validPrefix(m, b, n); nb < n {
		c.pageFault(b+nb, false, 0)
		return
	}
	var out uint64
	var ent [deltaEntry]byte
	for off := uint64(0); off < n; off += 8 {
		va, _ := m.ReadU64(a + off)
		vb, _ := m.ReadU64(b + off)
		if va == vb {
			continue
		}
		if out+deltaEntry > maxRec {
			c.result = 2
			c.bytes = uint32(off)
			break
		}
		binary.LittleEndian.PutUint16(ent[0:], uint16(off/8))
		binary.LittleEndian.PutUint64(ent[2:], vb)
		if err := m.WriteAt(ent[:], rec+out); err != nil {
			c.pageFault(rec+out, true, off)
			binary.LittleEndian.PutUint32(c.extra[0:], uint32(out))
			return
		}
		out += deltaEntry
		c.result = 1
	}
	binary.LittleEndian.PutUint32(c.extra[0:], uint32(out))
	x.checkResult(d, c, d.raw[56]>>c.result&1 != 0)
}

func (x *executor) applyDelta(d *desc, c *completion, buf *[]byte) {
	m := x.mem
	n := uint64(d.size)
	if n%8 != 0 || n > maxDeltaXfer {
		c.status = StatusXferSize
		return
	}
	rec, recSize := d.a16, uint64(d.u32(40))
	if recSize == 0 || recSize%deltaEntry != 0 || recSize > n/8*deltaEntry {
		c.status = StatusDeltaSize
		return
	}
	if k := validPrefix(m, rec, recSize); k < recSize {
		c.pageFault(rec+k, false, 0)
		return
	}
	dst := d.a24
	if k := validPrefix(m, dst, n); k < n {
		c.pageFault(dst+k, true, 0)
		return
	}
	if uint64(len(*buf)) < recSize {
		*buf = make([]byte, max(recSize, chunk))
	}
	r := (*buf)[:recSize]
	m.ReadAt(r, rec)
	prev := -1
	for i := uint64(0); i < recSize; i += deltaEntry {
		off := int(binary.LittleEndian.Uint16(r[i:]))
		if off <= prev {
			c.status = StatusDeltaNoInc
			return
		}
		if uint64(off)*8+8 > n {
			c.status = StatusDeltaRange
			return
		}
		prev = off
	}
	for i := uint64(0); i < recSize; i += deltaEntry {
		off := uint64(binary.LittleEndian.Uint16(r[i:]))
		m.WriteAt(r[i+2:i+10], dst+off*8)
	}
}

func (x *executor) batch(w *work, d *desc, c *completion, buf *[]byte) {
	count := d.size
	list := d.a16
	if count < 2 || count > w.p.maxBatch {
		c.status = StatusDescCount
		return
	}
	if list&63 != 0 {
		c.status = StatusDescListAlign
		return
	}
	failed, notSuccess := false, false
	var done uint32
	var member [64]byte
	// The whole list in one region: bounds checked once, each member
	// copied out of it as the engine reaches it (as the hardware fetches).
	lb, whole := x.slice(list, uint64(count)*64)
	for i := range count {
		a := list + uint64(i)*64
		if whole {
			member = [64]byte(lb[uint64(i)*64:])
		} else if err := x.mem.ReadAt(member[:], a); err != nil {
			c.status = StatusBatchPF
			c.fault = a + validPrefix(x.mem, a, 64)
			c.bytes = done
			return
		}
		flags := binary.LittleEndian.Uint32(member[4:]) & 0xffffff
		if flags&FlagFence != 0 && notSuccess {
			// A fenced descriptor after a failed (or false-predicate)
			// member abandons the rest of the batch (SPEC 8.1.3).
			failed = true
			break
		}
		st := x.run(w, &member, int(i), buf)
		done++
		if st != StatusSuccess {
			notSuccess = true
			if st != StatusSuccessPred {
				failed = true
			}
		}
	}
	c.bytes = done
	if failed {
		c.status = StatusBatchFail
	}
}

// record writes the completion record (status byte last, with release
// ordering) where the descriptor asks for one, and reports to SWERROR what
// has no record to go to. guarded: see writeRecord.
func (x *executor) record(w *work, d *desc, batchIdx int, c *completion, guarded bool) {
	st := c.status &^ StatusFaultWrite
	success := st == StatusSuccess
	if success && d.flags&FlagRCR == 0 {
		return
	}
	switch {
	case d.flags&FlagCRAV == 0:
		if st != StatusSuccessPred && st != StatusBatchFail && !success {
			x.report(w, d, batchIdx, c, st, c.fault, c.status&StatusFaultWrite != 0)
		}
	case d.crAddr&(CompletionRecLen-1) != 0:
		x.report(w, d, batchIdx, c, StatusCRAlign, d.crAddr, true)
	default:
		if !x.writeRecord(d.crAddr, c, guarded) {
			x.report(w, d, batchIdx, c, StatusCRFault, d.crAddr, true)
		}
	}
}

// report logs a software error (SWERROR) for the descriptor.
func (x *executor) report(w *work, d *desc, batchIdx int, c *completion, code byte, addr uint64, write bool) {
	if x.swerr == nil {
		return
	}
	e := SWError{Code: code, WQ: w.p.id, Desc: true, Opcode: d.op, PASID: w.pasid, Priv: w.priv,
		FaultAddr: addr, FaultWrite: write}
	if code == StatusInvalFlags {
		// The same bitmask the completion record carries in bytes 16-18.
		e.InvalidFlags = uint32(c.extra[0]) | uint32(c.extra[1])<<8 | uint32(c.extra[2])<<16
	}
	if batchIdx >= 0 {
		e.Batch, e.BatchIndex = true, uint16(batchIdx)
	}
	x.swerr(e)
}

// interrupt raises the completion interrupt the descriptor asks for.
func (x *executor) interrupt(w *work, d *desc, c *completion) {
	st := c.status &^ StatusFaultWrite
	if d.flags&FlagRCI != 0 && st != StatusIntHandle && x.intr != nil && !w.ims && int(d.handle) < x.vectors &&
		(x.ignored == nil || !x.ignored(int(d.handle))) {
		x.intr.Notify(int(d.handle))
	}
}
