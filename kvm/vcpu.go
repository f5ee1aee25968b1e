package kvm

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VCPU is a virtual CPU fd and its mapped kvm_run page. Use it from one OS
// thread (runtime.LockOSThread) for KVM_RUN; other goroutines may only kick
// it (Run().SetImmediateExit plus a signal to that thread).
type VCPU struct {
	fd  int
	id  int
	mem []byte
	run *Run
}

// CreateVCPU is KVM_CREATE_VCPU plus the mmap of its kvm_run page.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctlVal(vm.fd, "KVM_CREATE_VCPU", kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	mem, err := unix.Mmap(fd, 0, vm.runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap kvm_run of vCPU %d: %w", id, err)
	}
	run, err := NewRun(mem)
	if err != nil {
		unix.Munmap(mem)
		unix.Close(fd)
		return nil, err
	}
	return &VCPU{fd: fd, id: id, mem: mem, run: run}, nil
}

// ID is the vCPU index given to CreateVCPU.
func (v *VCPU) ID() int { return v.id }

// Fd is the vCPU file descriptor.
func (v *VCPU) Fd() int { return v.fd }

// RunData is the vCPU's kvm_run page.
func (v *VCPU) RunData() *Run { return v.run }

// Close unmaps kvm_run and closes the fd.
func (v *VCPU) Close() error {
	if v.fd < 0 {
		return nil
	}
	err := unix.Munmap(v.mem)
	if e := unix.Close(v.fd); err == nil {
		err = e
	}
	v.fd = -1
	return err
}

// Run is KVM_RUN. It returns nil after an exit the VMM must handle (read
// RunData().ExitReason()), or an *Error wrapping EINTR (a signal or
// immediate_exit) or EAGAIN (an AP waiting for SIPI): IsRetry tells those
// apart from real failures. Run never retries by itself.
func (v *VCPU) Run() error {
	_, err := ioctlVal(v.fd, "KVM_RUN", kvmRun, 0)
	return err
}

// Regs is KVM_GET_REGS.
func (v *VCPU) Regs() (Regs, error) {
	var r Regs
	_, err := ioctl(v.fd, "KVM_GET_REGS", kvmGetRegs, unsafe.Pointer(&r))
	return r, err
}

// SetRegs is KVM_SET_REGS.
func (v *VCPU) SetRegs(r Regs) error {
	_, err := ioctl(v.fd, "KVM_SET_REGS", kvmSetRegs, unsafe.Pointer(&r))
	return err
}

// Sregs is KVM_GET_SREGS.
func (v *VCPU) Sregs() (Sregs, error) {
	var s Sregs
	_, err := ioctl(v.fd, "KVM_GET_SREGS", kvmGetSregs, unsafe.Pointer(&s))
	return s, err
}

// SetSregs is KVM_SET_SREGS.
func (v *VCPU) SetSregs(s Sregs) error {
	_, err := ioctl(v.fd, "KVM_SET_SREGS", kvmSetSregs, unsafe.Pointer(&s))
	return err
}

// FPU is KVM_GET_FPU.
func (v *VCPU) FPU() (FPU, error) {
	var f FPU
	_, err := ioctl(v.fd, "KVM_GET_FPU", kvmGetFPU, unsafe.Pointer(&f))
	return f, err
}

// SetFPU is KVM_SET_FPU.
func (v *VCPU) SetFPU(f FPU) error {
	_, err := ioctl(v.fd, "KVM_SET_FPU", kvmSetFPU, unsafe.Pointer(&f))
	return err
}

// XSave is KVM_GET_XSAVE: the x87/SSE state with MXCSR (which KVM_GET_FPU
// leaves out) and the extended state. It fails (EINVAL) for a VM given
// permission for AMX state, whose image is larger than struct kvm_xsave;
// godvm never asks for that.
func (v *VCPU) XSave() (*XSave, error) {
	x := new(XSave)
	_, err := ioctl(v.fd, "KVM_GET_XSAVE", kvmGetXSave, unsafe.Pointer(x))
	return x, err
}

// SetXSave is KVM_SET_XSAVE. KVM loads the components XSTATE_BV names and
// puts the others in their init state, so write back an image XSave
// returned, with bits 0 and 1 of XSTATE_BV set once x87 or SSE state in it
// changed. KVM refuses (EINVAL) an MXCSR with bits outside MXCSR_MASK.
func (v *VCPU) SetXSave(x *XSave) error {
	_, err := ioctl(v.fd, "KVM_SET_XSAVE", kvmSetXSave, unsafe.Pointer(x))
	return err
}

