package probe

import (
	"encoding/binary"

	"godvm/kvm"
	"godvm/vmm/x86"
)

// The test guests share one small memory image, identity-mapped by 2 MiB
// pages over the first 4 GiB (so the unbacked MMIO address is mapped too):
//
//	0x01000 GDT      null, kernel code 0x08, kernel data 0x10, user code32 0x18,
//	                 user data 0x20, user code64 0x28, TSS 0x30 (16 bytes)
//	0x02000 IDT      32 interrupt gates -> the exception stubs
//	0x03000 TSS      RSP0 = tssRSP0 (for exceptions raised at CPL3)
//	0x04000 stubs    vector n: mov al, n; out 0xf1, al; hlt   (8 bytes each)
//	0x05000 PML4, 0x06000 PDPT, 0x07000-0x0afff four page directories
//	0x10000 test code (CPL0)
//	0x11000 SYSCALL handler (LSTAR): mov al, 0x5a; out 0xf2, al; hlt
//	0x12000 user code (CPL3): syscall; hlt
//	0x20000 data (64-byte aligned, zeroed: XSAVE area, CMPXCHG16B operand,
//	        MOVDIR64B source)
//	0x21000 x87/SSE operands (fpData): +0 a valid FXSAVE image (FCW 0x37f,
//	        MXCSR 0x1f80), +0x200 the dword 0x1f80 and +0x210 the word
//	        0x37f (LDMXCSR/FLDCW sources, SSE load sources), +0x400 an FXSAVE
//	        destination, +0x800 a store destination
//	0x40000 kernel stack top, 0x48000 TSS.RSP0, 0x50000 user stack top
//
// The instruction tests run one after another in one VM (run.go: batch),
// each test's code at its own 64-byte slot from codeAddr.
//
// Guest-private I/O ports report back: 0xf0 "done", 0xf1 exception vector,
// 0xf2 "SYSCALL reached CPL0", 0xf3 a 32-bit value.
const (
	memSize      = 0x400000
	gdtAddr      = 0x1000
	idtAddr      = 0x2000
	tssAddr      = 0x3000
	stubAddr     = 0x4000
	stubSize     = 8
	pml4Addr     = 0x5000
	pdptAddr     = 0x6000
	pdAddr       = 0x7000
	codeAddr     = 0x10000
	lstarAddr    = 0x11000
	userCodeAddr = 0x12000
	dataAddr     = 0x20000
	fpData       = 0x21000
	fpMXCSR      = fpData + 0x200 // dword 0x1f80
	fpFCW        = fpData + 0x210 // word 0x37f
	fpSave       = fpData + 0x400 // 512 bytes, 16-aligned
	fpStore      = fpData + 0x800
	slotSize     = 0x40 // code per test in a batch: at codeAddr + i*slotSize
	maxSlots     = (lstarAddr - codeAddr) / slotSize
	kernelStack  = 0x40000
	tssRSP0      = 0x48000
	userStack    = 0x50000
	mmioAddr     = 0xd000_0000 // no memory slot: accesses exit as MMIO

	portDone      = 0xf0
	portException = 0xf1
	portSyscall   = 0xf2
	portValue     = 0xf3

	numVectors = 32
)

// Selectors.
const (
	selKernelCode = 0x08
	selKernelData = 0x10
	selUserCode32 = 0x18
	selUserData   = 0x20
	selUserCode64 = 0x28
	selTSS        = 0x30
)

// Control-register, EFER and MSR bits beyond vmm/x86's.
const (
	cr0MP       = 1 << 1
	cr4OSFXSR   = 1 << 9
	cr4OSXMMEXC = 1 << 10
	cr4FSGSBASE = 1 << 16
	cr4OSXSAVE  = 1 << 18
	cr4SMAP     = 1 << 21

	xcr0X87    = 1 << 0
	xcr0SSE    = 1 << 1
	xcr0AVX    = 1 << 2
	xcr0AVX512 = 0xe0 // opmask, ZMM_Hi256, Hi16_ZMM
	eferSCE    = 1 << 0

	ptePresent = 1 << 0
	pteWrite   = 1 << 1
	pteUser    = 1 << 2
	pteHuge    = 1 << 7
)

// doneSeq ends a CPL0 test: mov al, 0; out 0xf0, al; hlt.
var doneSeq = []byte{0xb0, 0x00, 0xe6, portDone, 0xf4}

