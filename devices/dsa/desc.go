package dsa

import (
	"encoding/binary"
)

// Descriptor is the 64-byte DSA work descriptor in memory order (SPEC 8.1;
// Linux uapi struct dsa_hw_desc). The engines parse raw bytes; this type is
// for software that builds descriptors (tests, the benchmark harness).
type Descriptor struct {
	PASIDPriv  uint32 // 19:0 PASID, 31 privileged (ignored for dedicated WQs)
	FlagsOp    uint32 // 23:0 flags, 31:24 opcode
	Completion uint64 // completion record address (32-byte aligned)
	Src        uint64 // source / fill pattern / batch descriptor list / ...
	Dst        uint64 // destination / second source / compare pattern / ...
	Size       uint32 // transfer size / batch descriptor count
	IntHandle  uint16 // completion interrupt handle (MSI-X index)
	Rsvd       uint16
	OpSpecific [24]byte // bytes 40..63
}

// NewDescriptor returns a descriptor with opcode op and flags set.
func NewDescriptor(op uint8, flags uint32) Descriptor {
	return Descriptor{FlagsOp: flags&0xffffff | uint32(op)<<24}
}

// Opcode and Flags decode FlagsOp.
func (d *Descriptor) Opcode() uint8 { return uint8(d.FlagsOp >> 24) }
func (d *Descriptor) Flags() uint32 { return d.FlagsOp & 0xffffff }
func (d *Descriptor) SetU64(off int, v uint64) {
	binary.LittleEndian.PutUint64(d.OpSpecific[off-40:], v)
}
func (d *Descriptor) SetU32(off int, v uint32) {
	binary.LittleEndian.PutUint32(d.OpSpecific[off-40:], v)
}

// Bytes encodes the descriptor as the device reads it.
func (d *Descriptor) Bytes() [64]byte {
	var b [64]byte
	le := binary.LittleEndian
	le.PutUint32(b[0:], d.PASIDPriv)
	le.PutUint32(b[4:], d.FlagsOp)
	le.PutUint64(b[8:], d.Completion)
	le.PutUint64(b[16:], d.Src)
	le.PutUint64(b[24:], d.Dst)
	le.PutUint32(b[32:], d.Size)
	le.PutUint16(b[36:], d.IntHandle)
	le.PutUint16(b[38:], d.Rsvd)
	copy(b[40:], d.OpSpecific[:])
	return b
}

// CompletionRecord is the 32-byte DSA completion record (SPEC 8.2; uapi
// struct dsa_completion_record).
type CompletionRecord struct {
	Status     uint8 // 5:0 status (0: not written yet), 7: faulting access was a write
	Result     uint8 // Compare result, Memory Move direction, DIF status
	FaultInfo  uint8
	Rsvd       uint8
	Bytes      uint32 // bytes completed / descriptors completed (Batch)
	FaultAddr  uint64
	OpSpecific [16]byte // invalid flags, CRC value, delta record size, DIF tags
}

// ParseCompletionRecord decodes a completion record (len(b) >= 32).
func ParseCompletionRecord(b []byte) CompletionRecord {
	var c CompletionRecord
	if len(b) < CompletionRecLen {
		return c
	}
	le := binary.LittleEndian
	c.Status, c.Result, c.FaultInfo, c.Rsvd = b[0], b[1], b[2], b[3]
	c.Bytes = le.Uint32(b[4:])
	c.FaultAddr = le.Uint64(b[8:])
	copy(c.OpSpecific[:], b[16:32])
	return c
}
