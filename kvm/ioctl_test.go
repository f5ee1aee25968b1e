package kvm

import (
	"errors"
	"fmt"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestIoctlNumbers checks every request number against the value the
// kernel headers give (gcc, Linux 6.1 uapi, x86-64).
func TestIoctlNumbers(t *testing.T) {
	cases := []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0xae00},
		{"KVM_CREATE_VM", kvmCreateVM, 0xae01},
		{"KVM_CHECK_EXTENSION", kvmCheckExtension, 0xae03},
		{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, 0xae04},
		{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, 0xc008ae05},
		{"KVM_CREATE_VCPU", kvmCreateVCPU, 0xae41},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x4020ae46},
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, 0xae47},
		{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, 0x4008ae48},
		{"KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0xae60},
		{"KVM_IRQ_LINE", kvmIRQLine, 0x4008ae61},
		{"KVM_SET_GSI_ROUTING", kvmSetGSIRouting, 0x4008ae6a},
		{"KVM_IRQFD", kvmIRQFD, 0x4020ae76},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, 0x4040ae77},
		{"KVM_IOEVENTFD", kvmIOEventFD, 0x4040ae79},
		{"KVM_ENABLE_CAP", kvmEnableCap, 0x4068aea3},
		{"KVM_SIGNAL_MSI", kvmSignalMSI, 0x4020aea5},
		{"KVM_CREATE_DEVICE", kvmCreateDevice, 0xc00caee0},
		{"KVM_SET_DEVICE_ATTR", kvmSetDeviceAttr, 0x4018aee1},
		{"KVM_GET_DEVICE_ATTR", kvmGetDeviceAttr, 0x4018aee2},
		{"KVM_HAS_DEVICE_ATTR", kvmHasDeviceAttr, 0x4018aee3},
		{"KVM_RUN", kvmRun, 0xae80},
		{"KVM_GET_REGS", kvmGetRegs, 0x8090ae81},
		{"KVM_SET_REGS", kvmSetRegs, 0x4090ae82},
		{"KVM_GET_SREGS", kvmGetSregs, 0x8138ae83},
		{"KVM_SET_SREGS", kvmSetSregs, 0x4138ae84},
		{"KVM_TRANSLATE", kvmTranslate, 0xc018ae85},
		{"KVM_GET_MSRS", kvmGetMSRs, 0xc008ae88},
		{"KVM_SET_MSRS", kvmSetMSRs, 0x4008ae89},
		{"KVM_GET_FPU", kvmGetFPU, 0x81a0ae8c},
		{"KVM_SET_FPU", kvmSetFPU, 0x41a0ae8d},
		{"KVM_GET_LAPIC", kvmGetLAPIC, 0x8400ae8e},
		{"KVM_SET_LAPIC", kvmSetLAPIC, 0x4400ae8f},
		{"KVM_SET_CPUID2", kvmSetCPUID2, 0x4008ae90},
		{"KVM_GET_CPUID2", kvmGetCPUID2, 0xc008ae91},
		{"KVM_GET_MP_STATE", kvmGetMPState, 0x8004ae98},
		{"KVM_SET_MP_STATE", kvmSetMPState, 0x4004ae99},
		{"KVM_SET_GUEST_DEBUG", kvmSetGuestDebug, 0x4048ae9b},
		{"KVM_GET_XSAVE", kvmGetXSave, 0x9000aea4},
		{"KVM_SET_XSAVE", kvmSetXSave, 0x5000aea5},
		{"KVM_GET_XCRS", kvmGetXCRs, 0x8188aea6},
		{"KVM_SET_XCRS", kvmSetXCRs, 0x4188aea7},
		{"KVM_GET_VCPU_EVENTS", kvmGetVCPUEvents, 0x8040ae9f},
		{"KVM_SET_VCPU_EVENTS", kvmSetVCPUEvents, 0x4040aea0},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestIOCHelpers(t *testing.T) {
	// Generic encodings, independent of KVM: _IO('V', 100) (VFIO_GET_API_VERSION)
	// = 0x3b64; _IOR('T', 0x30, unsigned int) (TIOCGPTN) = 0x80045430;
	// _IOW('T', 0x31, int) (TIOCSPTLCK) = 0x40045431.
	if got := IO(';', 100); got != 0x3b64 {
		t.Errorf("IO(';',100) = %#x", got)
	}
	if got := IOR('T', 0x30, 4); got != 0x80045430 {
		t.Errorf("IOR = %#x", got)
	}
	if got := IOW('T', 0x31, 4); got != 0x40045431 {
		t.Errorf("IOW = %#x", got)
	}
	if got := IOWR(kvmio, 0x05, 8); got != 0xc008ae05 {
		t.Errorf("IOWR = %#x", got)
	}
}

