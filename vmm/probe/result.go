// Package probe finds out what this host's KVM can do for a guest, by
// running tiny hand-assembled test guests (milliseconds each), and turns
// the answers into guest kernel parameters and warnings. It is the logic
// behind `godvm probe`; `godvm run` uses Result.GuestCmdline.
//
// Three questions are asked (see guest.go for the test guests):
//
//  1. For each instruction of interest, executed at CPL0 in long mode: does
//     it run, raise an exception in the guest, or stop the vCPU with an
//     emulation failure (KVM_EXIT_INTERNAL_ERROR, suberror
//     KVM_INTERNAL_ERROR_EMULATION)? On kvm_pvm hosts guest ring 0 runs in
//     KVM's instruction emulator, which lacks INT3, CLAC/STAC, POPCNT,
//     XRSTOR, FWAIT, MOVDIR64B, ENQCMD(S), LDMXCSR, most x87 and SSE
//     arithmetic, and the SIMD and bit-manipulation extensions. The
//     instructions fall in three groups: those godvm emulates (Emulated),
//     optional extensions a Linux guest can be told not to use
//     (Steerable: clearcpuid= names), and the x87/SSE baseline of x86-64,
//     which no parameter switches off (Baseline: what fails of it must be
//     emulated, MustEmulate). All instruction tests run in one VM.
//  2. Is KVM_SET_CPUID2 honoured? The guest runs CPUID after godvm asked for
//     MOVDIR64B (leaf 7 ECX bit 28) and for POPCNT and XSAVE to be removed.
//  3. Can guest user space make system calls? A CPL3 SYSCALL should reach
//     the CPL0 handler at LSTAR.
package probe

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Outcome is what running one test instruction did.
type Outcome string

// Outcomes.
const (
	Executed         Outcome = "executed"          // ran to the end of the test guest
	EmulationFailure Outcome = "emulation-failure" // KVM could not emulate it: godvm must, or the guest must avoid it
	Exception        Outcome = "exception"         // the guest got an exception (Vector), e.g. #UD: not available
	Shutdown         Outcome = "shutdown"          // triple fault
	Timeout          Outcome = "timeout"           // the guest did not finish in time
	OtherExit        Outcome = "other-exit"        // an unexpected exit (Detail)
	Failed           Outcome = "error"             // the probe itself failed (Detail)
)

// Instruction names used in Result.Instructions.
const (
	INT3      = "INT3"
	CLAC      = "CLAC"
	STAC      = "STAC"
	POPCNT    = "POPCNT"
	XRSTOR    = "XRSTOR"
	FWAIT     = "FWAIT"
	MOVDIR64B = "MOVDIR64B"
	// MOVDIR64BRAM is MOVDIR64B with a RAM destination (MOVDIR64B's is
	// unbacked MMIO).
	MOVDIR64BRAM = "MOVDIR64B-RAM"
	ENQCMDS      = "ENQCMDS"
	RDRAND       = "RDRAND"
	CMPXCHG16B   = "CMPXCHG16B"

	// x87 and SSE state, and baseline SSE/SSE2.
	LDMXCSR     = "LDMXCSR"
	STMXCSR     = "STMXCSR"
	FNSTCW      = "FNSTCW"
	FLDCW       = "FLDCW"
	FNINIT      = "FNINIT"
	FNSTSW      = "FNSTSW"
	FNCLEX      = "FNCLEX"
	FLD1FSTP    = "FLD1/FSTP"
	FXSAVE      = "FXSAVE"
	FXRSTOR     = "FXRSTOR"
	EMMS        = "EMMS"
	PXOR        = "PXOR"
	XORPS       = "XORPS"
	MOVDTOXMM   = "MOVD-xmm<-r32"
	MOVQFROMXMM = "MOVQ-r64<-xmm"
	PCMPEQB     = "PCMPEQB"
	PMOVMSKB    = "PMOVMSKB"
	MOVDQU      = "MOVDQU-load"
	MOVSD       = "MOVSD-load"
	CVTSI2SD    = "CVTSI2SD"
	SQRTSD      = "SQRTSD"

	// Optional extensions.
	PSHUFB     = "PSHUFB"
	PTEST      = "PTEST"
	CRC32      = "CRC32"
	PCLMULQDQ  = "PCLMULQDQ"
	AESENC     = "AESENC"
	SHA256MSG1 = "SHA256MSG1"
	ADCX       = "ADCX"
	ANDN       = "ANDN"
	SHLX       = "SHLX"
	RORX       = "RORX"
	VPXOR      = "VPXOR"
	VPXORYMM   = "VPXOR-ymm"
	VPXORD     = "VPXORD-zmm"
	RDTSCP     = "RDTSCP"
	RDPID      = "RDPID"
	CLWB       = "CLWB"
	RDFSBASE   = "RDFSBASE"
)

