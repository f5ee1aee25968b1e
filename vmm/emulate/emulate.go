// Package emulate is godvm's userspace fallback for the instructions KVM's
// own emulator cannot execute (KVM_EXIT_INTERNAL_ERROR with suberror
// KVM_INTERNAL_ERROR_EMULATION). On kvm_pvm hosts all guest ring-0 code runs
// in KVM's emulator, and a Linux guest meets these during every boot; on
// Intel hosts with MOVDIR64B, a MOVDIR64B aimed at an emulated MMIO portal
// exits the same way.
//
// What is emulated, and why:
//
//   - INT3 (cc): int3_selftest(), kprobes, jump labels. RIP += 1, then #BP
//     (vector 3) is injected as a software exception with
//     KVM_SET_VCPU_EVENTS; the guest's handler runs and IRETs back.
//   - CLAC / STAC (0f 01 ca / cb): every user access with SMAP on. Clear or
//     set RFLAGS.AC, RIP += 3.
//   - FWAIT (9b): fpu__drop() in 6.12. Skipped: no x87 exception can be
//     pending in a kernel that never used x87.
//   - POPCNT (f3 [rex] 0f b8 /r): hweight via alternatives. Register and
//     memory sources, 16/32/64-bit; flags as the SDM says.
//   - MOVDIR64B / ENQCMD / ENQCMDS (66 / f2 / f3 0f 38 f8 /r): idxd work
//     submission. The 64-byte source is read from guest memory and handed to
//     the MMIO device at the destination with bus.Write64B; ENQCMD(S) set
//     ZF when the device answers "retry". (Hosts whose guests cannot execute
//     them at all use the paravirtual port below instead.)
//   - x87 and SSE (fpu.go, x87.go, sse.go, float.go): LDMXCSR, which
//     kernel_fpu_begin() runs, and everything a kernel's FPU and SIMD code
//     may reach of the x86-64 baseline that KVM's emulator lacks: the x87
//     control and state instructions (FNINIT, FNCLEX, FLDCW/FNSTCW,
//     FNSTSW, FNSTENV/FLDENV, FNSAVE/FRSTOR, FXSAVE/FXRSTOR, EMMS, FWAIT),
//     x87 loads and stores (FLD, FILD, FST(P), FLD1, FLDZ, FXCH, ...), the
//     SSE/SSE2 moves, bitwise, integer, shuffle and packing operations,
//     CVTSI2SS/SD, SQRTSS/SD, and SSSE3's PSHUFB. The guest's x87/SSE state
//     is read and written with KVM_GET/SET_XSAVE; results are computed on
//     integers (rounding as FCW.RC/MXCSR.RC say) and checked bit for bit
//     against the host CPU (native_test.go). FWAIT raises a pending #MF.
//
// What the CPU would refuse is the guest's fault, not godvm's: the emulator
// injects the exception and the vCPU goes on into the guest's handler (Kind
// KindFault), with RIP on the instruction. #UD for a LOCK prefix, a
// register operand where MOVDIR64B/ENQCMD(S) need memory, CLAC/STAC at
// CPL > 0, an SSE instruction with CR0.EM set or CR4.OSFXSR clear; #NM for
// x87/SSE with CR0.TS set (x87: or CR0.EM); #MF for a waiting x87
// instruction while an unmasked exception is pending; #XM (#UD without
// CR4.OSXMMEXCPT) for an unmasked SIMD floating-point exception, MXCSR's
// flags set and the destination unchanged; #GP(0) for a misaligned 16-byte
// SSE operand or FXSAVE area, LDMXCSR or FXRSTOR of an MXCSR with reserved
// bits, and for an address that is not canonical (#SS(0) when it
// references SS: an rSP/rBP base), a misaligned 64-byte destination,
// ENQCMDS at CPL > 0, ENQCMD without a valid IA32_PASID, or more than 15
// bytes; #PF for a fetch, source or destination the guest's page tables do
// not allow, with the SDM's error code (P, W/R, U/S, RSVD, I/D) and CR2 the
// faulting linear address. Memory operands are translated by walking the
// guest's page tables (walk.go: KVM_TRANSLATE cannot tell a read-only or a
// supervisor page from a good one).
//
// Everything else is an *UnhandledError carrying RIP, the bytes, the
// disassembly and a hint (usually a guest kernel parameter that avoids the
// instruction). Decoding uses golang.org/x/arch/x86/x86asm; see wide.go for
// how the 0f 38 f8 family, which x86asm does not know, is decoded.
//
// # The paravirtual 64-byte store (port 0xf6)
//
// Where the guest's CPU cannot execute MOVDIR64B/ENQCMDS at all (#UD in the
// guest, no exit: AMD, older Intel, nested kvm_amd), godvm's patched test
// kernel, booted with godvm_dsa_path=pv, hands each 64-byte store to godvm
// through an I/O port instead (images/kernel/patches/, movdir64b() and
// enqcmds()). This is the protocol's one written definition; PV64B (pv.go)
// is the host side.
//
// The request is a 4-byte IN (inl) from port 0xf6 (layout.PortPV64B) with:
//
//	EAX  kind: 1 = MOVDIR64B, 2 = ENQCMDS (PVKindMOVDIR64B, PVKindENQCMDS)
//	RSI  guest-physical address of the 64-byte source; the 64 bytes must
//	     lie inside one 4 KiB page and be guest RAM
//	RDI  guest-physical address of the destination (the DSA portal)
//
// godvm reads the registers (KVM_GET_REGS) and answers with the IN's data,
// which KVM loads into EAX (PVStatus):
//
//	0  stored (MOVDIR64B) / accepted (ENQCMDS)
//	1  retry: ENQCMDS only, the device did not accept it (ZF=1 for the
//	   real instruction)
//	2  bad request: unknown kind, ENQCMDS from CPL > 0, or an access to
//	   the port that is not a single 4-byte IN (OUT, 1- or 2-byte IN, string
//	   I/O); a narrower IN gets the low bytes of 2
//	3  destination not 64-byte aligned
//	4  destination does not take 64-byte stores (RAM, unmapped, or an MMIO
//	   device that does not implement bus.Wide64): nothing is written
//	5  source not entirely in guest RAM, or crossing a 4 KiB page
//
// The checks are made in that order; the first that fails is the answer.
// A store that is accepted goes through exactly the seam the emulated
// instruction uses: the same 64 bytes (ENQCMDS's first dword masked to the
// PASID, bits 19:0, and the privilege bit 31) reach the device at RDI with
// bus.Write64B, so a passthrough or vfio-user portal (trapped or mapped as a
// memory slot; its BAR stays on the MMIO bus) gets it exactly as it gets an
// emulated MOVDIR64B. The guest kernel turns statuses 2 and up into an oops,
// as the real instruction's #GP would be; godvm logs the first refusal of
// each status and counts them all. Stats counts paravirtual stores apart
// from emulated instructions (pv-movdir64b, pv-enqcmds, pv-retry,
// pv-refused), so a paravirtual run never reads as the real instruction.
package emulate

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync/atomic"

	"godvm/addr"
	"godvm/devices/bus"
	"godvm/guestmem"
	"godvm/kvm"
)

