package dsa

// The BAR0 register map (SPEC ch. 9; Linux idxd registers.h). One file so the layout
// is easy to find.

// BAR0 layout of the model (SPEC Figure 9-1's example layout).
const (
	BAR0Size         = 0x10000 // 64 KiB ("at least 64 KB", SPEC 9.1.1.1)
	MSIXPermOffset   = 0x400   // MSIXPERM: 8-byte stride per MSI-X entry
	GRPCFGOffset     = 0x600   // 64 bytes per group
	WQCFGOffset      = 0x800   // 32 (1.0) or 64 (2.0) bytes per WQ
	MSIXTableOffset  = 0x4000  // MSI-X table (16 bytes per vector), BIR 0
	MSIXPBAOffset    = 0x5000  // MSI-X PBA, BIR 0
	PortalStride     = 0x4000  // 4 portal pages per WQ in BAR2
	PortalPage       = 0x1000
	GRPCFGSize       = 64
	CompletionRecLen = 32
)

// Portal pages within a WQ's 16 KiB (Linux idxd: idxd_get_wq_portal_offset).
const (
	PortalUnlimitedMSIX = 0
	PortalLimitedMSIX   = 1 // the one the Linux driver uses
	PortalUnlimitedIMS  = 2
	PortalLimitedIMS    = 3
)

// Fixed registers.
const (
	RegVersion   = 0x00
	RegGenCap    = 0x10
	RegWQCap     = 0x20
	RegGrpCap    = 0x30
	RegEngCap    = 0x38
	RegOpCap     = 0x40 // 4 qwords
	RegOffsets   = 0x60 // 2 qwords
	RegGenCfg    = 0x80
	RegGenCtrl   = 0x88
	RegGenSts    = 0x90
	RegIntCause  = 0x98
	RegCmd       = 0xA0
	RegCmdSts    = 0xA8
	RegCmdCap    = 0xB0
	RegSWErr     = 0xC0 // 4 qwords
	regFixedEnd  = 0x100
	regOpCapEnd  = RegOpCap + 32
	regSWErrEnd  = RegSWErr + 32
	regOffsetEnd = RegOffsets + 16
)

// GENSTS states.
const (
	StateDisabled = 0
	StateEnabled  = 1
	StateDrain    = 2
	StateHalt     = 3
)

// INTCAUSE bits.
const (
	IntSWErr     = 1 << 0
	IntCmdDone   = 1 << 1
	IntOccupancy = 1 << 2
	IntPerfmon   = 1 << 3
	IntHalt      = 1 << 4
)

// GENCTRL bits.
const (
	GenCtrlSWErrIntEn = 1 << 0
	GenCtrlHaltIntEn  = 1 << 1
)

// Command codes (CMD[24:20]).
const (
	CmdEnableDevice     = 1
	CmdDisableDevice    = 2
	CmdDrainAll         = 3
	CmdAbortAll         = 4
	CmdResetDevice      = 5
	CmdEnableWQ         = 6
	CmdDisableWQ        = 7
	CmdDrainWQ          = 8
	CmdAbortWQ          = 9
	CmdResetWQ          = 10
	CmdDrainPASID       = 11
	CmdAbortPASID       = 12
	CmdRequestIntHandle = 13
	CmdReleaseIntHandle = 14
)

// CMDSTS error codes (SPEC 9.2.13).
const (
	CmdStsOK              = 0x00
	CmdStsInvalCmd        = 0x01
	CmdStsInvalWQIdx      = 0x02
	CmdStsHWErr           = 0x03
	CmdStsDevEnabled      = 0x10
	CmdStsConfig          = 0x11
	CmdStsBusMaster       = 0x12
	CmdStsPASIDInval      = 0x13
	CmdStsWQSizeRange     = 0x14
	CmdStsGrpConfig       = 0x15
	CmdStsGrpConfig2      = 0x16
	CmdStsGrpConfig3      = 0x17
	CmdStsDevNotEnabled   = 0x20
	CmdStsWQEnabled       = 0x21
	CmdStsWQSize          = 0x22
	CmdStsWQPriority      = 0x23
	CmdStsWQMode          = 0x24
	CmdStsBOF             = 0x25
	CmdStsPASIDEn         = 0x26
	CmdStsMaxBatch        = 0x27
	CmdStsMaxXfer         = 0x28
	CmdStsDisDevNotEn     = 0x31
	CmdStsWQNotEnabled    = 0x32
	CmdStsInvalIntIdx     = 0x41
	CmdStsNoHandle        = 0x42
	CmdStsActive          = 1 << 31
	cmdIntReq             = 1 << 31
	cmdCodeShift          = 20
	cmdOperandMask        = 0xfffff
	cmdCodeMask           = 0x1f
	wqOperandGroupShift   = 16
	wqOperandBitmapMask   = 0xffff
	intHandleIMS          = 1 << 16
	swerrWQFull           = 0x53
	swerrCmdWhileActive   = 0x52
	swerrPCIConfigChanged = 0x51
)

