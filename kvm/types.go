package kvm

import "unsafe"

// Go mirrors of the kernel structures. Field order, sizes and padding follow
// linux/kvm.h and arch/x86/include/uapi/asm/kvm.h exactly; layout_test.go
// checks every size and offset against numbers measured with gcc.

// Regs is struct kvm_regs.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable (GDTR/IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [4]uint64
}

// FPU is struct kvm_fpu.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// XSave is struct kvm_xsave (KVM_GET_XSAVE / KVM_SET_XSAVE): the vCPU's
// x87, SSE and extended state in the XSAVE layout. Its first 512 bytes are
// the FXSAVE image (64-bit format: FCW, FSW, abridged FTW, FOP, FIP, FDP,
// MXCSR, MXCSR_MASK, ST0-ST7, XMM0-XMM15; offsets FX*), then the XSAVE
// header (XSTATE_BV at byte 512), then the extended components. Unlike
// struct kvm_fpu (KVM_GET_FPU), which carries neither MXCSR nor
// MXCSR_MASK (Linux's kvm_arch_vcpu_ioctl_get_fpu copies everything but
// them), it holds the whole x87/SSE state, and KVM serves FP and SSE
// through it even where the guest has no XSAVE (noxsave) or the host none.
type XSave struct {
	Region [1024]uint32
}

// Bytes is the 4096-byte region, for reading and writing fields in place.
func (x *XSave) Bytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&x.Region[0])), len(x.Region)*4)
}

// Offsets in the FXSAVE image (the first 512 bytes of XSave.Region; SDM
// Vol. 1 table 10-2, 64-bit format) and in the XSAVE header.
const (
	FXFCW       = 0   // x87 control word, 2 bytes
	FXFSW       = 2   // x87 status word, 2 bytes
	FXFTW       = 4   // abridged tag word, 1 byte: bit i set = physical register i not empty
	FXFOP       = 6   // last x87 opcode, 11 bits
	FXFIP       = 8   // last x87 instruction pointer, 8 bytes
	FXFDP       = 16  // last x87 data pointer, 8 bytes
	FXMXCSR     = 24  // 4 bytes
	FXMXCSRMask = 28  // 4 bytes: the MXCSR bits this CPU supports
	FXST0       = 32  // ST0-ST7 (stack order), 16 bytes apart, 10 used
	FXXMM0      = 160 // XMM0-XMM15, 16 bytes each
	FXSize      = 512
	XSaveBV     = 512 // XSTATE_BV: the components the image holds (bit 0 x87, bit 1 SSE); the others read as init state
)

// XCR is struct kvm_xcr: one extended control register (XCR0 is 0).
type XCR struct {
	XCR   uint32
	_     uint32
	Value uint64
}

// XCRs is struct kvm_xcrs (KVM_GET_XCRS / KVM_SET_XCRS).
type XCRs struct {
	NrXCRs uint32
	Flags  uint32
	XCRs   [16]XCR
	_      [16]uint64
}

// MSREntry is struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// msrsHeader is struct kvm_msrs without its flexible array.
type msrsHeader struct {
	NMSRs uint32
	_     uint32
}

// CPUIDEntry2 is struct kvm_cpuid_entry2.
type CPUIDEntry2 struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// CPUIDFlagSignificantIndex (KVM_CPUID_FLAG_SIGNIFCANT_INDEX) marks leaves
// whose Index (ECX input) matters.
const CPUIDFlagSignificantIndex = 1

// cpuid2Header is struct kvm_cpuid2 without its flexible array.
type cpuid2Header struct {
	NEnt uint32
	_    uint32
}

// UserspaceMemoryRegion is struct kvm_userspace_memory_region.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64 // 0 deletes the slot
	UserspaceAddr uint64
}

// Memory region flags.
const (
	MemLogDirtyPages = 1 // KVM_MEM_LOG_DIRTY_PAGES
	MemReadonly      = 2 // KVM_MEM_READONLY
)

// irqLevel is struct kvm_irq_level.
type irqLevel struct {
	IRQ   uint32
	Level uint32
}

// IRQFD is struct kvm_irqfd.
type IRQFD struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8
}

// IRQFD flags.
const (
	IRQFDFlagDeassign = 1 // KVM_IRQFD_FLAG_DEASSIGN
	IRQFDFlagResample = 2 // KVM_IRQFD_FLAG_RESAMPLE
)

// IOEventFD is struct kvm_ioeventfd.
type IOEventFD struct {
	DataMatch uint64
	Addr      uint64
	Len       uint32 // 0 (any length, if KVM_CAP_IOEVENTFD_ANY_LENGTH), 1, 2, 4 or 8
	FD        int32
	Flags     uint32
	_         [36]uint8
}