// VCPU is what the emulator needs from a vCPU; *kvm.VCPU implements it.
type VCPU interface {
	Regs() (kvm.Regs, error)
	SetRegs(kvm.Regs) error
	Sregs() (kvm.Sregs, error)
	// SetSregs writes the special registers back; the emulator uses it
	// only to load CR2 before injecting a #PF.
	SetSregs(kvm.Sregs) error
	// InjectException queues an exception for the next entry.
	InjectException(vector uint8, errorCode *uint32) error
	// MSRs reads MSRs (KVM_GET_MSRS); used for IA32_PASID by ENQCMD.
	MSRs(entries []kvm.MSREntry) error
	// XSave and SetXSave read and write the x87/SSE state
	// (KVM_GET_XSAVE, KVM_SET_XSAVE; fpu.go says why not KVM_GET_FPU).
	XSave() (*kvm.XSave, error)
	SetXSave(*kvm.XSave) error
}

var _ VCPU = (*kvm.VCPU)(nil)

// Emulator emulates one instruction at a time. Its fields are shared by all
// vCPUs; Emulate may be called concurrently.
type Emulator struct {
	Mem   *guestmem.Memory
	MMIO  *bus.Bus
	Stats Stats
	// Log receives the paravirtual port's refusals (the first of each
	// status); nil means slog.Default().
	Log *slog.Logger

	pvWarned [numPVStatus]atomic.Bool
}

// New returns an emulator over guest memory and the MMIO bus.
func New(mem *guestmem.Memory, mmio *bus.Bus) *Emulator {
	return &Emulator{Mem: mem, MMIO: mmio}
}