// gdt returns the probe GDT's descriptors (the TSS takes two slots).
func gdt() []uint64 {
	return []uint64{
		0,
		x86.GDTEntry(0xa09b, 0, 0xfffff),    // 0x08 kernel code, 64-bit
		x86.GDTEntry(0xc093, 0, 0xfffff),    // 0x10 kernel data
		x86.GDTEntry(0xc0fb, 0, 0xfffff),    // 0x18 user code, 32-bit (SYSRET layout)
		x86.GDTEntry(0xc0f3, 0, 0xfffff),    // 0x20 user data
		x86.GDTEntry(0xa0fb, 0, 0xfffff),    // 0x28 user code, 64-bit
		x86.GDTEntry(0x008b, tssAddr, 0x67), // 0x30 64-bit TSS (busy)
		0,                                   // TSS base 63:32
	}
}

// idtGate encodes a 64-bit interrupt gate (present, DPL0) to handler.
func idtGate(handler uint64) [16]byte {
	var g [16]byte
	binary.LittleEndian.PutUint16(g[0:], uint16(handler))
	binary.LittleEndian.PutUint16(g[2:], selKernelCode)
	g[4] = 0    // IST
	g[5] = 0x8e // present, DPL0, 64-bit interrupt gate
	binary.LittleEndian.PutUint16(g[6:], uint16(handler>>16))
	binary.LittleEndian.PutUint32(g[8:], uint32(handler>>32))
	return g
}

// stub is the exception handler for vector v.
func stub(v byte) []byte {
	return []byte{0xb0, v, 0xe6, portException, 0xf4, 0x90, 0x90, 0x90}
}

// writeImage lays out the shared part of a test guest in mem (zeroing it
// first). user sets the U/S bit in every page-table level, for the SYSCALL
// test; the CPL0 tests leave it clear so that SMAP never applies.
func writeImage(mem []byte, user bool) {
	clear(mem[:0x60000])
	for i, e := range gdt() {
		binary.LittleEndian.PutUint64(mem[gdtAddr+8*i:], e)
	}
	for v := 0; v < numVectors; v++ {
		g := idtGate(uint64(stubAddr + v*stubSize))
		copy(mem[idtAddr+16*v:], g[:])
		copy(mem[stubAddr+v*stubSize:], stub(byte(v)))
	}
	binary.LittleEndian.PutUint64(mem[tssAddr+4:], tssRSP0) // RSP0
	binary.LittleEndian.PutUint16(mem[tssAddr+102:], 104)   // no I/O bitmap
	var u uint64
	if user {
		u = pteUser
	}
	binary.LittleEndian.PutUint64(mem[pml4Addr:], pdptAddr|ptePresent|pteWrite|u)
	for i := 0; i < 4; i++ {
		pd := uint64(pdAddr + i*0x1000)
		binary.LittleEndian.PutUint64(mem[pdptAddr+8*i:], pd|ptePresent|pteWrite|u)
		for j := 0; j < 512; j++ {
			binary.LittleEndian.PutUint64(mem[pd+uint64(8*j):], uint64(i*512+j)<<21|ptePresent|pteWrite|pteHuge|u)
		}
	}
	copy(mem[lstarAddr:], []byte{0xb0, 0x5a, 0xe6, portSyscall, 0xf4})
	copy(mem[userCodeAddr:], []byte{0x0f, 0x05, 0xf4}) // syscall; hlt
	writeData(mem)
}

// writeData (re)sets the data pages the instruction tests read and write.
func writeData(mem []byte) {
	clear(mem[dataAddr : fpData+0x1000])
	le := binary.LittleEndian
	le.PutUint16(mem[fpData:], 0x37f)     // FXSAVE image: FCW
	le.PutUint32(mem[fpData+24:], 0x1f80) // FXSAVE image: MXCSR
	le.PutUint32(mem[fpMXCSR:], 0x1f80)
	le.PutUint16(mem[fpFCW:], 0x37f)
}

func kvmSeg(e uint64, sel uint16) kvm.Segment { return x86.SegmentFromGDT(e, sel) }