// Baseline are the x87/SSE/SSE2 instructions tested that every x86-64
// kernel may use (kernel_fpu_begin() runs LDMXCSR; FPU state handling
// runs FXSAVE/FXRSTOR and FNINIT): no guest parameter switches them off,
// so those that fail must be emulated (MustEmulate).
var Baseline = []string{LDMXCSR, STMXCSR, FNSTCW, FLDCW, FNINIT, FNSTSW, FNCLEX, FLD1FSTP, FXSAVE, FXRSTOR, EMMS,
	PXOR, XORPS, MOVDTOXMM, MOVQFROMXMM, PCMPEQB, PMOVMSKB, MOVDQU, MOVSD, CVTSI2SD, SQRTSD}

// cpuidBit is a CPUID feature bit as the CPUID test reads it.
type cpuidBit struct {
	leaf uint32 // 1, 7 or 0x80000001
	reg  byte   // 'b', 'c' or 'd'
	bit  uint
}

// Steerable maps each optional-extension instruction tested to the
// clearcpuid= name (as Linux 6.1 and 6.12 spell it: /proc/cpuinfo's)
// that makes the guest kernel leave its users alone, and the CPUID bit
// the kernel looks at.
var Steerable = []struct {
	Insn, Feature string
	bit           cpuidBit
}{
	{PSHUFB, "ssse3", cpuidBit{1, 'c', 9}},
	{PTEST, "sse4_1", cpuidBit{1, 'c', 19}},
	{CRC32, "sse4_2", cpuidBit{1, 'c', 20}},
	{PCLMULQDQ, "pclmulqdq", cpuidBit{1, 'c', 1}},
	{AESENC, "aes", cpuidBit{1, 'c', 25}},
	{SHA256MSG1, "sha_ni", cpuidBit{7, 'b', 29}},
	{ADCX, "adx", cpuidBit{7, 'b', 19}},
	{ANDN, "bmi1", cpuidBit{7, 'b', 3}},
	{SHLX, "bmi2", cpuidBit{7, 'b', 8}},
	{RORX, "bmi2", cpuidBit{7, 'b', 8}},
	{VPXOR, "avx", cpuidBit{1, 'c', 28}},
	{VPXORYMM, "avx2", cpuidBit{7, 'b', 5}},
	{VPXORD, "avx512f", cpuidBit{7, 'b', 16}},
	{RDTSCP, "rdtscp", cpuidBit{0x80000001, 'd', 27}},
	{RDPID, "rdpid", cpuidBit{7, 'c', 22}},
	{CLWB, "clwb", cpuidBit{7, 'b', 24}},
	{RDFSBASE, "fsgsbase", cpuidBit{7, 'b', 0}},
}

// impliedBy: clearing the key (or, for "xsave", noxsave) clears these in
// the kernel too (arch/x86/kernel/cpu/cpuid-deps.c), so GuestCmdline does
// not spell them out: the kernel reads at most 127 characters of
// clearcpuid=.
var impliedBy = map[string][]string{
	"xsave": {"avx", "avx2", "avx512f"},
	"avx":   {"avx2", "avx512f"},
}

// InsnResult is one instruction's test.
type InsnResult struct {
	Name    string  `json:"name"`
	Bytes   string  `json:"bytes"` // hex, as placed in the test guest
	Outcome Outcome `json:"outcome"`
	Vector  int     `json:"vector,omitempty"` // for Exception
	Detail  string  `json:"detail,omitempty"`
}

