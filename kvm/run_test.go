package kvm

import (
	"encoding/binary"
	"testing"
	"unsafe"
)

func newTestRun(t *testing.T) (*Run, []byte) {
	t.Helper()
	w := make([]uint64, 4096/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4096)
	r, err := NewRun(b)
	if err != nil {
		t.Fatal(err)
	}
	return r, b
}

func TestNewRunRejectsShortOrUnaligned(t *testing.T) {
	if _, err := NewRun(make([]byte, 100)); err == nil {
		t.Error("short buffer accepted")
	}
	w := make([]uint64, 4096/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4096)
	if _, err := NewRun(b[1:]); err == nil {
		t.Error("unaligned buffer accepted")
	}
}

// The accessors are checked by writing the bytes where the kernel puts them
// (offsets from linux/kvm.h) and reading them back through the typed API.
func TestRunHeaderAndImmediateExit(t *testing.T) {
	r, b := newTestRun(t)
	le := binary.LittleEndian
	le.PutUint32(b[8:], uint32(ExitIO))
	b[12], b[13] = 1, 1
	le.PutUint64(b[16:], 0xf)
	le.PutUint64(b[24:], 0xfee00900)
	if r.ExitReason() != ExitIO || !r.ReadyForInterrupt() || !r.IFFlag() || r.CR8() != 0xf || r.APICBase() != 0xfee00900 {
		t.Errorf("header: %v %v %v %#x %#x", r.ExitReason(), r.ReadyForInterrupt(), r.IFFlag(), r.CR8(), r.APICBase())
	}
	r.SetImmediateExit(true)
	r.SetRequestInterruptWindow(true)
	if b[1] != 1 || b[0] != 1 || !r.ImmediateExit() {
		t.Error("immediate_exit/request_interrupt_window not at bytes 1/0")
	}
	r.SetImmediateExit(false)
	if b[1] != 0 {
		t.Error("immediate_exit not cleared")
	}
	if ExitIO.String() != "KVM_EXIT_IO" || ExitReason(99).String() != "KVM_EXIT(99)" {
		t.Error("ExitReason.String")
	}
}

func TestRunIO(t *testing.T) {
	r, b := newTestRun(t)
	b[32], b[33] = IODirOut, 2
	binary.LittleEndian.PutUint16(b[34:], 0x3f8)
	binary.LittleEndian.PutUint32(b[36:], 3)
	binary.LittleEndian.PutUint64(b[40:], 4096-6)
	io := r.IO()
	if io.Direction != IODirOut || io.Size != 2 || io.Port != 0x3f8 || io.Count != 3 || io.DataOffset != 4090 {
		t.Errorf("%+v", io)
	}
	d, err := r.IOData()
	if err != nil || len(d) != 6 || &d[0] != &b[4090] {
		t.Errorf("IOData: %v len %d", err, len(d))
	}
	// A data window leaving the page is an error, not a panic.
	binary.LittleEndian.PutUint64(b[40:], 4096-5)
	if _, err := r.IOData(); err == nil {
		t.Error("out-of-page io data accepted")
	}
	binary.LittleEndian.PutUint64(b[40:], ^uint64(0))
	if _, err := r.IOData(); err == nil {
		t.Error("huge offset accepted")
	}
}

func TestRunMMIO(t *testing.T) {
	r, b := newTestRun(t)
	binary.LittleEndian.PutUint64(b[32:], 0xfebc1000)
	copy(b[40:], []byte{1, 2, 3, 4, 5, 6, 7, 8})
	binary.LittleEndian.PutUint32(b[48:], 4)
	b[52] = 1
	m := r.MMIO()
	if m.PhysAddr != 0xfebc1000 || m.Len != 4 || m.IsWrite != 1 {
		t.Errorf("%+v", m)
	}
	d := r.MMIOData()
	if len(d) != 4 || d[3] != 4 {
		t.Errorf("data % x", d)
	}
	d[0] = 0xaa // a read's answer goes straight into the page
	if b[40] != 0xaa {
		t.Error("MMIOData does not alias kvm_run")
	}
	binary.LittleEndian.PutUint32(b[48:], 1000)
	if len(r.MMIOData()) != 8 {
		t.Error("len not clamped to 8")
	}
}

func TestRunInternalError(t *testing.T) {
	r, b := newTestRun(t)
	le := binary.LittleEndian
	le.PutUint32(b[32:], InternalErrorEmulation)
	le.PutUint32(b[36:], 5)
	le.PutUint64(b[40:], EmulationFlagInstructionBytes)
	b[48] = 4
	copy(b[49:], []byte{0x66, 0x0f, 0x38, 0xf8, 0x90, 0x90})
	ie := r.InternalError()
	if ie.Suberror != InternalErrorEmulation || len(ie.Data) != 5 || string(ie.InsnBytes) != "\x66\x0f\x38\xf8" {
		t.Errorf("%+v", ie)
	}
	// Without the flag, no bytes.
	le.PutUint64(b[40:], 0)
	if ie := r.InternalError(); ie.InsnBytes != nil {
		t.Errorf("bytes without flag: % x", ie.InsnBytes)
	}
	// Other suberrors: data only; ndata clamped to 16.
	le.PutUint32(b[32:], InternalErrorDeliveryEv)
	le.PutUint32(b[36:], 1000)
	if ie := r.InternalError(); len(ie.Data) != 16 || ie.InsnBytes != nil {
		t.Errorf("%+v", ie)
	}
	// insn_size larger than 15 is clamped.
	le.PutUint32(b[32:], InternalErrorEmulation)
	le.PutUint32(b[36:], 3)
	le.PutUint64(b[40:], 1)
	b[48] = 200
	if ie := r.InternalError(); len(ie.InsnBytes) != 15 {
		t.Errorf("insn bytes %d", len(ie.InsnBytes))
	}
}

func TestRunOtherExits(t *testing.T) {
	r, b := newTestRun(t)
	le := binary.LittleEndian
	le.PutUint64(b[32:], 0x80000021)
	le.PutUint32(b[40:], 3)
	if reason, cpu := r.FailEntry(); reason != 0x80000021 || cpu != 3 {
		t.Errorf("fail entry %#x %d", reason, cpu)
	}
	if r.HardwareExitReason() != 0x80000021 {
		t.Error("hardware exit reason")
	}
	le.PutUint32(b[32:], SystemEventReset)
	le.PutUint32(b[36:], 1)
	le.PutUint64(b[40:], 0x55)
	if se := r.SystemEvent(); se.Type != SystemEventReset || len(se.Data) != 1 || se.Data[0] != 0x55 {
		t.Errorf("%+v", se)
	}
	le.PutUint32(b[32:], 3)
	le.PutUint64(b[40:], 0xffffffff81000000)
	le.PutUint64(b[48:], 0xffff0ff0)
	le.PutUint64(b[56:], 0x400)
	if d := r.Debug(); d.Exception != 3 || d.PC != 0xffffffff81000000 || d.DR6 != 0xffff0ff0 || d.DR7 != 0x400 {
		t.Errorf("%+v", d)
	}
}
