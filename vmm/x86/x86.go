// Package x86 holds the 64-bit Linux boot protocol's CPU state as plain data:
// the boot GDT, identity-mapped page tables, segment and control registers,
// general registers, MSRs, FPU defaults and the per-vCPU CPUID adjustments.
// Nothing here makes a system call: the types that KVM takes as they are
// (segments, descriptor tables, CPUID entries) are aliases of the kvm types,
// and vmm/ hands these values to the vCPU.
//
// The 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit Boot
// Protocol") asks for: long mode with paging, an identity map covering the
// kernel, boot_params and the command line, a GDT with a flat 4 GiB execute/
// read segment at __BOOT_CS (0x10) and read/write at __BOOT_DS (0x18), CS =
// __BOOT_CS, DS/ES/SS = __BOOT_DS, interrupts off, and RSI = &boot_params.
package x86

import (
	"encoding/binary"

	"godvm/addr"
	"godvm/kvm"
	"godvm/vmm/layout"
)

// Selectors of the boot GDT.
const (
	SelCode = 0x10 // __BOOT_CS
	SelData = 0x18 // __BOOT_DS
	SelTSS  = 0x20
)

// Control-register, EFER and RFLAGS bits used at boot.
const (
	CR0PE = 1 << 0
	CR0ET = 1 << 4
	CR0NE = 1 << 5
	CR0PG = 1 << 31

	CR4PAE = 1 << 5

	EFERLME = 1 << 8
	EFERLMA = 1 << 10

	RFLAGSReserved = 1 << 1 // bit 1 always reads as 1; IF stays clear
)

// Segment is a segment register as KVM describes it (struct kvm_segment).
type Segment = kvm.Segment

// DTable is a descriptor-table register (GDTR/IDTR).
type DTable = kvm.DTable

// Sregs is the part of struct kvm_sregs that boot sets. Fields KVM keeps
// (APIC base, interrupt bitmap, CR8, CR2) are left to the VMM.
type Sregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT Segment
	GDT, IDT                        DTable
	CR0, CR3, CR4, EFER             uint64
}

// Regs is the part of struct kvm_regs that boot sets; all others are 0.
type Regs struct {
	RIP, RSP, RBP, RSI, RFLAGS uint64
}

// GDTEntry encodes an 8-byte segment descriptor. flags holds the access byte
// in bits 0-7 and the G/DB/L/AVL nibble in bits 12-15 (0xa09b is a 64-bit
// code segment); limit is 20 bits.
func GDTEntry(flags uint16, base, limit uint32) uint64 {
	return uint64(base&0xff000000)<<32 |
		uint64(flags&0xf0ff)<<40 |
		uint64(limit&0x000f0000)<<32 |
		uint64(base&0x00ffffff)<<16 |
		uint64(limit&0x0000ffff)
}

// SegmentFromGDT decodes a descriptor into the form KVM wants.
func SegmentFromGDT(e uint64, sel uint16) Segment {
	limit := uint32(e&0xffff) | uint32((e>>48)&0xf)<<16
	g := uint8(e>>55) & 1
	if g == 1 { // 4 KiB granularity: the limit counts pages
		limit = limit<<12 | 0xfff
	}
	p := uint8(e>>47) & 1
	s := Segment{
		Base:     (e>>16)&0xffffff | ((e>>56)&0xff)<<24,
		Limit:    limit,
		Selector: sel,
		Type:     uint8(e>>40) & 0xf,
		S:        uint8(e>>44) & 1,
		DPL:      uint8(e>>45) & 3,
		Present:  p,
		AVL:      uint8(e>>52) & 1,
		L:        uint8(e>>53) & 1,
		DB:       uint8(e>>54) & 1,
		G:        g,
	}
	if p == 0 {
		s.Unusable = 1
	}
	return s
}

// Access bytes and flags of the boot descriptors.
const (
	codeFlags = 0xa09b // G, L, present, DPL 0, code, execute/read, accessed
	dataFlags = 0xc093 // G, DB, present, DPL 0, data, read/write, accessed
	tssFlags  = 0x008b // present, 64-bit TSS (busy)
	tssLimit  = 0x67
)

// GDT returns the boot GDT: null, null, code at 0x10, data at 0x18 and a
// 16-byte TSS descriptor at 0x20 (base 0; only its shape matters, KVM takes
// TR from the sregs).
func GDT() []uint64 {
	return []uint64{
		0,
		0,
		GDTEntry(codeFlags, 0, 0xfffff),
		GDTEntry(dataFlags, 0, 0xfffff),
		GDTEntry(tssFlags, 0, tssLimit),
		0, // upper half of the 64-bit TSS descriptor (base bits 32-63)
	}
}

// GDTBytes is GDT() as it lies in guest memory at layout.BootGDT.
func GDTBytes() []byte {
	g := GDT()
	b := make([]byte, 8*len(g))
	for i, e := range g {
		binary.LittleEndian.PutUint64(b[8*i:], e)
	}
	return b
}