// XCRs is KVM_GET_XCRS (needs KVM_CAP_XCRS).
func (v *VCPU) XCRs() (XCRs, error) {
	var x XCRs
	_, err := ioctl(v.fd, "KVM_GET_XCRS", kvmGetXCRs, unsafe.Pointer(&x))
	return x, err
}

// SetXCR0 sets the guest's XCR0 with KVM_SET_XCRS: the state components
// XSAVE manages and, with CR4.OSXSAVE, which of SSE/AVX/AVX-512 state
// the guest may use (VEX/EVEX instructions raise #UD otherwise).
func (v *VCPU) SetXCR0(value uint64) error {
	x := XCRs{NrXCRs: 1}
	x.XCRs[0] = XCR{XCR: 0, Value: value}
	_, err := ioctl(v.fd, "KVM_SET_XCRS", kvmSetXCRs, unsafe.Pointer(&x))
	return err
}

// encodeMSRs lays out struct kvm_msrs with its entries.
func encodeMSRs(entries []MSREntry) ([]byte, []MSREntry) {
	hdr := int(unsafe.Sizeof(msrsHeader{}))
	buf := alignedBuf(hdr + len(entries)*int(unsafe.Sizeof(MSREntry{})))
	(*msrsHeader)(unsafe.Pointer(&buf[0])).NMSRs = uint32(len(entries))
	var out []MSREntry
	if len(entries) > 0 {
		out = unsafe.Slice((*MSREntry)(unsafe.Pointer(&buf[hdr])), len(entries))
		copy(out, entries)
	}
	return buf, out
}

// MSRs is KVM_GET_MSRS: it fills entries[i].Data for each entries[i].Index.
// KVM stops at the first MSR it cannot read; that is an error naming it.
func (v *VCPU) MSRs(entries []MSREntry) error {
	if len(entries) == 0 {
		return nil
	}
	buf, out := encodeMSRs(entries)
	n, err := ioctl(v.fd, "KVM_GET_MSRS", kvmGetMSRs, unsafe.Pointer(&buf[0]))
	if err != nil {
		return err
	}
	copy(entries, out[:min(n, len(out))])
	if n < len(entries) {
		return fmt.Errorf("KVM_GET_MSRS: read %d of %d MSRs (MSR %#x failed)", n, len(entries), entries[n].Index)
	}
	return nil
}

// SetMSRs is KVM_SET_MSRS; a short count is an error naming the MSR.
func (v *VCPU) SetMSRs(entries []MSREntry) error {
	if len(entries) == 0 {
		return nil
	}
	buf, _ := encodeMSRs(entries)
	n, err := ioctl(v.fd, "KVM_SET_MSRS", kvmSetMSRs, unsafe.Pointer(&buf[0]))
	if err != nil {
		return err
	}
	if n < len(entries) {
		return fmt.Errorf("KVM_SET_MSRS: set %d of %d MSRs (MSR %#x refused)", n, len(entries), entries[n].Index)
	}
	return nil
}

// SetCPUID2 is KVM_SET_CPUID2.
func (v *VCPU) SetCPUID2(entries []CPUIDEntry2) error {
	buf, out := newCPUIDBuf(len(entries))
	copy(out, entries)
	_, err := ioctl(v.fd, "KVM_SET_CPUID2", kvmSetCPUID2, unsafe.Pointer(&buf[0]))
	return err
}