// maxInsnLen is the architectural limit on an x86 instruction's length.
const maxInsnLen = 15

const pageSize = addr.PageSize

// RFLAGS bits.
const (
	flagCF = 1 << 0
	flagPF = 1 << 2
	flagAF = 1 << 4
	flagZF = 1 << 6
	flagSF = 1 << 7
	flagOF = 1 << 11
	flagAC = 1 << 18

	arithFlags = flagCF | flagPF | flagAF | flagZF | flagSF | flagOF
)

// UnhandledError is an instruction the emulator cannot (or will not)
// execute. Its message has everything needed to act on it.
type UnhandledError struct {
	RIP    uint64 // guest RIP of the instruction
	Bytes  []byte // the bytes fetched at CS:RIP (up to 15)
	Disasm string // Intel syntax, or why x86asm could not decode it
	Reason string // what went wrong
	Hint   string // what to do about it (a guest parameter, usually)
}

func (e *UnhandledError) Error() string {
	msg := fmt.Sprintf("emulate: %s at RIP %#x: bytes [% x] (%s)", e.Reason, e.RIP, e.Bytes, e.Disasm)
	if e.Hint != "" {
		msg += "; hint: " + e.Hint
	}
	return msg
}

// FetchError means the instruction bytes could not be read: RIP is not
// mapped, or maps outside guest RAM.
type FetchError struct {
	RIP    uint64
	Linear uint64
	Err    error
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("emulate: cannot fetch the instruction at RIP %#x (linear %#x): %v", e.RIP, e.Linear, e.Err)
}

func (e *FetchError) Unwrap() error { return e.Err }

// Emulate executes the instruction at the vCPU's CS:RIP and updates the
// vCPU. hint, if not nil, holds the instruction bytes KVM reported with
// KVM_CAP_EXIT_ON_EMULATION_FAILURE; they are used when the fetch fails
// (the guest's own bytes are preferred otherwise). It returns what it did;
// a nil error means the vCPU may run again.
func (e *Emulator) Emulate(cpu VCPU, hint []byte) (Kind, error) {
	k, err := e.emulate(cpu, hint)
	if err != nil {
		e.Stats.failed.Add(1)
		return KindNone, err
	}
	e.Stats.add(k)
	return k, nil
}

// state is one emulation's snapshot of the vCPU.
type state struct {
	cpu    VCPU
	regs   kvm.Regs
	sregs  kvm.Sregs
	mode   int // 16, 32 or 64
	bytes  []byte
	length int // the instruction's length once decoded, else 0
	// fetchFault is the #PF that stopped the fetch short of 15 bytes, if
	// one did: raised when the instruction turns out to need more bytes.
	fetchFault *guestFault
	// fp is the x87/SSE state, read when an instruction first needs it.
	fp *fpuState
}

func (e *Emulator) emulate(cpu VCPU, hint []byte) (Kind, error) {
	regs, err := cpu.Regs()
	if err != nil {
		return KindNone, fmt.Errorf("emulate: %w", err)
	}
	sregs, err := cpu.Sregs()
	if err != nil {
		return KindNone, fmt.Errorf("emulate: %w", err)
	}
	st := &state{cpu: cpu, regs: regs, sregs: sregs, mode: cpuMode(&sregs)}
	linear := st.linearRIP()
	b, ferr := e.fetch(st, linear)
	pf, _ := ferr.(*guestFault)
	switch {
	case len(b) == 0 && len(hint) == 0:
		if pf != nil {
			// Nothing at RIP can be fetched and KVM reported no bytes:
			// the fetch faults, as it would on the CPU.
			return st.raise(pf)
		}
		return KindNone, &FetchError{RIP: regs.RIP, Linear: linear, Err: ferr}
	case len(hint) > len(b) && bytes.HasPrefix(hint, b):
		// The fetch stopped early (an unmapped next page, the end of RAM)
		// and KVM saw more of the same instruction.
		b = append([]byte(nil), hint...)
		pf = nil
	}
	st.bytes, st.fetchFault = b, pf
	k, err := e.execute(st)
	if gf, ok := err.(*guestFault); ok {
		return st.raise(gf)
	}
	return k, err
}