// WQCFG dword 2 fields.
const (
	wqModeDedicated = 1 << 0
	wqBOF           = 1 << 1
	wqATSDisable    = 1 << 2
	wqPRSDisable    = 1 << 3
	wqPrioShift     = 4
	wqPASIDShift    = 8
	wqPASIDEn       = 1 << 28
	wqPriv          = 1 << 29
)

// Operation codes (SPEC Table 8-2).
const (
	OpNOOP      = 0x00
	OpBatch     = 0x01
	OpDrain     = 0x02
	OpMemMove   = 0x03
	OpFill      = 0x04
	OpCompare   = 0x05
	OpCompVal   = 0x06
	OpCRDelta   = 0x07
	OpAPDelta   = 0x08
	OpDualcast  = 0x09
	OpCRCGen    = 0x10
	OpCopyCRC   = 0x11
	OpDIFCheck  = 0x12
	OpDIFInsert = 0x13
	OpDIFStrip  = 0x14
	OpDIFUpdate = 0x15
	OpCFlush    = 0x20
)

// OpCapDSA1 is OPCAP qword 0 of a Sapphire Rapids DSA: ops 0-9, 0x10-0x15, 0x20.
const OpCapDSA1 = 0x1003f03ff

// Descriptor flags (SPEC Table 8-3).
const (
	FlagFence      = 1 << 0
	FlagBOF        = 1 << 1
	FlagCRAV       = 1 << 2
	FlagRCR        = 1 << 3
	FlagRCI        = 1 << 4
	FlagCRSTS      = 1 << 5
	FlagCheckRes   = 1 << 7
	FlagCC         = 1 << 8
	FlagAddr1TC    = 1 << 9
	FlagAddr2TC    = 1 << 10
	FlagAddr3TC    = 1 << 11
	FlagCRTC       = 1 << 12
	FlagStrictOrd  = 1 << 13
	FlagDestRdback = 1 << 14
	// Op-specific flags (bits 23:16).
	FlagCRCReadSeed      = 1 << 16
	FlagCRCBypassInvRefl = 1 << 17
	FlagCRCBypassDataRef = 1 << 18
	FlagCRC64            = 1 << 19
	FlagFill16           = 1 << 18
	FlagDrainRdback1     = 1 << 16
	FlagDrainRdback2     = 1 << 17
)

// Completion status codes (SPEC Table 5-6).
const (
	StatusSuccess       = 0x01
	StatusSuccessPred   = 0x02
	StatusPageFault     = 0x03
	StatusBatchFail     = 0x05
	StatusBatchPF       = 0x06
	StatusDeltaNoInc    = 0x07
	StatusDeltaRange    = 0x08
	StatusDIFErr        = 0x09
	StatusBadOpcode     = 0x10
	StatusInvalFlags    = 0x11
	StatusNonZeroRsvd   = 0x12
	StatusXferSize      = 0x13
	StatusDescCount     = 0x14
	StatusDeltaSize     = 0x15
	StatusOverlap       = 0x16
	StatusDualcastAlign = 0x17
	StatusDescListAlign = 0x18
	StatusIntHandle     = 0x19
	StatusCRFault       = 0x1a
	StatusCRAlign       = 0x1b
	StatusAddrAlign     = 0x1c
	StatusFaultWrite    = 0x80 // status bit 7: the faulting access was a write
)