func TestCapValues(t *testing.T) {
	cases := map[string][2]Cap{
		"IRQCHIP": {CapIRQChip, 0}, "HLT": {CapHLT, 1}, "USER_MEMORY": {CapUserMemory, 3},
		"SET_TSS_ADDR": {CapSetTSSAddr, 4}, "EXT_CPUID": {CapExtCPUID, 7}, "NR_VCPUS": {CapNRVCPUs, 9},
		"NR_MEMSLOTS": {CapNRMemSlots, 10}, "MP_STATE": {CapMPState, 14}, "SET_GUEST_DEBUG": {CapSetGuestDebug, 23},
		"IRQ_ROUTING": {CapIRQRouting, 25}, "IRQFD": {CapIRQFD, 32}, "PIT2": {CapPIT2, 33},
		"IOEVENTFD": {CapIOEventFD, 36}, "SET_IDENTITY_MAP_ADDR": {CapSetIdentityMapAddr, 37},
		"ADJUST_CLOCK": {CapAdjustClock, 39}, "VCPU_EVENTS": {CapVCPUEvents, 41}, "MAX_VCPUS": {CapMaxVCPUs, 66},
		"TSC_DEADLINE_TIMER": {CapTSCDeadlineTimer, 72}, "SYNC_REGS": {CapSyncRegs, 74},
		"SIGNAL_MSI": {CapSignalMSI, 77}, "READONLY_MEM": {CapReadonlyMem, 81},
		"IRQFD_RESAMPLE": {CapIRQFDResample, 82}, "DEVICE_CTRL": {CapDeviceCtrl, 89},
		"SPLIT_IRQCHIP": {CapSplitIRQChip, 121}, "IOEVENTFD_ANY_LENGTH": {CapIOEventFDAnyLength, 122},
		"MAX_VCPU_ID": {CapMaxVCPUID, 128}, "X2APIC_API": {CapX2APICAPI, 129}, "MSI_DEVID": {CapMSIDevID, 131},
		"IMMEDIATE_EXIT": {CapImmediateExit, 136}, "EXCEPTION_PAYLOAD": {CapExceptionPayload, 164},
		"EXIT_ON_EMULATION_FAILURE": {CapExitOnEmulationFailure, 204},
	}
	for n, c := range cases {
		if c[0] != c[1] {
			t.Errorf("KVM_CAP_%s = %d, want %d", n, c[0], c[1])
		}
	}
}

func TestErrorMessages(t *testing.T) {
	err := error(&Error{Op: "KVM_SET_USER_MEMORY_REGION", Errno: unix.EINVAL})
	if got, want := err.Error(), "KVM_SET_USER_MEMORY_REGION: invalid argument"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("slot 3: %w", err)
	if !errors.Is(wrapped, unix.EINVAL) {
		t.Error("errors.Is(EINVAL) false through wrapping")
	}
	if !IsRetry(&Error{Op: "KVM_RUN", Errno: unix.EINTR}) || !IsRetry(&Error{Op: "KVM_RUN", Errno: unix.EAGAIN}) {
		t.Error("EINTR/EAGAIN not retryable")
	}
	if IsRetry(&Error{Op: "KVM_RUN", Errno: unix.EFAULT}) || IsRetry(nil) {
		t.Error("EFAULT/nil retryable")
	}
}