// CPUIDResult says whether KVM_SET_CPUID2 decides what the guest sees.
type CPUIDResult struct {
	// HostMOVDIR64B: KVM_GET_SUPPORTED_CPUID offers MOVDIR64B.
	HostMOVDIR64B bool `json:"host_movdir64b"`
	// GuestMOVDIR64B: the guest's CPUID showed MOVDIR64B after godvm set it.
	GuestMOVDIR64B bool `json:"guest_movdir64b"`
	// POPCNTRemoved / XSAVERemoved: the guest's CPUID no longer showed them
	// after godvm cleared them.
	POPCNTRemoved bool `json:"popcnt_removed"`
	XSAVERemoved  bool `json:"xsave_removed"`
	// Leaf1ECX, Leaf7ECX, Leaf7EBX and Ext1EDX (leaf 0x80000001) are
	// what the guest read.
	Leaf1ECX uint32 `json:"leaf1_ecx"`
	Leaf7ECX uint32 `json:"leaf7_ecx"`
	Leaf7EBX uint32 `json:"leaf7_ebx"`
	Ext1EDX  uint32 `json:"ext1_edx"`
	Error    string `json:"error,omitempty"`
}

// Honoured reports whether every change asked of KVM_SET_CPUID2 reached
// the guest.
func (c CPUIDResult) Honoured() bool {
	return c.Error == "" && c.GuestMOVDIR64B && c.POPCNTRemoved && c.XSAVERemoved
}

// Result is everything the probe found. It is JSON-serialisable.
type Result struct {
	APIVersion   int            `json:"api_version"`
	Capabilities map[string]int `json:"capabilities"`
	Instructions []InsnResult   `json:"instructions"`
	CPUID        CPUIDResult    `json:"cpuid"`
	// UserSpaceWorks: a SYSCALL from CPL3 reached the CPL0 handler.
	UserSpaceWorks bool `json:"user_space_works"`
	// UserSpace says what the SYSCALL test saw, in words.
	UserSpace string        `json:"user_space"`
	Elapsed   time.Duration `json:"elapsed_ns"`
}

// Insn returns the result for an instruction name.
func (r *Result) Insn(name string) (InsnResult, bool) {
	for _, i := range r.Instructions {
		if i.Name == name {
			return i, true
		}
	}
	return InsnResult{}, false
}

// fails reports whether the instruction stops the vCPU with an emulation
// failure.
func (r *Result) fails(name string) bool {
	i, ok := r.Insn(name)
	return ok && i.Outcome == EmulationFailure
}

// Emulated lists the instructions godvm's fallback (vmm/emulate) handles:
// every Baseline instruction among them, with the guest's x87/SSE state
// read and written through KVM_GET/SET_XSAVE (so MustEmulate is empty
// wherever the probe ran). vmm/emulate also executes PSHUFB (SSSE3, for
// guests booted without clearcpuid=ssse3); it is not listed here because
// godvm still steers the guest off SSSE3 where it fails: each emulated
// instruction is a VM exit, and the kernel's generic code runs faster in
// KVM's emulator than its SIMD code one exit per instruction.
var Emulated = []string{INT3, CLAC, STAC, FWAIT, POPCNT, MOVDIR64B, ENQCMDS,
	LDMXCSR, STMXCSR, FNSTCW, FLDCW, FNINIT, FNSTSW, FNCLEX, FLD1FSTP, FXSAVE, FXRSTOR, EMMS,
	PXOR, XORPS, MOVDTOXMM, MOVQFROMXMM, PCMPEQB, PMOVMSKB, MOVDQU, MOVSD, CVTSI2SD, SQRTSD}