// sregs returns long-mode segment and control registers; user selects the
// CPL3 segments, cr4 adds CR4 bits (SMAP, OSXSAVE).
func sregs(base kvm.Sregs, user bool, cr4 uint64) kvm.Sregs {
	g := gdt()
	s := base
	code, data := kvmSeg(g[1], selKernelCode), kvmSeg(g[2], selKernelData)
	if user {
		code, data = kvmSeg(g[5], selUserCode64|3), kvmSeg(g[4], selUserData|3)
	}
	s.CS, s.DS, s.ES, s.FS, s.GS, s.SS = code, data, data, data, data, data
	s.TR = kvmSeg(g[6], selTSS)
	s.LDT = kvm.Segment{Type: 2, Present: 1, Unusable: 1}
	s.GDT = kvm.DTable{Base: gdtAddr, Limit: uint16(8*len(g) - 1)}
	s.IDT = kvm.DTable{Base: idtAddr, Limit: 16*numVectors - 1}
	s.CR0 = x86.CR0PE | cr0MP | x86.CR0ET | x86.CR0NE | x86.CR0PG
	s.CR3 = pml4Addr
	s.CR4 = x86.CR4PAE | cr4OSFXSR | cr4OSXMMEXC | cr4
	s.EFER = x86.EFERLME | x86.EFERLMA | eferSCE
	return s
}

// insnTest is one CPL0 instruction test: code runs at codeAddr (or its
// batch slot), followed by doneSeq, with the registers set by regs.
type insnTest struct {
	name string
	code []byte
	regs func(r *kvm.Regs)
	cr4  func(f features) uint64
	// xcr0: the test needs XCR0 with AVX (or AVX-512) state enabled; it
	// fails as a probe error where KVM_SET_XCRS did not take.
	xcr0 uint64
}

// features are host CPUID bits that decide how a test guest is set up.
type features struct {
	smap, xsave, movdir64b, fsgsbase bool
	// xcr0 is the XCR0 the batch guest gets: x87, SSE and whatever of
	// AVX and AVX-512 state KVM supports (0 without XSAVE).
	xcr0 uint64
}

