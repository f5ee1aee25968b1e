package kvm

import (
	"testing"
	"unsafe"
)

// The numbers below were measured with gcc (sizeof/offsetof) against the
// Linux 6.1 uapi headers linux/kvm.h and asm/kvm.h (x86-64).

type layoutCase struct {
	name string
	got  uintptr
	want uintptr
}

func checkLayout(t *testing.T, cases []layoutCase) {
	t.Helper()
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestStructSizes(t *testing.T) {
	checkLayout(t, []layoutCase{
		{"sizeof(kvm_regs)", unsafe.Sizeof(Regs{}), 144},
		{"sizeof(kvm_segment)", unsafe.Sizeof(Segment{}), 24},
		{"sizeof(kvm_dtable)", unsafe.Sizeof(DTable{}), 16},
		{"sizeof(kvm_sregs)", unsafe.Sizeof(Sregs{}), 312},
		{"sizeof(kvm_fpu)", unsafe.Sizeof(FPU{}), 416},
		{"sizeof(kvm_xsave)", unsafe.Sizeof(XSave{}), 4096},
		{"sizeof(kvm_xcr)", unsafe.Sizeof(XCR{}), 16},
		{"sizeof(kvm_xcrs)", unsafe.Sizeof(XCRs{}), 392},
		{"sizeof(kvm_msr_entry)", unsafe.Sizeof(MSREntry{}), 16},
		{"sizeof(kvm_msrs)", unsafe.Sizeof(msrsHeader{}), 8},
		{"sizeof(kvm_cpuid_entry2)", unsafe.Sizeof(CPUIDEntry2{}), 40},
		{"sizeof(kvm_cpuid2)", unsafe.Sizeof(cpuid2Header{}), 8},
		{"sizeof(kvm_userspace_memory_region)", unsafe.Sizeof(UserspaceMemoryRegion{}), 32},
		{"sizeof(kvm_irq_level)", unsafe.Sizeof(irqLevel{}), 8},
		{"sizeof(kvm_irqfd)", unsafe.Sizeof(IRQFD{}), 32},
		{"sizeof(kvm_ioeventfd)", unsafe.Sizeof(IOEventFD{}), 64},
		{"sizeof(kvm_irq_routing_entry)", unsafe.Sizeof(IRQRoutingEntry{}), 48},
		{"sizeof(kvm_irq_routing)", unsafe.Sizeof(irqRoutingHeader{}), 8},
		{"sizeof(kvm_msi)", unsafe.Sizeof(MSI{}), 32},
		{"sizeof(kvm_pit_config)", unsafe.Sizeof(PITConfig{}), 64},
		{"sizeof(kvm_translation)", unsafe.Sizeof(Translation{}), 24},
		{"sizeof(kvm_vcpu_events)", unsafe.Sizeof(VCPUEvents{}), 64},
		{"sizeof(kvm_lapic_state)", unsafe.Sizeof(LAPICState{}), 1024},
		{"sizeof(kvm_create_device)", unsafe.Sizeof(createDevice{}), 12},
		{"sizeof(kvm_device_attr)", unsafe.Sizeof(DeviceAttr{}), 24},
		{"sizeof(kvm_enable_cap)", unsafe.Sizeof(enableCap{}), 104},
		{"sizeof(kvm_mp_state)", unsafe.Sizeof(MPState(0)), 4},
		{"sizeof(kvm_guest_debug)", unsafe.Sizeof(GuestDebug{}), 72},
		{"sizeof(kvm_debug_exit_arch)", unsafe.Sizeof(DebugExit{}), 32},
	})
}

func TestStructOffsets(t *testing.T) {
	var r Regs
	var sg Segment
	var dt DTable
	var s Sregs
	var f FPU
	var m MSREntry
	var c CPUIDEntry2
	var ur UserspaceMemoryRegion
	var il irqLevel
	var fd IRQFD
	var io IOEventFD
	var re IRQRoutingEntry
	var msi MSI
	var tr Translation
	var ev VCPUEvents
	var cd createDevice
	var da DeviceAttr
	var ec enableCap
	var gd GuestDebug
	var de DebugExit
	checkLayout(t, []layoutCase{
		{"kvm_regs.rax", unsafe.Offsetof(r.RAX), 0},
		{"kvm_regs.r8", unsafe.Offsetof(r.R8), 64},
		{"kvm_regs.rip", unsafe.Offsetof(r.RIP), 128},
		{"kvm_regs.rflags", unsafe.Offsetof(r.RFLAGS), 136},

		{"kvm_segment.limit", unsafe.Offsetof(sg.Limit), 8},
		{"kvm_segment.selector", unsafe.Offsetof(sg.Selector), 12},
		{"kvm_segment.type", unsafe.Offsetof(sg.Type), 14},
		{"kvm_segment.present", unsafe.Offsetof(sg.Present), 15},
		{"kvm_segment.dpl", unsafe.Offsetof(sg.DPL), 16},
		{"kvm_segment.db", unsafe.Offsetof(sg.DB), 17},
		{"kvm_segment.s", unsafe.Offsetof(sg.S), 18},
		{"kvm_segment.l", unsafe.Offsetof(sg.L), 19},
		{"kvm_segment.g", unsafe.Offsetof(sg.G), 20},
		{"kvm_segment.avl", unsafe.Offsetof(sg.AVL), 21},
		{"kvm_segment.unusable", unsafe.Offsetof(sg.Unusable), 22},

		{"kvm_dtable.limit", unsafe.Offsetof(dt.Limit), 8},

		{"kvm_sregs.cs", unsafe.Offsetof(s.CS), 0},
		{"kvm_sregs.ds", unsafe.Offsetof(s.DS), 24},
		{"kvm_sregs.es", unsafe.Offsetof(s.ES), 48},
		{"kvm_sregs.fs", unsafe.Offsetof(s.FS), 72},
		{"kvm_sregs.gs", unsafe.Offsetof(s.GS), 96},
		{"kvm_sregs.ss", unsafe.Offsetof(s.SS), 120},
		{"kvm_sregs.tr", unsafe.Offsetof(s.TR), 144},
		{"kvm_sregs.ldt", unsafe.Offsetof(s.LDT), 168},
		{"kvm_sregs.gdt", unsafe.Offsetof(s.GDT), 192},
		{"kvm_sregs.idt", unsafe.Offsetof(s.IDT), 208},
		{"kvm_sregs.cr0", unsafe.Offsetof(s.CR0), 224},
		{"kvm_sregs.cr2", unsafe.Offsetof(s.CR2), 232},
		{"kvm_sregs.cr3", unsafe.Offsetof(s.CR3), 240},
		{"kvm_sregs.cr4", unsafe.Offsetof(s.CR4), 248},
		{"kvm_sregs.cr8", unsafe.Offsetof(s.CR8), 256},
		{"kvm_sregs.efer", unsafe.Offsetof(s.EFER), 264},
		{"kvm_sregs.apic_base", unsafe.Offsetof(s.APICBase), 272},
		{"kvm_sregs.interrupt_bitmap", unsafe.Offsetof(s.InterruptBitmap), 280},

		{"kvm_fpu.fcw", unsafe.Offsetof(f.FCW), 128},
		{"kvm_fpu.fsw", unsafe.Offsetof(f.FSW), 130},
		{"kvm_fpu.ftwx", unsafe.Offsetof(f.FTWX), 132},
		{"kvm_fpu.last_opcode", unsafe.Offsetof(f.LastOpcode), 134},
		{"kvm_fpu.last_ip", unsafe.Offsetof(f.LastIP), 136},
		{"kvm_fpu.last_dp", unsafe.Offsetof(f.LastDP), 144},
		{"kvm_fpu.xmm", unsafe.Offsetof(f.XMM), 152},
		{"kvm_fpu.mxcsr", unsafe.Offsetof(f.MXCSR), 408},

		{"kvm_msr_entry.data", unsafe.Offsetof(m.Data), 8},

		{"kvm_cpuid_entry2.index", unsafe.Offsetof(c.Index), 4},
		{"kvm_cpuid_entry2.flags", unsafe.Offsetof(c.Flags), 8},
		{"kvm_cpuid_entry2.eax", unsafe.Offsetof(c.EAX), 12},
		{"kvm_cpuid_entry2.ebx", unsafe.Offsetof(c.EBX), 16},
		{"kvm_cpuid_entry2.ecx", unsafe.Offsetof(c.ECX), 20},
		{"kvm_cpuid_entry2.edx", unsafe.Offsetof(c.EDX), 24},

		{"kvm_userspace_memory_region.flags", unsafe.Offsetof(ur.Flags), 4},
		{"kvm_userspace_memory_region.guest_phys_addr", unsafe.Offsetof(ur.GuestPhysAddr), 8},
		{"kvm_userspace_memory_region.memory_size", unsafe.Offsetof(ur.MemorySize), 16},
		{"kvm_userspace_memory_region.userspace_addr", unsafe.Offsetof(ur.UserspaceAddr), 24},

		{"kvm_irq_level.level", unsafe.Offsetof(il.Level), 4},

		{"kvm_irqfd.gsi", unsafe.Offsetof(fd.GSI), 4},
		{"kvm_irqfd.flags", unsafe.Offsetof(fd.Flags), 8},
		{"kvm_irqfd.resamplefd", unsafe.Offsetof(fd.ResampleFD), 12},

		{"kvm_ioeventfd.addr", unsafe.Offsetof(io.Addr), 8},
		{"kvm_ioeventfd.len", unsafe.Offsetof(io.Len), 16},
		{"kvm_ioeventfd.fd", unsafe.Offsetof(io.FD), 20},
		{"kvm_ioeventfd.flags", unsafe.Offsetof(io.Flags), 24},

		{"kvm_irq_routing_entry.type", unsafe.Offsetof(re.Type), 4},
		{"kvm_irq_routing_entry.flags", unsafe.Offsetof(re.Flags), 8},
		{"kvm_irq_routing_entry.u", unsafe.Offsetof(re.U), 16},

		{"kvm_msi.address_hi", unsafe.Offsetof(msi.AddressHi), 4},
		{"kvm_msi.data", unsafe.Offsetof(msi.Data), 8},
		{"kvm_msi.flags", unsafe.Offsetof(msi.Flags), 12},
		{"kvm_msi.devid", unsafe.Offsetof(msi.DevID), 16},

		{"kvm_translation.physical_address", unsafe.Offsetof(tr.PhysicalAddress), 8},
		{"kvm_translation.valid", unsafe.Offsetof(tr.Valid), 16},
		{"kvm_translation.writeable", unsafe.Offsetof(tr.Writeable), 17},
		{"kvm_translation.usermode", unsafe.Offsetof(tr.Usermode), 18},

		{"kvm_vcpu_events.exception.error_code", unsafe.Offsetof(ev.Exception) + unsafe.Offsetof(ev.Exception.ErrorCode), 4},
		{"kvm_vcpu_events.interrupt", unsafe.Offsetof(ev.Interrupt), 8},
		{"kvm_vcpu_events.nmi", unsafe.Offsetof(ev.NMI), 12},
		{"kvm_vcpu_events.sipi_vector", unsafe.Offsetof(ev.SIPIVector), 16},
		{"kvm_vcpu_events.flags", unsafe.Offsetof(ev.Flags), 20},
		{"kvm_vcpu_events.smi", unsafe.Offsetof(ev.SMI), 24},
		{"kvm_vcpu_events.triple_fault", unsafe.Offsetof(ev.TripleFaultPending), 28},
		{"kvm_vcpu_events.exception_has_payload", unsafe.Offsetof(ev.ExceptionHasPayload), 55},
		{"kvm_vcpu_events.exception_payload", unsafe.Offsetof(ev.ExceptionPayload), 56},

		{"kvm_create_device.fd", unsafe.Offsetof(cd.FD), 4},
		{"kvm_create_device.flags", unsafe.Offsetof(cd.Flags), 8},

		{"kvm_device_attr.group", unsafe.Offsetof(da.Group), 4},
		{"kvm_device_attr.attr", unsafe.Offsetof(da.Attr), 8},
		{"kvm_device_attr.addr", unsafe.Offsetof(da.Addr), 16},

		{"kvm_enable_cap.flags", unsafe.Offsetof(ec.Flags), 4},
		{"kvm_enable_cap.args", unsafe.Offsetof(ec.Args), 8},

		{"kvm_guest_debug.arch", unsafe.Offsetof(gd.DebugReg), 8},

		{"kvm_debug_exit_arch.pc", unsafe.Offsetof(de.PC), 8},
		{"kvm_debug_exit_arch.dr6", unsafe.Offsetof(de.DR6), 16},
		{"kvm_debug_exit_arch.dr7", unsafe.Offsetof(de.DR7), 24},
	})
}

// TestRunLayout checks struct kvm_run: the header and each exit-union
// member, with offsets relative to the start of kvm_run (union at 32).
func TestRunLayout(t *testing.T) {
	var h runHeader
	var io IOExit
	var mm MMIOExit
	var ie internalExit
	var ef emulationFailureExit
	var fe failEntryExit
	var se systemEventExit
	const u = runExitUnionOffset
	checkLayout(t, []layoutCase{
		{"sizeof(kvm_run)", runMinSize, 2352},
		{"kvm_run.hw (exit union)", u, 32},
		{"kvm_run.request_interrupt_window", unsafe.Offsetof(h.RequestInterruptWindow), 0},
		{"kvm_run.immediate_exit", unsafe.Offsetof(h.ImmediateExit), 1},
		{"kvm_run.exit_reason", unsafe.Offsetof(h.ExitReason), 8},
		{"kvm_run.ready_for_interrupt_injection", unsafe.Offsetof(h.ReadyForInterruptInjection), 12},
		{"kvm_run.if_flag", unsafe.Offsetof(h.IFFlag), 13},
		{"kvm_run.flags", unsafe.Offsetof(h.Flags), 14},
		{"kvm_run.cr8", unsafe.Offsetof(h.CR8), 16},
		{"kvm_run.apic_base", unsafe.Offsetof(h.APICBase), 24},
		{"sizeof(header)", unsafe.Sizeof(h), 32},

		{"kvm_run.io.direction", u + unsafe.Offsetof(io.Direction), 32},
		{"kvm_run.io.size", u + unsafe.Offsetof(io.Size), 33},
		{"kvm_run.io.port", u + unsafe.Offsetof(io.Port), 34},
		{"kvm_run.io.count", u + unsafe.Offsetof(io.Count), 36},
		{"kvm_run.io.data_offset", u + unsafe.Offsetof(io.DataOffset), 40},

		{"kvm_run.mmio.phys_addr", u + unsafe.Offsetof(mm.PhysAddr), 32},
		{"kvm_run.mmio.data", u + unsafe.Offsetof(mm.Data), 40},
		{"kvm_run.mmio.len", u + unsafe.Offsetof(mm.Len), 48},
		{"kvm_run.mmio.is_write", u + unsafe.Offsetof(mm.IsWrite), 52},

		{"kvm_run.internal.suberror", u + unsafe.Offsetof(ie.Suberror), 32},
		{"kvm_run.internal.ndata", u + unsafe.Offsetof(ie.NData), 36},
		{"kvm_run.internal.data", u + unsafe.Offsetof(ie.Data), 40},

		{"kvm_run.emulation_failure.suberror", u + unsafe.Offsetof(ef.Suberror), 32},
		{"kvm_run.emulation_failure.ndata", u + unsafe.Offsetof(ef.NData), 36},
		{"kvm_run.emulation_failure.flags", u + unsafe.Offsetof(ef.Flags), 40},
		{"kvm_run.emulation_failure.insn_size", u + unsafe.Offsetof(ef.InsnSize), 48},
		{"kvm_run.emulation_failure.insn_bytes", u + unsafe.Offsetof(ef.InsnBytes), 49},

		{"kvm_run.fail_entry.hardware_entry_failure_reason", u + unsafe.Offsetof(fe.HardwareEntryFailureReason), 32},
		{"kvm_run.fail_entry.cpu", u + unsafe.Offsetof(fe.CPU), 40},

		{"kvm_run.system_event.type", u + unsafe.Offsetof(se.Type), 32},
		{"kvm_run.system_event.ndata", u + unsafe.Offsetof(se.NData), 36},
		{"kvm_run.system_event.data", u + unsafe.Offsetof(se.Data), 40},

		{"kvm_run.debug.arch", u, 32},
	})
	for _, c := range []struct {
		name string
		size uintptr
	}{
		{"io", unsafe.Sizeof(io)}, {"mmio", unsafe.Sizeof(mm)}, {"internal", unsafe.Sizeof(ie)},
		{"emulation_failure", unsafe.Sizeof(ef)}, {"fail_entry", unsafe.Sizeof(fe)},
		{"system_event", unsafe.Sizeof(se)}, {"debug", unsafe.Sizeof(DebugExit{})},
	} {
		if c.size > runExitUnionSize {
			t.Errorf("exit member %s is %d bytes, larger than the 256-byte union", c.name, c.size)
		}
	}
}

func TestRoutingUnionOffsets(t *testing.T) {
	// In kvm_irq_routing_entry the union starts at 16: irqchip {irqchip
	// at 16, pin at 20}; msi {address_lo 16, address_hi 20, data 24, devid 28}.
	e := IRQChipRoute(5, IRQChipIOAPIC, 7)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&e)), unsafe.Sizeof(e))
	if getLE32(b[0:]) != 5 || getLE32(b[4:]) != IRQRoutingIRQChip || getLE32(b[16:]) != 2 || getLE32(b[20:]) != 7 {
		t.Errorf("irqchip route bytes wrong: % x", b)
	}
	if chip, pin := e.IRQChip(); chip != 2 || pin != 7 {
		t.Errorf("IRQChip() = %d,%d", chip, pin)
	}
	m := MSIRoute(30, 0x1_FEE0_1000, 0x4041)
	m.U[12] = 9 // devid
	b = unsafe.Slice((*byte)(unsafe.Pointer(&m)), unsafe.Sizeof(m))
	if getLE32(b[0:]) != 30 || getLE32(b[4:]) != IRQRoutingMSI || getLE32(b[16:]) != 0xFEE01000 ||
		getLE32(b[20:]) != 1 || getLE32(b[24:]) != 0x4041 || getLE32(b[28:]) != 9 {
		t.Errorf("msi route bytes wrong: % x", b)
	}
	if a, d, id := m.MSI(); a != 0x1_FEE0_1000 || d != 0x4041 || id != 9 {
		t.Errorf("MSI() = %#x %#x %d", a, d, id)
	}
}
