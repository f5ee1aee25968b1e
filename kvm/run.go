package kvm

import (
	"fmt"
	"unsafe"
)

// ExitReason is kvm_run.exit_reason (KVM_EXIT_*).
type ExitReason uint32

// Exit reasons (the x86 ones godvm meets).
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
	ExitX86RDMSR      ExitReason = 29
	ExitX86WRMSR      ExitReason = 30
	ExitX86BusLock    ExitReason = 33
	ExitNotify        ExitReason = 37
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "UNKNOWN", ExitException: "EXCEPTION", ExitIO: "IO", ExitHypercall: "HYPERCALL",
	ExitDebug: "DEBUG", ExitHLT: "HLT", ExitMMIO: "MMIO", ExitIRQWindowOpen: "IRQ_WINDOW_OPEN",
	ExitShutdown: "SHUTDOWN", ExitFailEntry: "FAIL_ENTRY", ExitIntr: "INTR", ExitSetTPR: "SET_TPR",
	ExitTPRAccess: "TPR_ACCESS", ExitNMI: "NMI", ExitInternalError: "INTERNAL_ERROR",
	ExitSystemEvent: "SYSTEM_EVENT", ExitIOAPICEOI: "IOAPIC_EOI", ExitX86RDMSR: "X86_RDMSR",
	ExitX86WRMSR: "X86_WRMSR", ExitX86BusLock: "X86_BUS_LOCK", ExitNotify: "NOTIFY",
}

func (r ExitReason) String() string {
	if n, ok := exitNames[r]; ok {
		return "KVM_EXIT_" + n
	}
	return fmt.Sprintf("KVM_EXIT(%d)", uint32(r))
}

// IO directions (kvm_run.io.direction).
const (
	IODirIn  = 0 // KVM_EXIT_IO_IN
	IODirOut = 1 // KVM_EXIT_IO_OUT
)

// Internal-error suberrors (kvm_run.internal.suberror).
const (
	InternalErrorEmulation      = 1 // KVM_INTERNAL_ERROR_EMULATION
	InternalErrorSimulEx        = 2 // KVM_INTERNAL_ERROR_SIMUL_EX
	InternalErrorDeliveryEv     = 3 // KVM_INTERNAL_ERROR_DELIVERY_EV
	InternalErrorUnexpectedExit = 4 // KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
)

// EmulationFlagInstructionBytes (KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)
// says insn_size/insn_bytes are valid in an emulation failure.
const EmulationFlagInstructionBytes = 1

// System event types (kvm_run.system_event.type).
const (
	SystemEventShutdown = 1 // KVM_SYSTEM_EVENT_SHUTDOWN
	SystemEventReset    = 2 // KVM_SYSTEM_EVENT_RESET
	SystemEventCrash    = 3 // KVM_SYSTEM_EVENT_CRASH
)

// runHeader is the fixed head of struct kvm_run (before the exit union).
type runHeader struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	_                          [6]uint8
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IFFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
}

// Offsets in struct kvm_run.
const (
	runExitUnionOffset = 32   // offsetof(struct kvm_run, hw)
	runExitUnionSize   = 256  // the union's padding[256]
	runMinSize         = 2352 // sizeof(struct kvm_run)
)

// IOExit is kvm_run.io.
type IOExit struct {
	Direction  uint8 // IODirIn or IODirOut
	Size       uint8 // bytes per access: 1, 2 or 4
	Port       uint16
	Count      uint32 // accesses (string I/O with REP)
	DataOffset uint64 // offset of the data in the kvm_run page
}

// MMIOExit is kvm_run.mmio.
type MMIOExit struct {
	PhysAddr uint64
	Data     [8]uint8
	Len      uint32
	IsWrite  uint8
}

// internalExit is kvm_run.internal.
type internalExit struct {
	Suberror uint32
	NData    uint32
	Data     [16]uint64
}

// emulationFailureExit is kvm_run.emulation_failure (an overlay of internal).
type emulationFailureExit struct {
	Suberror  uint32
	NData     uint32
	Flags     uint64
	InsnSize  uint8
	InsnBytes [15]uint8
}

// failEntryExit is kvm_run.fail_entry.
type failEntryExit struct {
	HardwareEntryFailureReason uint64
	CPU                        uint32
}

// systemEventExit is kvm_run.system_event.
type systemEventExit struct {
	Type  uint32
	NData uint32
	Data  [16]uint64
}

// DebugExit is kvm_run.debug.arch (struct kvm_debug_exit_arch).
type DebugExit struct {
	Exception uint32
	_         uint32
	PC        uint64
	DR6       uint64
	DR7       uint64
}

// InternalError is a decoded KVM_EXIT_INTERNAL_ERROR.
type InternalError struct {
	Suberror uint32
	Data     []uint64 // internal.data[:ndata] (at most 16)
	// InsnBytes holds the instruction bytes KVM fetched, when the exit is an
	// emulation failure and KVM_CAP_EXIT_ON_EMULATION_FAILURE supplied them;
	// nil otherwise.
	InsnBytes []byte
}

// SystemEvent is a decoded KVM_EXIT_SYSTEM_EVENT.
type SystemEvent struct {
	Type uint32
	Data []uint64 // data[:ndata]
}

// Run is a vCPU's shared kvm_run page. Accessors read the exit the last
// KVM_RUN left there; they are valid until the next KVM_RUN.
type Run struct {
	b []byte
}

