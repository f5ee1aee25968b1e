package kvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openKVM opens /dev/kvm or skips the test when the host has none.
func openKVM(t *testing.T) *System {
	t.Helper()
	if _, err := os.Stat(DevicePath); errors.Is(err, os.ErrNotExist) {
		t.Skip("/dev/kvm absent on this host: skipping a test that needs KVM")
	}
	s, err := Open()
	if err != nil {
		t.Fatalf("/dev/kvm exists but cannot be used: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newVM(t *testing.T, s *System) *VM {
	t.Helper()
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

func TestLiveSystem(t *testing.T) {
	s := openKVM(t)
	if v, err := s.APIVersion(); err != nil || v != 12 {
		t.Fatalf("API version %d, %v", v, err)
	}
	if n, err := s.CheckExtension(CapUserMemory); err != nil || n == 0 {
		t.Errorf("KVM_CAP_USER_MEMORY = %d, %v", n, err)
	}
	if n, err := s.VCPUMmapSize(); err != nil || n < runMinSize {
		t.Errorf("mmap size %d, %v", n, err)
	}
	c, err := s.SupportedCPUID()
	if err != nil || len(c) == 0 {
		t.Fatalf("supported CPUID: %d entries, %v", len(c), err)
	}
	if c[0].Function != 0 {
		t.Errorf("first leaf %#x, want 0", c[0].Function)
	}
}

func TestLiveVMPlumbing(t *testing.T) {
	s := openKVM(t)
	vm := newVM(t, s)
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Error(err)
	}
	if err := vm.SetIdentityMapAddr(0xfffbc000); err != nil {
		t.Error(err)
	}
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(PITConfig{Flags: PITSpeakerDummy}); err != nil {
		t.Error(err)
	}
	if err := vm.IRQLine(4, true); err != nil {
		t.Error(err)
	}
	if err := vm.IRQLine(4, false); err != nil {
		t.Error(err)
	}
	var routes []IRQRoutingEntry
	for gsi := uint32(0); gsi < 24; gsi++ {
		if gsi < 16 && gsi != 2 {
			chip, pin := uint32(IRQChipPICMaster), gsi
			if gsi >= 8 {
				chip, pin = IRQChipPICSlave, gsi-8
			}
			routes = append(routes, IRQChipRoute(gsi, chip, pin))
		}
		pin := gsi
		if gsi == 0 {
			pin = 2
		}
		routes = append(routes, IRQChipRoute(gsi, IRQChipIOAPIC, pin))
	}
	routes = append(routes, MSIRoute(24, 0xfee00000, 0x30))
	if err := vm.SetGSIRouting(routes); err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := vm.AssignIRQFD(efd, 24); err != nil {
		t.Error(err)
	}
	if err := vm.DeassignIRQFD(efd, 24); err != nil {
		t.Error(err)
	}
	dm := uint64(1)
	if err := vm.SetIOEventFD(NewIOEventFD(efd, 0xd000_0000, 4, false, &dm, false)); err != nil {
		t.Error(err)
	}
	if err := vm.SetIOEventFD(NewIOEventFD(efd, 0xd000_0000, 4, false, &dm, true)); err != nil {
		t.Error(err)
	}
	if err := vm.SetIOEventFD(NewIOEventFD(efd, 0x510, 2, true, nil, false)); err != nil {
		t.Error(err)
	}
	if _, err := vm.CreateDevice(DevTypeVFIO, CreateDeviceTest); err != nil {
		t.Logf("KVM-VFIO device not offered: %v", err)
	} else {
		d, err := vm.CreateVFIODevice()
		if err != nil {
			t.Fatal(err)
		}
		// A non-VFIO fd is refused with EINVAL (the attribute is understood).
		if err := d.VFIOAddFile(efd); !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EBADF) {
			t.Errorf("VFIOAddFile(eventfd) = %v, want EINVAL", err)
		}
		d.Close()
	}
	// KVM_SIGNAL_MSI without vCPUs: not delivered, no error.
	if _, err := vm.SignalMSI(MSIFor(0xfee00000, 0x30)); err != nil {
		t.Errorf("SignalMSI: %v", err)
	}
	// A misaligned slot is refused with a named error.
	err = vm.SetUserMemoryRegion(UserspaceMemoryRegion{Slot: 0, GuestPhysAddr: 0x123, MemorySize: 0x1000, UserspaceAddr: 0x1000})
	if err == nil || err.Error() != "KVM_SET_USER_MEMORY_REGION: invalid argument" {
		t.Errorf("misaligned slot: %v", err)
	}
}

// TestLiveRealModeGuest runs a few real-mode instructions and checks the
// IO, MMIO-read, MMIO-write and HLT exits, then immediate_exit.
func TestLiveRealModeGuest(t *testing.T) {
	s := openKVM(t)
	vm := newVM(t, s)
	mem, err := unix.Mmap(-1, 0, 0x4000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	code := []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 0x41, // mov al, 'A'
		0xee,             // out dx, al
		0xa0, 0x00, 0x80, // mov al, [0x8000]  (no slot: MMIO read)
		0xa2, 0x00, 0x80, // mov [0x8000], al  (MMIO write)
		0xf4, // hlt
	}
	copy(mem[0x1000:], code)
	if err := vm.SetUserMemoryRegion(UserspaceMemoryRegion{Slot: 0, MemorySize: 0x4000, UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}); err != nil {
		t.Fatal(err)
	}
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	sr, err := cpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	sr.CS.Base, sr.CS.Selector = 0, 0
	if err := cpu.SetSregs(sr); err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	tr, err := cpu.Translate(0x1234)
	if err != nil || tr.Valid != 1 || tr.PhysicalAddress != 0x1234 {
		t.Errorf("translate in real mode: %+v %v", tr, err)
	}
	run := cpu.RunData()
	step := func(want ExitReason) {
		t.Helper()
		for {
			err := cpu.Run()
			if IsRetry(err) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		if got := run.ExitReason(); got != want {
			t.Fatalf("exit %v, want %v", got, want)
		}
	}
	step(ExitIO)
	io := run.IO()
	d, err := run.IOData()
	if err != nil || io.Direction != IODirOut || io.Port != 0x3f8 || io.Size != 1 || io.Count != 1 || d[0] != 'A' {
		t.Errorf("io %+v data %q %v", io, d, err)
	}
	step(ExitMMIO)
	if m := run.MMIO(); m.PhysAddr != 0x8000 || m.Len != 1 || m.IsWrite != 0 {
		t.Errorf("mmio read %+v", m)
	}
	run.MMIOData()[0] = 0x5a
	step(ExitMMIO)
	if m := run.MMIO(); m.PhysAddr != 0x8000 || m.IsWrite != 1 || m.Data[0] != 0x5a {
		t.Errorf("mmio write %+v", m)
	}
	step(ExitHLT)
	r, err := cpu.Regs()
	if err != nil || r.RIP != 0x1000+uint64(len(code)) {
		t.Errorf("rip %#x, %v", r.RIP, err)
	}
	run.SetImmediateExit(true)
	if err := cpu.Run(); !errors.Is(err, unix.EINTR) || !IsRetry(err) {
		t.Errorf("immediate_exit run = %v, want EINTR", err)
	}
	run.SetImmediateExit(false)
	if _, err := cpu.VCPUEvents(); err != nil {
		t.Error(err)
	}
	if _, err := cpu.MPState(); err != nil {
		t.Error(err)
	}
	if _, err := cpu.FPU(); err != nil {
		t.Error(err)
	}
	msrs := []MSREntry{{Index: 0x174}} // IA32_SYSENTER_CS
	if err := cpu.SetMSRs([]MSREntry{{Index: 0x174, Data: 0x10}}); err != nil {
		t.Error(err)
	} else if err := cpu.MSRs(msrs); err != nil || msrs[0].Data != 0x10 {
		t.Errorf("MSR 0x174 = %#x, %v", msrs[0].Data, err)
	}
	sup, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	// KVM (5.16+) refuses a different CPUID table once a vCPU has run
	// (kvm_amd answers EINVAL; kvm_pvm accepted it): set it on a fresh vCPU,
	// as the VMM does before the first KVM_RUN.
	fresh, err := vm.CreateVCPU(1)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.SetCPUID2(sup); err != nil {
		t.Error(err)
	}
	if got, err := fresh.CPUID2(); err != nil || len(got) != len(sup) {
		t.Errorf("CPUID2 read back %d entries (set %d): %v", len(got), len(sup), err)
	}
}

// TestLiveXSave checks KVM_GET/SET_XSAVE against KVM_GET_FPU on a real
// vCPU: the FX* offsets are where the kernel keeps each field, MXCSR (which
// kvm_fpu does not carry) round-trips, an image whose XSTATE_BV leaves x87
// and SSE out is loaded as their init state, and an MXCSR outside
// MXCSR_MASK is refused.
//
// KVM_SET_FPU is not used to write: it copies into the legacy area without
// marking x87/SSE present in the XSAVE header, so on a host with XSAVE a
// vCPU whose state is in its init state (a fresh one, seen on kvm_pvm)
// keeps reading as init state, and KVM_GET_FPU then returns stale bytes.
func TestLiveXSave(t *testing.T) {
	s := openKVM(t)
	vm := newVM(t, s)
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	x, err := cpu.XSave()
	if err != nil {
		t.Fatal(err)
	}
	b := x.Bytes()
	le := binary.LittleEndian
	if le.Uint16(b[FXFCW:]) != 0x37f || le.Uint32(b[FXMXCSR:]) != 0x1f80 {
		t.Errorf("fresh vCPU: FCW %#x MXCSR %#x, want the init state 0x37f, 0x1f80", le.Uint16(b[FXFCW:]), le.Uint32(b[FXMXCSR:]))
	}
	mask := le.Uint32(b[FXMXCSRMask:])
	t.Logf("XSTATE_BV %#x, MXCSR_MASK %#x", le.Uint64(b[XSaveBV:]), mask)
	if mask == 0 {
		mask = 0xffbf // the SDM's default where the CPU stores 0
	}
	le.PutUint16(b[FXFCW:], 0x27f)
	le.PutUint16(b[FXFSW:], 0x3820)
	b[FXFTW] = 0x80
	le.PutUint16(b[FXFOP:], 0x1e8)
	le.PutUint64(b[FXFIP:], 0x1234_5678_9abc)
	le.PutUint64(b[FXFDP:], 0xfedc_ba98_7654)
	le.PutUint32(b[FXMXCSR:], 0x7fbf) // round toward zero, all flags set
	for i := range 10 {
		b[FXST0+7*16+i] = byte(0x70 + i)
	}
	for i := range 256 {
		b[FXXMM0+i] = byte(i)
	}
	le.PutUint64(b[XSaveBV:], le.Uint64(b[XSaveBV:])|3)
	if err := cpu.SetXSave(x); err != nil {
		t.Fatal(err)
	}
	f, err := cpu.FPU()
	if err != nil {
		t.Fatal(err)
	}
	if f.FCW != 0x27f || f.FSW != 0x3820 || f.FTWX != 0x80 || f.LastOpcode != 0x1e8 || f.LastIP != 0x1234_5678_9abc || f.LastDP != 0xfedc_ba98_7654 {
		t.Errorf("KVM_GET_FPU after KVM_SET_XSAVE: FCW %#x FSW %#x FTW %#x FOP %#x FIP %#x FDP %#x", f.FCW, f.FSW, f.FTWX, f.LastOpcode, f.LastIP, f.LastDP)
	}
	if !bytes.Equal(f.FPR[7][:10], b[FXST0+7*16:FXST0+7*16+10]) {
		t.Errorf("ST7 % x, want % x", f.FPR[7][:10], b[FXST0+7*16:FXST0+7*16+10])
	}
	for i := range f.XMM {
		if !bytes.Equal(f.XMM[i][:], b[FXXMM0+16*i:FXXMM0+16*i+16]) {
			t.Errorf("XMM%d % x, want % x", i, f.XMM[i][:], b[FXXMM0+16*i:FXXMM0+16*i+16])
		}
	}
	y, err := cpu.XSave()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(y.Bytes()[:FXXMM0+256], b[:FXXMM0+256]) {
		t.Errorf("KVM_GET_XSAVE read back\n% x\nwant\n% x", y.Bytes()[:FXST0], b[:FXST0])
	}
	// XSTATE_BV without x87 and SSE: both go back to their init state.
	le.PutUint64(b[XSaveBV:], le.Uint64(b[XSaveBV:])&^3)
	if err := cpu.SetXSave(x); err != nil {
		t.Fatal(err)
	}
	if z, err := cpu.XSave(); err != nil || le.Uint16(z.Bytes()[FXFCW:]) != 0x37f || le.Uint32(z.Bytes()[FXMXCSR:]) != 0x1f80 {
		t.Errorf("XSTATE_BV without x87/SSE: FCW %#x MXCSR %#x (%v), want the init state", le.Uint16(z.Bytes()[FXFCW:]), le.Uint32(z.Bytes()[FXMXCSR:]), err)
	}
	le.PutUint64(b[XSaveBV:], le.Uint64(b[XSaveBV:])|3)
	le.PutUint32(b[FXMXCSR:], ^mask)
	if err := cpu.SetXSave(x); !errors.Is(err, unix.EINVAL) {
		t.Errorf("MXCSR %#x outside MXCSR_MASK %#x: %v, want EINVAL", ^mask, mask, err)
	}
}