// insnTests are the instructions of interest, with the exact bytes used.
var insnTests = []insnTest{
	// cc: int3. Native: #BP in the guest (vector 3). kvm_pvm: emulation failure.
	{name: INT3, code: []byte{0xcc}},
	// 0f 01 ca: clac; needs CR4.SMAP (else #UD).
	{name: CLAC, code: []byte{0x0f, 0x01, 0xca}, cr4: smapIf},
	// 0f 01 cb: stac.
	{name: STAC, code: []byte{0x0f, 0x01, 0xcb}, cr4: smapIf},
	// f3 48 0f b8 c1: popcnt rax, rcx.
	{name: POPCNT, code: []byte{0xf3, 0x48, 0x0f, 0xb8, 0xc1}, regs: func(r *kvm.Regs) { r.RCX = 0xf0f0 }},
	// 48 0f ae 2f: xrstor64 [rdi]; edx:eax = 1 (x87), rdi = a zeroed,
	// 64-byte aligned area (XSTATE_BV = 0: restore the init state);
	// needs CR4.OSXSAVE.
	{name: XRSTOR, code: []byte{0x48, 0x0f, 0xae, 0x2f}, regs: func(r *kvm.Regs) { r.RAX, r.RDX, r.RDI = 1, 0, dataAddr },
		cr4: func(f features) uint64 {
			if f.xsave {
				return cr4OSXSAVE
			}
			return 0
		}},
	// 9b: fwait.
	{name: FWAIT, code: []byte{0x9b}},
	// 66 0f 38 f8 07: movdir64b rax, [rdi]; rax = an unbacked MMIO address.
	{name: MOVDIR64B, code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x07}, regs: func(r *kvm.Regs) { r.RAX, r.RDI = mmioAddr, dataAddr }},
	// The same MOVDIR64B aimed at RAM (rax = the data page + 2 KiB): where
	// the CPU executes the instruction (Intel with MOVDIR64B under
	// kvm_intel) this one runs without an exit, while the MMIO one above
	// still exits; where KVM's emulator runs guest ring 0 (kvm_pvm) both
	// are emulation failures, whatever the host CPU has. This is what
	// tells the native DSA path from the emulated one (dsapath.go).
	{name: MOVDIR64BRAM, code: []byte{0x66, 0x0f, 0x38, 0xf8, 0x07}, regs: func(r *kvm.Regs) { r.RAX, r.RDI = dataAddr+0x800, dataAddr }},
	// f3 0f 38 f8 07: enqcmds rax, [rdi].
	{name: ENQCMDS, code: []byte{0xf3, 0x0f, 0x38, 0xf8, 0x07}, regs: func(r *kvm.Regs) { r.RAX, r.RDI = mmioAddr, dataAddr }},
	// 0f c7 f0: rdrand eax.
	{name: RDRAND, code: []byte{0x0f, 0xc7, 0xf0}},
	// f0 48 0f c7 0f: lock cmpxchg16b [rdi]; rdi 16-byte aligned.
	{name: CMPXCHG16B, code: []byte{0xf0, 0x48, 0x0f, 0xc7, 0x0f}, regs: func(r *kvm.Regs) { r.RDI = dataAddr }},

	// The x87/SSE state and baseline SSE/SSE2 instructions (Baseline in
	// result.go: an x86-64 kernel cannot be told not to use them).
	// kernel_fpu_begin() runs LDMXCSR (and FNINIT for x87 users).
	{name: LDMXCSR, code: []byte{0x0f, 0xae, 0x17}, regs: rdi(fpMXCSR)},        // ldmxcsr [rdi]
	{name: STMXCSR, code: []byte{0x0f, 0xae, 0x1f}, regs: rdi(fpStore)},        // stmxcsr [rdi]
	{name: FNSTCW, code: []byte{0xd9, 0x3f}, regs: rdi(fpStore)},               // fnstcw [rdi]
	{name: FLDCW, code: []byte{0xd9, 0x2f}, regs: rdi(fpFCW)},                  // fldcw [rdi]
	{name: FNINIT, code: []byte{0xdb, 0xe3}},                                   // fninit
	{name: FNSTSW, code: []byte{0xdf, 0xe0}},                                   // fnstsw ax
	{name: FNCLEX, code: []byte{0xdb, 0xe2}},                                   // fnclex
	{name: FLD1FSTP, code: []byte{0xd9, 0xe8, 0xdd, 0x1f}, regs: rdi(fpStore)}, // fld1; fstp qword [rdi]
	{name: FXSAVE, code: []byte{0x0f, 0xae, 0x07}, regs: rdi(fpSave)},          // fxsave [rdi]
	{name: FXRSTOR, code: []byte{0x0f, 0xae, 0x0f}, regs: rdi(fpData)},         // fxrstor [rdi]
	{name: EMMS, code: []byte{0x0f, 0x77}},                                     // emms
	{name: PXOR, code: []byte{0x66, 0x0f, 0xef, 0xc1}},                         // pxor xmm0, xmm1
	{name: XORPS, code: []byte{0x0f, 0x57, 0xc1}},                              // xorps xmm0, xmm1
	{name: MOVDTOXMM, code: []byte{0x66, 0x0f, 0x6e, 0xc0}},                    // movd xmm0, eax
	{name: MOVQFROMXMM, code: []byte{0x66, 0x48, 0x0f, 0x7e, 0xc0}},            // movq rax, xmm0
	{name: PCMPEQB, code: []byte{0x66, 0x0f, 0x74, 0xc1}},                      // pcmpeqb xmm0, xmm1
	{name: PMOVMSKB, code: []byte{0x66, 0x0f, 0xd7, 0xc0}},                     // pmovmskb eax, xmm0
	{name: MOVDQU, code: []byte{0xf3, 0x0f, 0x6f, 0x07}, regs: rdi(fpMXCSR)},   // movdqu xmm0, [rdi]
	{name: MOVSD, code: []byte{0xf2, 0x0f, 0x10, 0x07}, regs: rdi(fpMXCSR)},    // movsd xmm0, qword [rdi]
	{name: CVTSI2SD, code: []byte{0xf2, 0x48, 0x0f, 0x2a, 0xc0}},               // cvtsi2sd xmm0, rax
	{name: SQRTSD, code: []byte{0xf2, 0x0f, 0x51, 0xc1}},                       // sqrtsd xmm0, xmm1

	// Optional extensions (Steerable in result.go: clearcpuid= names
	// that switch the kernel's users of each off).
	{name: PSHUFB, code: []byte{0x66, 0x0f, 0x38, 0x00, 0xc1}},                                         // pshufb xmm0, xmm1 (SSSE3)
	{name: PTEST, code: []byte{0x66, 0x0f, 0x38, 0x17, 0xc1}},                                          // ptest xmm0, xmm1 (SSE4.1)
	{name: CRC32, code: []byte{0xf2, 0x0f, 0x38, 0xf1, 0xc1}},                                          // crc32 eax, ecx (SSE4.2)
	{name: PCLMULQDQ, code: []byte{0x66, 0x0f, 0x3a, 0x44, 0xc1, 0x00}},                                // pclmulqdq xmm0, xmm1, 0
	{name: AESENC, code: []byte{0x66, 0x0f, 0x38, 0xdc, 0xc1}},                                         // aesenc xmm0, xmm1
	{name: SHA256MSG1, code: []byte{0x0f, 0x38, 0xcc, 0xc1}},                                           // sha256msg1 xmm0, xmm1 (SHA-NI)
	{name: ADCX, code: []byte{0x66, 0x48, 0x0f, 0x38, 0xf6, 0xc1}},                                     // adcx rax, rcx (ADX)
	{name: ANDN, code: []byte{0xc4, 0xe2, 0xe0, 0xf2, 0xc1}},                                           // andn rax, rbx, rcx (BMI1, VEX)
	{name: SHLX, code: []byte{0xc4, 0xe2, 0xe1, 0xf7, 0xc1}},                                           // shlx rax, rcx, rbx (BMI2, VEX)
	{name: RORX, code: []byte{0xc4, 0xe3, 0xfb, 0xf0, 0xc1, 0x03}},                                     // rorx rax, rcx, 3 (BMI2, VEX)
	{name: VPXOR, code: []byte{0xc5, 0xf9, 0xef, 0xc1}, cr4: osxsaveIf, xcr0: xcr0AVX},                 // vpxor xmm0, xmm0, xmm1 (AVX)
	{name: VPXORYMM, code: []byte{0xc5, 0xfd, 0xef, 0xc1}, cr4: osxsaveIf, xcr0: xcr0AVX},              // vpxor ymm0, ymm0, ymm1 (AVX2)
	{name: VPXORD, code: []byte{0x62, 0xf1, 0x7d, 0x48, 0xef, 0xc1}, cr4: osxsaveIf, xcr0: xcr0AVX512}, // vpxord zmm0, zmm0, zmm1 (AVX-512F)
	{name: RDTSCP, code: []byte{0x0f, 0x01, 0xf9}},                                                     // rdtscp
	{name: RDPID, code: []byte{0xf3, 0x0f, 0xc7, 0xf8}},                                                // rdpid rax
	{name: CLWB, code: []byte{0x66, 0x0f, 0xae, 0x37}, regs: rdi(fpData)},                              // clwb [rdi]
	{name: RDFSBASE, code: []byte{0xf3, 0x48, 0x0f, 0xae, 0xc0}, // rdfsbase rax; needs CR4.FSGSBASE
		cr4: func(f features) uint64 {
			if f.fsgsbase {
				return cr4FSGSBASE
			}
			return 0
		}},
}