func TestOpenErrors(t *testing.T) {
	_, err := OpenPath("/nonexistent/kvm")
	if err == nil {
		t.Fatal("opened a nonexistent path")
	}
	if got, want := err.Error(), "open /nonexistent/kvm: no such file (is KVM available on this host?)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !errors.Is(err, unix.ENOENT) {
		t.Error("not ENOENT")
	}
	pe := &OpenError{Path: DevicePath, Err: unix.EACCES}
	if got, want := pe.Error(), "open /dev/kvm: permission denied (add your user to the kvm group, or run as root)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// A file that is not KVM: the API-version ioctl fails with a named error.
	_, err = OpenPath("/dev/null")
	if err == nil || !errors.Is(err, unix.ENOTTY) {
		t.Errorf("OpenPath(/dev/null) = %v, want KVM_GET_API_VERSION ENOTTY", err)
	} else if got := err.Error(); got != "KVM_GET_API_VERSION: inappropriate ioctl for device" {
		t.Errorf("message %q", got)
	}
}

func TestEncodeRouting(t *testing.T) {
	entries := []IRQRoutingEntry{IRQChipRoute(0, IRQChipPICMaster, 0), MSIRoute(24, 0xfee00000, 0x31)}
	buf := encodeRouting(entries)
	if len(buf) != 8+2*48 {
		t.Fatalf("len %d", len(buf))
	}
	if getLE32(buf[0:]) != 2 || getLE32(buf[4:]) != 0 {
		t.Errorf("header % x", buf[:8])
	}
	if getLE32(buf[8+48:]) != 24 || getLE32(buf[8+48+4:]) != IRQRoutingMSI || getLE32(buf[8+48+16:]) != 0xfee00000 || getLE32(buf[8+48+24:]) != 0x31 {
		t.Errorf("entry 1 % x", buf[8+48:])
	}
	if b := encodeRouting(nil); len(b) != 8 || getLE32(b) != 0 {
		t.Errorf("empty table % x", b)
	}
}

func TestEncodeMSRsAndCPUID(t *testing.T) {
	buf, out := encodeMSRs([]MSREntry{{Index: 0xc0000080, Data: 0x500}, {Index: 0x10, Data: 7}})
	if len(buf) != 8+32 || getLE32(buf) != 2 || getLE32(buf[8:]) != 0xc0000080 || buf[16] != 0x00 || buf[17] != 0x05 || getLE32(buf[24:]) != 0x10 {
		t.Errorf("msrs % x", buf)
	}
	out[1].Data = 9 // out aliases buf
	if buf[32] != 9 {
		t.Error("entries do not alias the buffer")
	}
	cb, ce := newCPUIDBuf(3)
	if len(cb) != 8+120 || getLE32(cb) != 3 || len(ce) != 3 {
		t.Fatalf("cpuid buf %d %d", len(cb), len(ce))
	}
	ce[2].ECX = 1 << 28
	if getLE32(cb[8+80+20:]) != 1<<28 {
		t.Error("cpuid entry 2 ecx at the wrong place")
	}
	if uintptr(unsafe.Pointer(&cb[0]))%8 != 0 {
		t.Error("buffer not aligned")
	}
}

func TestNewIOEventFD(t *testing.T) {
	dm := uint64(0x1234)
	e := NewIOEventFD(7, 0xcf8, 4, true, &dm, true)
	if e.FD != 7 || e.Addr != 0xcf8 || e.Len != 4 || e.DataMatch != 0x1234 ||
		e.Flags != IOEventFDFlagPIO|IOEventFDFlagDataMatch|IOEventFDFlagDeassign {
		t.Errorf("%+v", e)
	}
	e = NewIOEventFD(3, 0xd000_0000, 2, false, nil, false)
	if e.Flags != 0 || e.DataMatch != 0 {
		t.Errorf("%+v", e)
	}
	m := MSIFor(0x1_fee0_0000, 0x22)
	if m.AddressLo != 0xfee00000 || m.AddressHi != 1 || m.Data != 0x22 {
		t.Errorf("%+v", m)
	}
}