// NewRun wraps a kvm_run page: the vCPU's mmap, or, in tests, any 8-byte
// aligned buffer of at least sizeof(struct kvm_run) bytes.
func NewRun(b []byte) (*Run, error) {
	if len(b) < runMinSize {
		return nil, fmt.Errorf("kvm_run: %d bytes, need at least %d", len(b), runMinSize)
	}
	if uintptr(unsafe.Pointer(&b[0]))%8 != 0 {
		return nil, fmt.Errorf("kvm_run: buffer not 8-byte aligned")
	}
	return &Run{b: b}, nil
}

// Bytes is the whole kvm_run mapping.
func (r *Run) Bytes() []byte { return r.b }

func (r *Run) hdr() *runHeader       { return (*runHeader)(unsafe.Pointer(&r.b[0])) }
func (r *Run) union() unsafe.Pointer { return unsafe.Pointer(&r.b[runExitUnionOffset]) }

// ExitReason is kvm_run.exit_reason.
func (r *Run) ExitReason() ExitReason { return ExitReason(r.hdr().ExitReason) }

// ImmediateExit reads kvm_run.immediate_exit.
func (r *Run) ImmediateExit() bool { return r.hdr().ImmediateExit != 0 }

// IFFlag is kvm_run.if_flag (the guest's RFLAGS.IF at exit).
func (r *Run) IFFlag() bool { return r.hdr().IFFlag != 0 }

// ReadyForInterrupt is kvm_run.ready_for_interrupt_injection.
func (r *Run) ReadyForInterrupt() bool { return r.hdr().ReadyForInterruptInjection != 0 }

// CR8 is kvm_run.cr8.
func (r *Run) CR8() uint64 { return r.hdr().CR8 }

// APICBase is kvm_run.apic_base.
func (r *Run) APICBase() uint64 { return r.hdr().APICBase }

// SetImmediateExit sets kvm_run.immediate_exit: while set, KVM_RUN returns
// EINTR at once (the race-free way to kick a vCPU, with a signal).
func (r *Run) SetImmediateExit(on bool) {
	var v uint8
	if on {
		v = 1
	}
	r.hdr().ImmediateExit = v
}

// SetRequestInterruptWindow sets kvm_run.request_interrupt_window.
func (r *Run) SetRequestInterruptWindow(on bool) {
	var v uint8
	if on {
		v = 1
	}
	r.hdr().RequestInterruptWindow = v
}

// IO returns the KVM_EXIT_IO description.
func (r *Run) IO() IOExit { return *(*IOExit)(r.union()) }

// IOData is the data buffer of a KVM_EXIT_IO: Size*Count bytes at
// DataOffset in the page. For IODirIn the VMM fills it before the next
// KVM_RUN. It returns an error if the kernel's offset or size would leave
// the mapping.
func (r *Run) IOData() ([]byte, error) {
	io := r.IO()
	n := uint64(io.Size) * uint64(io.Count)
	if io.DataOffset > uint64(len(r.b)) || n > uint64(len(r.b))-io.DataOffset {
		return nil, fmt.Errorf("kvm_run: io data %#x+%#x outside the %#x-byte page", io.DataOffset, n, len(r.b))
	}
	return r.b[io.DataOffset : io.DataOffset+n], nil
}

// MMIO returns the KVM_EXIT_MMIO description.
func (r *Run) MMIO() MMIOExit { return *(*MMIOExit)(r.union()) }

// MMIOData is the live data of a KVM_EXIT_MMIO, Len bytes (at most 8): the
// bytes written, or the buffer to fill for a read.
func (r *Run) MMIOData() []byte {
	m := (*MMIOExit)(r.union())
	n := m.Len
	if n > 8 {
		n = 8
	}
	return m.Data[:n]
}

// InternalError decodes a KVM_EXIT_INTERNAL_ERROR.
func (r *Run) InternalError() InternalError {
	ie := (*internalExit)(r.union())
	nd := ie.NData
	if nd > uint32(len(ie.Data)) {
		nd = uint32(len(ie.Data))
	}
	out := InternalError{Suberror: ie.Suberror, Data: append([]uint64(nil), ie.Data[:nd]...)}
	if ie.Suberror == InternalErrorEmulation {
		ef := (*emulationFailureExit)(r.union())
		// flags and the instruction bytes count in ndata (flags, then
		// insn_size+insn_bytes as two more u64s).
		if ef.NData >= 3 && ef.Flags&EmulationFlagInstructionBytes != 0 {
			n := int(ef.InsnSize)
			if n > len(ef.InsnBytes) {
				n = len(ef.InsnBytes)
			}
			out.InsnBytes = append([]byte(nil), ef.InsnBytes[:n]...)
		}
	}
	return out
}

// FailEntry returns KVM_EXIT_FAIL_ENTRY's hardware reason and host CPU.
func (r *Run) FailEntry() (reason uint64, cpu uint32) {
	f := (*failEntryExit)(r.union())
	return f.HardwareEntryFailureReason, f.CPU
}

// HardwareExitReason returns KVM_EXIT_UNKNOWN's hardware_exit_reason.
func (r *Run) HardwareExitReason() uint64 { return *(*uint64)(r.union()) }

// SystemEvent decodes KVM_EXIT_SYSTEM_EVENT.
func (r *Run) SystemEvent() SystemEvent {
	s := (*systemEventExit)(r.union())
	nd := s.NData
	if nd > uint32(len(s.Data)) {
		nd = uint32(len(s.Data))
	}
	return SystemEvent{Type: s.Type, Data: append([]uint64(nil), s.Data[:nd]...)}
}

// Debug returns KVM_EXIT_DEBUG's arch state.
func (r *Run) Debug() DebugExit { return *(*DebugExit)(r.union()) }