// rdi points RDI at addr.
func rdi(addr uint64) func(*kvm.Regs) { return func(r *kvm.Regs) { r.RDI = addr } }

func smapIf(f features) uint64 {
	if f.smap {
		return cr4SMAP
	}
	return 0
}

// osxsaveIf enables XSAVE-managed state (and so VEX/EVEX instructions,
// with XCR0) where the host has XSAVE.
func osxsaveIf(f features) uint64 {
	if f.xsave {
		return cr4OSXSAVE
	}
	return 0
}

// cpuidCode reads CPUID leaf 7 ECX, leaf 1 ECX, leaf 7 EBX and leaf
// 0x80000001 EDX and reports them on port 0xf3, in that order:
//
//	b8 07 00 00 00  mov eax, 7
//	31 c9           xor ecx, ecx
//	0f a2           cpuid
//	89 c8           mov eax, ecx
//	e7 f3           out 0xf3, eax
//	b8 01 00 00 00  mov eax, 1
//	31 c9           xor ecx, ecx
//	0f a2           cpuid
//	89 c8           mov eax, ecx
//	e7 f3           out 0xf3, eax
//	b8 07 00 00 00  mov eax, 7
//	31 c9           xor ecx, ecx
//	0f a2           cpuid
//	89 d8           mov eax, ebx
//	e7 f3           out 0xf3, eax
//	b8 01 00 00 80  mov eax, 0x80000001
//	31 c9           xor ecx, ecx
//	0f a2           cpuid
//	89 d0           mov eax, edx
//	e7 f3           out 0xf3, eax
//	(doneSeq)
var cpuidCode = []byte{
	0xb8, 0x07, 0x00, 0x00, 0x00, 0x31, 0xc9, 0x0f, 0xa2, 0x89, 0xc8, 0xe7, portValue,
	0xb8, 0x01, 0x00, 0x00, 0x00, 0x31, 0xc9, 0x0f, 0xa2, 0x89, 0xc8, 0xe7, portValue,
	0xb8, 0x07, 0x00, 0x00, 0x00, 0x31, 0xc9, 0x0f, 0xa2, 0x89, 0xd8, 0xe7, portValue,
	0xb8, 0x01, 0x00, 0x00, 0x80, 0x31, 0xc9, 0x0f, 0xa2, 0x89, 0xd0, 0xe7, portValue,
}

