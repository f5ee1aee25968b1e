package dsa

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"
)

// Offsets from the Linux uapi (include/uapi/linux/idxd.h): struct
// dsa_hw_desc and struct dsa_completion_record.
func TestDescriptorLayout(t *testing.T) {
	var d Descriptor
	for name, c := range map[string][2]uintptr{
		"size":            {unsafe.Sizeof(d), 64},
		"completion_addr": {unsafe.Offsetof(d.Completion), 8},
		"src_addr":        {unsafe.Offsetof(d.Src), 16},
		"dst_addr":        {unsafe.Offsetof(d.Dst), 24},
		"xfer_size":       {unsafe.Offsetof(d.Size), 32},
		"int_handle":      {unsafe.Offsetof(d.IntHandle), 36},
		"rsvd1":           {unsafe.Offsetof(d.Rsvd), 38},
		"op_specific":     {unsafe.Offsetof(d.OpSpecific), 40},
	} {
		if c[0] != c[1] {
			t.Errorf("dsa_hw_desc %s: %d, want %d", name, c[0], c[1])
		}
	}
	var c CompletionRecord
	for name, v := range map[string][2]uintptr{
		"size":            {unsafe.Sizeof(c), 32},
		"result":          {unsafe.Offsetof(c.Result), 1},
		"fault_info":      {unsafe.Offsetof(c.FaultInfo), 2},
		"bytes_completed": {unsafe.Offsetof(c.Bytes), 4},
		"fault_addr":      {unsafe.Offsetof(c.FaultAddr), 8},
		"op_specific":     {unsafe.Offsetof(c.OpSpecific), 16},
	} {
		if v[0] != v[1] {
			t.Errorf("dsa_completion_record %s: %d, want %d", name, v[0], v[1])
		}
	}
	// Bytes() is the in-memory little-endian image of the struct.
	d = NewDescriptor(OpMemMove, FlagCRAV|FlagRCR)
	d.PASIDPriv, d.Completion, d.Src, d.Dst, d.Size, d.IntHandle = 1<<31|5, 0x1000, 0x2000, 0x3000, 4096, 1
	d.SetU64(40, 0x1122334455667788)
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, &d)
	if b := d.Bytes(); !bytes.Equal(b[:], buf.Bytes()) {
		t.Fatalf("Bytes() % x\nbinary   % x", b, buf.Bytes())
	}
	if d.Opcode() != OpMemMove || d.Flags() != FlagCRAV|FlagRCR {
		t.Fatal("opcode/flags")
	}
	// The engines read what Descriptor encodes.
	ram := make([]byte, memSize)
	mem := mustMem(t, ram)
	d = NewDescriptor(OpFill, FlagCRAV|FlagRCR)
	d.Completion, d.Src, d.Dst, d.Size = crA, 0x0101010101010101, dstA, 100
	b := d.Bytes()
	if st := Execute(mem, &b); st != StatusSuccess || ram[dstA+99] != 1 {
		t.Fatalf("status %#x", st)
	}
	if cr := ParseCompletionRecord(ram[crA:]); cr.Status != StatusSuccess {
		t.Fatalf("record %+v", cr)
	}
}