// GuestCmdline returns the kernel parameters that make a Linux guest
// compatible with this host:
//   - noxsave when XRSTOR fails (the FPU code uses it from the first
//     context switch; godvm does not emulate XSAVE state);
//   - clearcpuid=smap,popcnt,cx16,rdrand for failing instructions that have
//     a CPU feature flag the kernel can drop (CLAC/STAC belong to SMAP; cx16
//     and rdrand only when the guest's CPUID shows them);
//     godvm emulates CLAC/STAC and POPCNT too, but each emulation is a VM
//     exit and a Linux boot executes hundreds;
//   - in the same clearcpuid=, the optional extensions (Steerable: ssse3,
//     sse4_1, sse4_2, pclmulqdq, aes, sha_ni, adx, bmi1, bmi2, avx, avx2,
//     avx512f, rdtscp, rdpid, clwb, fsgsbase) whose test instruction stops
//     the vCPU with an emulation failure, or raises #UD although the
//     guest's CPUID shows the extension, and only when the guest's CPUID
//     shows it (or the CPUID test could not tell); names the kernel clears
//     anyway with another one (avx2 with avx, the AVX family with noxsave)
//     are left out;
//   - setcpuid=movdir64b when MOVDIR64B exits to godvm (which emulates it
//     for the DSA portal) but the guest cannot be told through CPUID
//     (needs the kernel patch in images/);
//   - cryptomgr.notests where guest ring 0 runs in KVM's instruction
//     emulator (Ring0Emulated): the crypto manager's self-tests (RSA, ECDH,
//     DRBG, every built-in cipher and hash against its test vectors) only
//     check that the kernel's crypto code computes what it should on this
//     CPU, and at emulated ring-0 speed (1-2 M instructions/s) they are
//     most of a stock kernel's boot: Debian 6.1 spent 10+ minutes in them
//     (RSA first) before it reached its root mount. The parameter skips
//     them and nothing else (crypto/testmgr.c: alg_test() returns early;
//     ignored in FIPS mode, where the tests are mandatory). godvm's own
//     test kernel is built without them.
//
// What fails of the x87/SSE baseline is not here: no parameter avoids it
// (MustEmulate).
func (r *Result) GuestCmdline() []string {
	var out []string
	implied := map[string]bool{}
	if r.fails(XRSTOR) {
		out = append(out, "noxsave")
		for _, n := range impliedBy["xsave"] {
			implied[n] = true
		}
	}
	var clear []string
	if r.fails(CLAC) || r.fails(STAC) {
		clear = append(clear, "smap")
	}
	if r.fails(POPCNT) {
		clear = append(clear, "popcnt")
	}
	// CX16 and RDRAND are often hidden from the guest already (kvm_pvm
	// hides CX16); clear them only when the guest's CPUID shows them, or
	// when the CPUID test could not tell.
	if r.fails(CMPXCHG16B) && r.guestHas(cpuidBit{1, 'c', 13}) {
		clear = append(clear, "cx16")
	}
	if r.fails(RDRAND) && r.guestHas(cpuidBit{1, 'c', 30}) {
		clear = append(clear, "rdrand")
	}
	for _, st := range Steerable {
		if !r.unusable(st.Insn, st.bit) || implied[st.Feature] || slices.Contains(clear, st.Feature) {
			continue
		}
		clear = append(clear, st.Feature)
		for _, n := range impliedBy[st.Feature] {
			implied[n] = true
		}
	}
	clear = slices.DeleteFunc(clear, func(n string) bool { return implied[n] })
	if len(clear) > 0 {
		out = append(out, "clearcpuid="+strings.Join(clear, ","))
	}
	if r.fails(MOVDIR64B) && !r.CPUID.GuestMOVDIR64B {
		out = append(out, "setcpuid=movdir64b")
	}
	if r.Ring0Emulated() {
		out = append(out, "cryptomgr.notests")
	}
	return out
}

// Ring0Emulated reports whether guest ring 0 runs in KVM's instruction
// emulator (kvm_pvm): INT3 or PXOR, which every x86-64 CPU executes (INT3
// raising #BP in the guest), stopped the vCPU with an emulation failure.
// Such a guest runs its kernel at 1-2 M instructions/s.
func (r *Result) Ring0Emulated() bool {
	return r.fails(INT3) || r.fails(PXOR)
}

// unusable reports whether the guest kernel would use an optional
// extension that does not work at CPL0 here: its CPUID bit shows (or the
// CPUID test failed) and its instruction is an emulation failure or #UD.
func (r *Result) unusable(name string, bit cpuidBit) bool {
	i, ok := r.Insn(name)
	if !ok {
		return false
	}
	bad := i.Outcome == EmulationFailure || i.Outcome == Exception && i.Vector == 6
	return bad && r.guestHas(bit)
}