// IOEventFD flags.
const (
	IOEventFDFlagDataMatch = 1 // KVM_IOEVENTFD_FLAG_DATAMATCH
	IOEventFDFlagPIO       = 2 // KVM_IOEVENTFD_FLAG_PIO
	IOEventFDFlagDeassign  = 4 // KVM_IOEVENTFD_FLAG_DEASSIGN
)

// IRQRoutingEntry is struct kvm_irq_routing_entry. The 32-byte union U holds
// an irqchip route (IRQRoutingIRQChip) or an MSI route (IRQRoutingMSI);
// build entries with IRQChipRoute and MSIRoute.
type IRQRoutingEntry struct {
	GSI   uint32
	Type  uint32
	Flags uint32
	_     uint32
	U     [32]byte
}

// Routing entry types and irqchip numbers.
const (
	IRQRoutingIRQChip = 1 // KVM_IRQ_ROUTING_IRQCHIP
	IRQRoutingMSI     = 2 // KVM_IRQ_ROUTING_MSI

	IRQChipPICMaster = 0 // KVM_IRQCHIP_PIC_MASTER
	IRQChipPICSlave  = 1 // KVM_IRQCHIP_PIC_SLAVE
	IRQChipIOAPIC    = 2 // KVM_IRQCHIP_IOAPIC

	MSIValidDevID = 1 // KVM_MSI_VALID_DEVID (routing entry and kvm_msi flags)
)

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func getLE32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// IRQChipRoute routes gsi to pin of an in-kernel irqchip.
func IRQChipRoute(gsi, irqchip, pin uint32) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingIRQChip}
	putLE32(e.U[0:], irqchip)
	putLE32(e.U[4:], pin)
	return e
}

// MSIRoute routes gsi to an MSI message.
func MSIRoute(gsi uint32, addr uint64, data uint32) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingMSI}
	putLE32(e.U[0:], uint32(addr))
	putLE32(e.U[4:], uint32(addr>>32))
	putLE32(e.U[8:], data)
	return e
}

// IRQChip returns an irqchip route's chip and pin.
func (e *IRQRoutingEntry) IRQChip() (irqchip, pin uint32) {
	return getLE32(e.U[0:]), getLE32(e.U[4:])
}

// MSI returns an MSI route's address, data and devid.
func (e *IRQRoutingEntry) MSI() (addr uint64, data, devid uint32) {
	return uint64(getLE32(e.U[0:])) | uint64(getLE32(e.U[4:]))<<32, getLE32(e.U[8:]), getLE32(e.U[12:])
}

// irqRoutingHeader is struct kvm_irq_routing without its flexible array.
type irqRoutingHeader struct {
	NR    uint32
	Flags uint32
}

// MSI is struct kvm_msi.
type MSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]uint8
}

// PITConfig is struct kvm_pit_config.
type PITConfig struct {
	Flags uint32
	_     [15]uint32
}

// PITSpeakerDummy (KVM_PIT_SPEAKER_DUMMY) makes port 0x61 a dummy speaker.
const PITSpeakerDummy = 1

// Translation is struct kvm_translation.
type Translation struct {
	LinearAddress   uint64
	PhysicalAddress uint64
	Valid           uint8
	Writeable       uint8
	Usermode        uint8
	_               [5]uint8
}

// ExceptionState is kvm_vcpu_events.exception.
type ExceptionState struct {
	Injected     uint8
	Nr           uint8
	HasErrorCode uint8
	Pending      uint8
	ErrorCode    uint32
}

// InterruptState is kvm_vcpu_events.interrupt.
type InterruptState struct {
	Injected uint8
	Nr       uint8
	Soft     uint8
	Shadow   uint8
}

// NMIState is kvm_vcpu_events.nmi.
type NMIState struct {
	Injected uint8
	Pending  uint8
	Masked   uint8
	_        uint8
}

// SMIState is kvm_vcpu_events.smi.
type SMIState struct {
	SMM          uint8
	Pending      uint8
	SMMInsideNMI uint8
	LatchedInit  uint8
}