// BootSregs returns the segment and control registers for the 64-bit entry.
func BootSregs() Sregs {
	g := GDT()
	code := SegmentFromGDT(g[2], SelCode)
	data := SegmentFromGDT(g[3], SelData)
	tss := SegmentFromGDT(g[4], SelTSS)
	return Sregs{
		CS: code, DS: data, ES: data, FS: data, GS: data, SS: data,
		TR:   tss,
		LDT:  Segment{Type: 2, Present: 1, Unusable: 1}, // no LDT
		GDT:  DTable{Base: layout.BootGDT, Limit: uint16(8*len(g) - 1)},
		IDT:  DTable{Base: layout.BootIDT, Limit: 0},
		CR0:  CR0PE | CR0ET | CR0NE | CR0PG,
		CR3:  layout.PML4,
		CR4:  CR4PAE,
		EFER: EFERLME | EFERLMA,
	}
}

// BootRegs returns the general registers for entering the kernel at entry
// with RSI pointing at boot_params.
func BootRegs(entry, bootParams uint64) Regs {
	return Regs{
		RIP:    entry,
		RSP:    layout.BootStack,
		RBP:    layout.BootStack,
		RSI:    bootParams,
		RFLAGS: RFLAGSReserved,
	}
}

// Page-table entry bits.
const (
	PTEPresent = 1 << 0
	PTEWrite   = 1 << 1
	PTEHuge    = 1 << 7 // PS: 2 MiB page in a PD entry
)

// PageTables returns the identity map of the first 4 GiB as it lies in guest
// memory from layout.PML4: one PML4 page, one PDPT page and layout.PageDirs
// page directories of 2 MiB pages, all consecutive.
func PageTables() (gpa uint64, data []byte) {
	const page = addr.PageSize
	b := make([]byte, 2*page+layout.PageDirs*page)
	pml4 := b[0:page]
	pdpt := b[page : 2*page]
	binary.LittleEndian.PutUint64(pml4, layout.PDPT|PTEPresent|PTEWrite)
	for i := 0; i < layout.PageDirs; i++ {
		pd := uint64(layout.PDBase + i*page)
		binary.LittleEndian.PutUint64(pdpt[8*i:], pd|PTEPresent|PTEWrite)
		dir := b[2*page+i*page : 3*page+i*page]
		for j := 0; j < 512; j++ {
			addr := uint64(i*512+j) << 21
			binary.LittleEndian.PutUint64(dir[8*j:], addr|PTEPresent|PTEWrite|PTEHuge)
		}
	}
	return layout.PML4, b
}

// MSR is one model-specific register value.
type MSR struct {
	Index uint32
	Value uint64
}

// MSR numbers set at boot.
const (
	MSRSysenterCS   = 0x174
	MSRSysenterESP  = 0x175
	MSRSysenterEIP  = 0x176
	MSRMiscEnable   = 0x1a0
	MSRMTRRDefType  = 0x2ff
	MSRStar         = 0xc0000081
	MSRLStar        = 0xc0000082
	MSRCStar        = 0xc0000083
	MSRSyscallMask  = 0xc0000084
	MSRKernelGSBase = 0xc0000102

	MiscEnableFastString = 1 << 0
	MTRRDefEnable        = 1 << 11
	MTRRTypeWB           = 6
)

// BootMSRs are the MSR values every vCPU starts with: syscall MSRs cleared,
// fast strings on, and MTRRs enabled with write-back as the default type (a
// guest with MTRRs off maps everything uncached).
func BootMSRs() []MSR {
	return []MSR{
		{MSRSysenterCS, 0},
		{MSRSysenterESP, 0},
		{MSRSysenterEIP, 0},
		{MSRStar, 0},
		{MSRCStar, 0},
		{MSRKernelGSBase, 0},
		{MSRSyscallMask, 0},
		{MSRLStar, 0},
		{MSRMiscEnable, MiscEnableFastString},
		{MSRMTRRDefType, MTRRDefEnable | MTRRTypeWB},
	}
}

// FPU reset values (struct kvm_fpu).
const (
	FCW   = 0x37f
	MXCSR = 0x1f80
)

// Local APIC register offsets and delivery modes in struct kvm_lapic_state.
const (
	APICLVT0         = 0x350
	APICLVT1         = 0x360
	APICModeExtINT   = 7
	APICModeNMI      = 4
	lvtDeliveryShift = 8
	lvtDeliveryMask  = 0x700
)

// SetLINT programs LINT0 as ExtINT and LINT1 as NMI in a KVM_GET_LAPIC
// register page (at least 0x400 bytes), the virtual-wire setup the MP table
// describes. It returns false when regs is too short.
func SetLINT(regs []byte) bool {
	if len(regs) < 0x400 {
		return false
	}
	set := func(off int, mode uint32) {
		v := binary.LittleEndian.Uint32(regs[off:])
		v = v&^lvtDeliveryMask | mode<<lvtDeliveryShift
		binary.LittleEndian.PutUint32(regs[off:], v)
	}
	set(APICLVT0, APICModeExtINT)
	set(APICLVT1, APICModeNMI)
	return true
}