// cpuidValues is how many values cpuidCode reports.
const cpuidValues = 4

// CPUID bits.
const (
	cpuid1ECXCX16       = 1 << 13
	cpuid1ECXPOPCNT     = 1 << 23
	cpuid1ECXRDRAND     = 1 << 30
	cpuid1ECXXSAVE      = 1 << 26
	cpuid7EBXSMAP       = 1 << 20
	cpuid7EBXFSGSBASE   = 1 << 0
	cpuid7ECXMOVDIR64B  = 1 << 28
	msrSTAR             = 0xc0000081
	msrLSTAR            = 0xc0000082
	msrSFMASK           = 0xc0000084
	sfmaskIF            = 1 << 9
	starKernelUserShift = 32
)

// syscallMSRs point SYSCALL at the handler: STAR[47:32] = kernel CS
// (SS = +8), STAR[63:48] = user base (SYSRET CS = +16, SS = +8).
func syscallMSRs() []kvm.MSREntry {
	star := uint64(selUserCode32|3)<<48 | uint64(selKernelCode)<<starKernelUserShift
	return []kvm.MSREntry{{Index: msrSTAR, Data: star}, {Index: msrLSTAR, Data: lstarAddr}, {Index: msrSFMASK, Data: sfmaskIF}}
}

// editCPUID returns a copy of the supported table with MOVDIR64B added and
// POPCNT and XSAVE removed (the CPUID test's request).
func editCPUID(sup []kvm.CPUIDEntry2) []kvm.CPUIDEntry2 {
	out := append([]kvm.CPUIDEntry2(nil), sup...)
	has7 := false
	for i := range out {
		e := &out[i]
		switch {
		case e.Function == 1:
			e.ECX &^= cpuid1ECXPOPCNT | cpuid1ECXXSAVE
		case e.Function == 7 && e.Index == 0:
			e.ECX |= cpuid7ECXMOVDIR64B
			has7 = true
		}
	}
	if !has7 {
		out = append(out, kvm.CPUIDEntry2{Function: 7, Flags: kvm.CPUIDFlagSignificantIndex, ECX: cpuid7ECXMOVDIR64B})
	}
	return out
}

// hostFeatures reads the bits that shape the tests from the supported table.
func hostFeatures(sup []kvm.CPUIDEntry2) features {
	var f features
	for _, e := range sup {
		switch {
		case e.Function == 1:
			f.xsave = e.ECX&cpuid1ECXXSAVE != 0
		case e.Function == 7 && e.Index == 0:
			f.smap = e.EBX&cpuid7EBXSMAP != 0
			f.fsgsbase = e.EBX&cpuid7EBXFSGSBASE != 0
			f.movdir64b = e.ECX&cpuid7ECXMOVDIR64B != 0
		case e.Function == 0xd && e.Index == 0:
			f.xcr0 = uint64(e.EAX)
		}
	}
	// XCR0: x87 and SSE always; AVX, and the three AVX-512 components
	// together (KVM refuses them apart), where supported.
	if !f.xsave {
		f.xcr0 = 0
	} else {
		sup := f.xcr0
		f.xcr0 = xcr0X87 | xcr0SSE | sup&xcr0AVX
		if sup&xcr0AVX != 0 && sup&xcr0AVX512 == xcr0AVX512 {
			f.xcr0 |= xcr0AVX512
		}
	}
	return f
}