// raise injects a guest fault instead of executing the instruction: RIP
// stays on it, as for any fault. A #PF's linear address goes to CR2 first
// (KVM_SET_SREGS): KVM_SET_VCPU_EVENTS delivers an injected exception as
// it stands and loads CR2 itself only for a pending exception with a
// payload, which needs KVM_CAP_EXCEPTION_PAYLOAD enabled on the VM and
// changes what KVM_GET_VCPU_EVENTS reports for every vCPU; godvm does not
// enable it, and writing CR2 first works on every host.
func (st *state) raise(f *guestFault) (Kind, error) {
	if f.keepFPU {
		// An unmasked SIMD exception sets its MXCSR flags before #XM.
		if err := st.commitFPU(); err != nil {
			return KindNone, err
		}
	}
	if f.vector == vectorPF {
		s := st.sregs
		s.CR2 = f.addr
		if err := st.cpu.SetSregs(s); err != nil {
			return KindNone, fmt.Errorf("emulate: setting CR2 for %v at RIP %#x: %w", f, st.regs.RIP, err)
		}
	}
	var code *uint32
	if f.hasCode {
		c := f.code
		code = &c
	}
	if err := st.cpu.InjectException(f.vector, code); err != nil {
		return KindNone, fmt.Errorf("emulate: injecting %v at RIP %#x: %w", f, st.regs.RIP, err)
	}
	return KindFault, nil
}

// cpuMode derives the code size from CR0.PE, EFER.LMA and CS.L/CS.DB.
func cpuMode(s *kvm.Sregs) int {
	const cr0PE = 1
	const eferLMA = 1 << 10
	switch {
	case s.CR0&cr0PE == 0:
		return 16
	case s.EFER&eferLMA != 0 && s.CS.L != 0:
		return 64
	case s.CS.DB != 0:
		return 32
	}
	return 16
}

func (st *state) linearRIP() uint64 {
	switch st.mode {
	case 64:
		return st.regs.RIP
	case 32:
		return uint64(uint32(st.sregs.CS.Base + uint64(uint32(st.regs.RIP))))
	}
	return uint64(uint32(st.sregs.CS.Base + uint64(uint16(st.regs.RIP))))
}

// advance moves RIP past n bytes, wrapping as the code size does.
func (st *state) advance(n int) {
	rip := st.regs.RIP + uint64(n)
	switch st.mode {
	case 32:
		rip = uint64(uint32(rip))
	case 16:
		rip = uint64(uint16(rip))
	}
	st.regs.RIP = rip
}

// cpl is the current privilege level (CS.RPL; SS.DPL agrees outside
// transitions).
func (st *state) cpl() int {
	if st.mode == 16 && st.sregs.CR0&1 == 0 {
		return 0
	}
	return int(st.sregs.CS.Selector & 3)
}

// fetch reads up to 15 instruction bytes at a linear address, page by
// page; it stops early at a page that faults or at the end of RAM and
// returns what it got with the reason it stopped.
func (e *Emulator) fetch(st *state, linear uint64) ([]byte, error) {
	var out []byte
	for len(out) < maxInsnLen {
		va := st.wrapLinear(linear + uint64(len(out)))
		n := min(maxInsnLen-len(out), int(pageSize-va%pageSize))
		chunk, err := e.readVirt(st, va, n, access{fetch: true})
		out = append(out, chunk...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// wrapLinear wraps a linear address at 4 GiB outside 64-bit mode.
func (st *state) wrapLinear(lin uint64) uint64 {
	if st.mode != 64 {
		return uint64(uint32(lin))
	}
	return lin
}

// readVirt reads n bytes of guest RAM at a linear address, one page at a
// time (contiguous linear pages need not be contiguous physically). It
// stops at the first page that faults (a *guestFault whose CR2 is the
// first byte of the access in that page) or is not guest RAM, returning
// what it read before.
func (e *Emulator) readVirt(st *state, lin uint64, n int, acc access) ([]byte, error) {
	out := make([]byte, 0, n)
	for len(out) < n {
		va := st.wrapLinear(lin + uint64(len(out)))
		chunk := min(n-len(out), int(pageSize-va%pageSize))
		gpa, err := e.translate(st, va, acc)
		if err != nil {
			return out, err
		}
		buf := make([]byte, chunk)
		if err := e.Mem.ReadAt(buf, gpa); err != nil {
			return out, fmt.Errorf("linear %#x -> guest-physical %#x: %w", va, gpa, err)
		}
		out = append(out, buf...)
	}
	return out, nil
}