// guestHas reports whether the guest's CPUID (read by the CPUID test) has
// the bit; true when the test failed.
func (r *Result) guestHas(b cpuidBit) bool {
	c := r.CPUID
	if c.Error != "" {
		return true
	}
	var v uint32
	switch {
	case b.leaf == 1 && b.reg == 'c':
		v = c.Leaf1ECX
	case b.leaf == 7 && b.reg == 'b':
		v = c.Leaf7EBX
	case b.leaf == 7 && b.reg == 'c':
		v = c.Leaf7ECX
	case b.leaf == 0x80000001 && b.reg == 'd':
		v = c.Ext1EDX
	}
	return v&(1<<b.bit) != 0
}

// MustEmulate lists the baseline x87/SSE instructions (Baseline) that stop
// the vCPU with an emulation failure here and that godvm does not emulate:
// a guest kernel reaches them through kernel_fpu_begin() (LDMXCSR) and its
// FPU/SIMD code, and no guest parameter avoids them. Empty since godvm
// emulates the whole baseline (Emulated); kept for instructions added to
// Baseline before their emulation.
func (r *Result) MustEmulate() []string {
	var out []string
	for _, n := range Baseline {
		if r.fails(n) && !slices.Contains(Emulated, n) {
			out = append(out, n)
		}
	}
	return out
}

// steered reports whether name is an optional extension's instruction
// that GuestCmdline deals with (or that the guest does not see).
func steered(name string) bool {
	for _, st := range Steerable {
		if st.Insn == name {
			return true
		}
	}
	return false
}

// UserSpaceWarning is the plain-language warning for hosts where guest
// user space cannot make system calls ("" when it can).
func (r *Result) UserSpaceWarning() string {
	if r.UserSpaceWorks {
		return ""
	}
	what := r.UserSpace
	if what == "" {
		what = "the test did not complete"
	}
	return "guest user space cannot make system calls on this host (" + what + "): " +
		"only kernel code runs in the guest (built-in drivers, the in-kernel test agent); " +
		"programs from an initrd, including /init, will crash"
}

// Warnings lists what a user should know about this host.
func (r *Result) Warnings() []string {
	var w []string
	if s := r.UserSpaceWarning(); s != "" {
		w = append(w, s)
	}
	var emu []string
	for _, n := range Emulated {
		if r.fails(n) {
			emu = append(emu, n)
		}
	}
	if len(emu) > 0 {
		w = append(w, fmt.Sprintf("KVM cannot execute %s at guest CPL0 here; godvm emulates them (one VM exit each)", strings.Join(emu, ", ")))
	}
	if m := r.MustEmulate(); len(m) > 0 {
		w = append(w, fmt.Sprintf("KVM cannot execute %s at guest CPL0 here; these are x86-64's x87/SSE baseline, which no guest parameter "+
			"switches off, and godvm does not emulate them yet: a guest kernel stops at the first (kernel_fpu_begin() runs LDMXCSR)",
			strings.Join(m, ", ")))
	}
	for _, i := range r.Instructions {
		if i.Outcome == EmulationFailure && !slices.Contains(Emulated, i.Name) && !slices.Contains(Baseline, i.Name) && !steered(i.Name) {
			switch i.Name {
			case XRSTOR, CMPXCHG16B, RDRAND, MOVDIR64BRAM:
				// handled by GuestCmdline
			default:
				w = append(w, fmt.Sprintf("%s stops the guest with an emulation failure and godvm does not emulate it", i.Name))
			}
		}
	}
	if i, ok := r.Insn(MOVDIR64B); ok && i.Outcome == Exception && i.Vector == 6 {
		w = append(w, "MOVDIR64B raises #UD in the guest: a DSA's data path needs the paravirtual port here "+
			"(godvm_dsa_path=pv, understood only by godvm's patched test kernel; a stock kernel's idxd oopses at its first submission)")
	}
	if r.CPUID.Error == "" && !r.CPUID.Honoured() {
		w = append(w, "KVM_SET_CPUID2 is not fully honoured: the guest sees the host's CPUID; godvm removes features with guest kernel parameters instead")
	}
	if r.CPUID.Error != "" {
		w = append(w, "CPUID test failed: "+r.CPUID.Error)
	}
	for _, i := range r.Instructions {
		if i.Outcome == Failed || i.Outcome == Timeout || i.Outcome == OtherExit || i.Outcome == Shutdown {
			w = append(w, fmt.Sprintf("%s test: %s %s", i.Name, i.Outcome, i.Detail))
		}
	}
	return w
}