// VCPUEvents is struct kvm_vcpu_events.
type VCPUEvents struct {
	Exception           ExceptionState
	Interrupt           InterruptState
	NMI                 NMIState
	SIPIVector          uint32
	Flags               uint32
	SMI                 SMIState
	TripleFaultPending  uint8
	_                   [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// VCPUEvents flags (which optional fields KVM_SET_VCPU_EVENTS should apply).
const (
	VCPUEventValidNMIPending = 1  // KVM_VCPUEVENT_VALID_NMI_PENDING
	VCPUEventValidSIPIVector = 2  // KVM_VCPUEVENT_VALID_SIPI_VECTOR
	VCPUEventValidShadow     = 4  // KVM_VCPUEVENT_VALID_SHADOW
	VCPUEventValidSMM        = 8  // KVM_VCPUEVENT_VALID_SMM
	VCPUEventValidPayload    = 16 // KVM_VCPUEVENT_VALID_PAYLOAD
)

// LAPICState is struct kvm_lapic_state: the local APIC register page.
type LAPICState struct {
	Regs [1024]byte
}

// MPState is struct kvm_mp_state.
type MPState uint32

// MP states.
const (
	MPStateRunnable      MPState = 0 // KVM_MP_STATE_RUNNABLE
	MPStateUninitialized MPState = 1 // KVM_MP_STATE_UNINITIALIZED
	MPStateInitReceived  MPState = 2 // KVM_MP_STATE_INIT_RECEIVED
	MPStateHalted        MPState = 3 // KVM_MP_STATE_HALTED
	MPStateSIPIReceived  MPState = 4 // KVM_MP_STATE_SIPI_RECEIVED
)

// GuestDebug is struct kvm_guest_debug (x86 arch part: debugreg[8]).
type GuestDebug struct {
	Control  uint32
	_        uint32
	DebugReg [8]uint64
}

// GuestDebug control bits.
const (
	GuestDbgEnable     = 1       // KVM_GUESTDBG_ENABLE
	GuestDbgSingleStep = 2       // KVM_GUESTDBG_SINGLESTEP
	GuestDbgUseSWBP    = 1 << 16 // KVM_GUESTDBG_USE_SW_BP
	GuestDbgUseHWBP    = 1 << 17 // KVM_GUESTDBG_USE_HW_BP
)

// createDevice is struct kvm_create_device.
type createDevice struct {
	Type  uint32
	FD    uint32
	Flags uint32
}

// Device types and the VFIO device's attributes.
const (
	DevTypeVFIO      = 4 // KVM_DEV_TYPE_VFIO
	CreateDeviceTest = 1 // KVM_CREATE_DEVICE_TEST

	DevVFIOFile    = 1 // KVM_DEV_VFIO_FILE (formerly KVM_DEV_VFIO_GROUP)
	DevVFIOFileAdd = 1 // KVM_DEV_VFIO_FILE_ADD (= GROUP_ADD)
	DevVFIOFileDel = 2 // KVM_DEV_VFIO_FILE_DEL (= GROUP_DEL)
)

// DeviceAttr is struct kvm_device_attr.
type DeviceAttr struct {
	Flags uint32
	Group uint32
	Attr  uint64
	Addr  uint64 // user address of the attribute's value
}

// enableCap is struct kvm_enable_cap.
type enableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	_     [64]uint8
}

// X2APIC_API flags (KVM_CAP_X2APIC_API args[0]).
const (
	X2APICAPIUse32BitIDs           = 1 // KVM_X2APIC_API_USE_32BIT_IDS
	X2APICAPIDisableBroadcastQuirk = 2 // KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK
)

// Cap is a KVM capability number (KVM_CAP_*).
type Cap uint32

// Capabilities godvm asks about.
const (
	CapIRQChip                Cap = 0
	CapHLT                    Cap = 1
	CapUserMemory             Cap = 3
	CapSetTSSAddr             Cap = 4
	CapExtCPUID               Cap = 7
	CapNRVCPUs                Cap = 9
	CapNRMemSlots             Cap = 10
	CapMPState                Cap = 14
	CapSetGuestDebug          Cap = 23
	CapIRQRouting             Cap = 25
	CapIRQFD                  Cap = 32
	CapPIT2                   Cap = 33
	CapIOEventFD              Cap = 36
	CapSetIdentityMapAddr     Cap = 37
	CapAdjustClock            Cap = 39
	CapVCPUEvents             Cap = 41
	CapMaxVCPUs               Cap = 66
	CapTSCDeadlineTimer       Cap = 72
	CapSyncRegs               Cap = 74
	CapSignalMSI              Cap = 77
	CapReadonlyMem            Cap = 81
	CapIRQFDResample          Cap = 82
	CapDeviceCtrl             Cap = 89
	CapSplitIRQChip           Cap = 121
	CapIOEventFDAnyLength     Cap = 122
	CapMaxVCPUID              Cap = 128
	CapX2APICAPI              Cap = 129
	CapMSIDevID               Cap = 131
	CapImmediateExit          Cap = 136
	CapExceptionPayload       Cap = 164
	CapExitOnEmulationFailure Cap = 204
)