// CPUID2 is KVM_GET_CPUID2: the vCPU's current CPUID table.
//
// Linux 6.1 never tells the caller how many entries it copied: a successful
// call leaves nent as the caller set it, and on E2BIG the updated nent is
// not copied back either (seen on kvm_amd). The call succeeds exactly when
// nent >= the table's size, so the size is found by bisection (about a dozen
// cheap ioctls), and then the table is read with exactly that room.
func (v *VCPU) CPUID2() ([]CPUIDEntry2, error) {
	fits := func(n int) (bool, error) {
		buf, _ := newCPUIDBuf(n)
		_, err := ioctl(v.fd, "KVM_GET_CPUID2", kvmGetCPUID2, unsafe.Pointer(&buf[0]))
		if errors.Is(err, unix.E2BIG) {
			return false, nil
		}
		return err == nil, err
	}
	lo, hi := 0, maxCPUIDEntries // the size is in (lo-1, hi]
	if ok, err := fits(hi); !ok {
		if err == nil {
			err = fmt.Errorf("KVM_GET_CPUID2: table larger than %d entries", hi)
		}
		return nil, err
	}
	for lo < hi {
		mid := (lo + hi) / 2
		ok, err := fits(mid)
		if err != nil {
			return nil, err
		}
		if ok {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if hi == 0 {
		return nil, nil
	}
	buf, entries := newCPUIDBuf(hi)
	if _, err := ioctl(v.fd, "KVM_GET_CPUID2", kvmGetCPUID2, unsafe.Pointer(&buf[0])); err != nil {
		return nil, err
	}
	return append([]CPUIDEntry2(nil), entries...), nil
}

// LAPIC is KVM_GET_LAPIC.
func (v *VCPU) LAPIC() (LAPICState, error) {
	var l LAPICState
	_, err := ioctl(v.fd, "KVM_GET_LAPIC", kvmGetLAPIC, unsafe.Pointer(&l))
	return l, err
}

// SetLAPIC is KVM_SET_LAPIC.
func (v *VCPU) SetLAPIC(l *LAPICState) error {
	_, err := ioctl(v.fd, "KVM_SET_LAPIC", kvmSetLAPIC, unsafe.Pointer(l))
	return err
}

// VCPUEvents is KVM_GET_VCPU_EVENTS.
func (v *VCPU) VCPUEvents() (VCPUEvents, error) {
	var e VCPUEvents
	_, err := ioctl(v.fd, "KVM_GET_VCPU_EVENTS", kvmGetVCPUEvents, unsafe.Pointer(&e))
	return e, err
}

// SetVCPUEvents is KVM_SET_VCPU_EVENTS.
func (v *VCPU) SetVCPUEvents(e VCPUEvents) error {
	_, err := ioctl(v.fd, "KVM_SET_VCPU_EVENTS", kvmSetVCPUEvents, unsafe.Pointer(&e))
	return err
}

// InjectException queues exception vector for delivery at the next entry,
// keeping the vCPU's other event state: KVM_GET_VCPU_EVENTS, set
// exception.{injected,nr,has_error_code,error_code}, KVM_SET_VCPU_EVENTS.
// A software exception (INT3's #BP) is injected the same way, with RIP
// already past the instruction.
func (v *VCPU) InjectException(vector uint8, errorCode *uint32) error {
	e, err := v.VCPUEvents()
	if err != nil {
		return err
	}
	e.Exception = ExceptionState{Injected: 1, Nr: vector}
	if errorCode != nil {
		e.Exception.HasErrorCode = 1
		e.Exception.ErrorCode = *errorCode
	}
	e.ExceptionHasPayload, e.ExceptionPayload = 0, 0
	// Only write back the state we changed: no NMI/SIPI/SMM/shadow flags.
	e.Flags = 0
	return v.SetVCPUEvents(e)
}

// Translate is KVM_TRANSLATE: a guest-virtual address through the vCPU's
// current page tables.
func (v *VCPU) Translate(gva uint64) (Translation, error) {
	t := Translation{LinearAddress: gva}
	_, err := ioctl(v.fd, "KVM_TRANSLATE", kvmTranslate, unsafe.Pointer(&t))
	return t, err
}

// MPState is KVM_GET_MP_STATE.
func (v *VCPU) MPState() (MPState, error) {
	var s MPState
	_, err := ioctl(v.fd, "KVM_GET_MP_STATE", kvmGetMPState, unsafe.Pointer(&s))
	return s, err
}

// SetMPState is KVM_SET_MP_STATE.
func (v *VCPU) SetMPState(s MPState) error {
	_, err := ioctl(v.fd, "KVM_SET_MP_STATE", kvmSetMPState, unsafe.Pointer(&s))
	return err
}

// SetGuestDebug is KVM_SET_GUEST_DEBUG.
func (v *VCPU) SetGuestDebug(d GuestDebug) error {
	_, err := ioctl(v.fd, "KVM_SET_GUEST_DEBUG", kvmSetGuestDebug, unsafe.Pointer(&d))
	return err
}

// EnableCap is KVM_ENABLE_CAP on the vCPU.
func (v *VCPU) EnableCap(c Cap, flags uint32, args ...uint64) error {
	return enableCapOn(v.fd, c, flags, args)
}
