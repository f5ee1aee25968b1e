package kvm

// Requests names every ioctl request this package issues, for allow-lists:
// internal/sandbox builds godvm's seccomp filters from it.
// TestRequestsComplete fails when a request variable in ioctl.go is missing
// here.
func Requests() map[string]uintptr {
	return map[string]uintptr{
		"KVM_GET_API_VERSION":        kvmGetAPIVersion,
		"KVM_CREATE_VM":              kvmCreateVM,
		"KVM_CHECK_EXTENSION":        kvmCheckExtension,
		"KVM_GET_VCPU_MMAP_SIZE":     kvmGetVCPUMmapSize,
		"KVM_GET_SUPPORTED_CPUID":    kvmGetSupportedCPUID,
		"KVM_CREATE_VCPU":            kvmCreateVCPU,
		"KVM_SET_USER_MEMORY_REGION": kvmSetUserMemoryRegion,
		"KVM_SET_TSS_ADDR":           kvmSetTSSAddr,
		"KVM_SET_IDENTITY_MAP_ADDR":  kvmSetIdentityMapAddr,
		"KVM_CREATE_IRQCHIP":         kvmCreateIRQChip,
		"KVM_IRQ_LINE":               kvmIRQLine,
		"KVM_SET_GSI_ROUTING":        kvmSetGSIRouting,
		"KVM_IRQFD":                  kvmIRQFD,
		"KVM_CREATE_PIT2":            kvmCreatePIT2,
		"KVM_IOEVENTFD":              kvmIOEventFD,
		"KVM_ENABLE_CAP":             kvmEnableCap,
		"KVM_SIGNAL_MSI":             kvmSignalMSI,
		"KVM_CREATE_DEVICE":          kvmCreateDevice,
		"KVM_SET_DEVICE_ATTR":        kvmSetDeviceAttr,
		"KVM_GET_DEVICE_ATTR":        kvmGetDeviceAttr,
		"KVM_HAS_DEVICE_ATTR":        kvmHasDeviceAttr,

		"KVM_RUN":             kvmRun,
		"KVM_GET_REGS":        kvmGetRegs,
		"KVM_SET_REGS":        kvmSetRegs,
		"KVM_GET_SREGS":       kvmGetSregs,
		"KVM_SET_SREGS":       kvmSetSregs,
		"KVM_TRANSLATE":       kvmTranslate,
		"KVM_GET_MSRS":        kvmGetMSRs,
		"KVM_SET_MSRS":        kvmSetMSRs,
		"KVM_GET_FPU":         kvmGetFPU,
		"KVM_SET_FPU":         kvmSetFPU,
		"KVM_GET_LAPIC":       kvmGetLAPIC,
		"KVM_SET_LAPIC":       kvmSetLAPIC,
		"KVM_SET_CPUID2":      kvmSetCPUID2,
		"KVM_GET_CPUID2":      kvmGetCPUID2,
		"KVM_GET_MP_STATE":    kvmGetMPState,
		"KVM_SET_MP_STATE":    kvmSetMPState,
		"KVM_SET_GUEST_DEBUG": kvmSetGuestDebug,
		"KVM_GET_VCPU_EVENTS": kvmGetVCPUEvents,
		"KVM_SET_VCPU_EVENTS": kvmSetVCPUEvents,
		"KVM_GET_XSAVE":       kvmGetXSave,
		"KVM_SET_XSAVE":       kvmSetXSave,
		"KVM_GET_XCRS":        kvmGetXCRs,
		"KVM_SET_XCRS":        kvmSetXCRs,
	}
}
