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
//     XRSTOR, FWAIT, MOVDIR64B, ENQCMD(S), ...
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
)

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
	// Leaf1ECX and Leaf7ECX are what the guest read.
	Leaf1ECX uint32 `json:"leaf1_ecx"`
	Leaf7ECX uint32 `json:"leaf7_ecx"`
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

// Emulated lists the instructions godvm's fallback (vmm/emulate) handles.
var Emulated = []string{INT3, CLAC, STAC, FWAIT, POPCNT, MOVDIR64B, ENQCMDS}

// GuestCmdline returns the kernel parameters that make a Linux guest
// compatible with this host:
//   - noxsave when XRSTOR fails (the FPU code uses it from the first
//     context switch; godvm does not emulate XSAVE state);
//   - clearcpuid=smap,popcnt,cx16,rdrand for failing instructions that have
//     a CPU feature flag the kernel can drop (CLAC/STAC belong to SMAP; cx16
//     and rdrand only when the guest's CPUID shows them);
//     godvm emulates CLAC/STAC and POPCNT too, but each emulation is a VM
//     exit and a Linux boot executes hundreds;
//   - setcpuid=movdir64b when MOVDIR64B exits to godvm (which emulates it
//     for the DSA portal) but the guest cannot be told through CPUID
//     (needs the kernel patch in images/).
func (r *Result) GuestCmdline() []string {
	var out []string
	if r.fails(XRSTOR) {
		out = append(out, "noxsave")
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
	if r.fails(CMPXCHG16B) && r.guestHas1ECX(cpuid1ECXCX16) {
		clear = append(clear, "cx16")
	}
	if r.fails(RDRAND) && r.guestHas1ECX(cpuid1ECXRDRAND) {
		clear = append(clear, "rdrand")
	}
	if len(clear) > 0 {
		out = append(out, "clearcpuid="+strings.Join(clear, ","))
	}
	if r.fails(MOVDIR64B) && !r.CPUID.GuestMOVDIR64B {
		out = append(out, "setcpuid=movdir64b")
	}
	return out
}

// guestHas1ECX reports whether the guest's CPUID leaf 1 ECX (read by the
// CPUID test) has bit; true when the test failed.
func (r *Result) guestHas1ECX(bit uint32) bool {
	return r.CPUID.Error != "" || r.CPUID.Leaf1ECX&bit != 0
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
	for _, i := range r.Instructions {
		if i.Outcome == EmulationFailure && !slices.Contains(Emulated, i.Name) {
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
