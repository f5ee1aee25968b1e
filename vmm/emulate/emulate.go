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
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"godvm/devices/bus"
	"godvm/guestmem"
	"godvm/kvm"
)

// VCPU is what the emulator needs from a vCPU; *kvm.VCPU implements it.
type VCPU interface {
	Regs() (kvm.Regs, error)
	SetRegs(kvm.Regs) error
	Sregs() (kvm.Sregs, error)
	// Translate maps a guest-virtual (linear) address through the vCPU's
	// page tables (KVM_TRANSLATE); identity when paging is off.
	Translate(gva uint64) (kvm.Translation, error)
	// InjectException queues an exception for the next entry.
	InjectException(vector uint8, errorCode *uint32) error
	// MSRs reads MSRs (KVM_GET_MSRS); used for IA32_PASID by ENQCMD.
	MSRs(entries []kvm.MSREntry) error
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

const pageSize = 4096

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

// Exception vectors the emulator injects.
const (
	vectorBP = 3
	vectorUD = 6
	vectorGP = 13
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

// errNotMapped is a guest-virtual address KVM_TRANSLATE could not map.
var errNotMapped = errors.New("guest-virtual address not mapped")

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
	b, ferr := e.fetch(cpu, linear)
	switch {
	case len(b) == 0 && len(hint) == 0:
		return KindNone, &FetchError{RIP: regs.RIP, Linear: linear, Err: ferr}
	case len(hint) > len(b) && bytes.HasPrefix(hint, b):
		// The fetch stopped early (an unmapped next page, the end of RAM)
		// and KVM saw more of the same instruction.
		b = append([]byte(nil), hint...)
	}
	st.bytes = b
	return e.execute(st)
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
// page; it stops early at an unmapped page or at the end of RAM and returns
// what it got with the reason it stopped.
func (e *Emulator) fetch(cpu VCPU, linear uint64) ([]byte, error) {
	var out []byte
	for len(out) < maxInsnLen {
		va := linear + uint64(len(out))
		n := min(maxInsnLen-len(out), int(pageSize-va%pageSize))
		chunk, err := e.readVirt(cpu, va, n)
		if err != nil {
			return out, err
		}
		out = append(out, chunk...)
	}
	return out, nil
}

// translate maps one guest-virtual address to guest-physical.
func translate(cpu VCPU, gva uint64) (uint64, error) {
	t, err := cpu.Translate(gva)
	if err != nil {
		return 0, err
	}
	if t.Valid == 0 {
		return 0, fmt.Errorf("%w: %#x", errNotMapped, gva)
	}
	return t.PhysicalAddress, nil
}

// readVirt reads n bytes of guest RAM at a guest-virtual address, one page
// at a time (contiguous virtual pages need not be contiguous physically).
func (e *Emulator) readVirt(cpu VCPU, gva uint64, n int) ([]byte, error) {
	out := make([]byte, 0, n)
	for len(out) < n {
		va := gva + uint64(len(out))
		chunk := min(n-len(out), int(pageSize-va%pageSize))
		gpa, err := translate(cpu, va)
		if err != nil {
			return out, err
		}
		buf := make([]byte, chunk)
		if err := e.Mem.ReadAt(buf, gpa); err != nil {
			return out, fmt.Errorf("guest-virtual %#x -> guest-physical %#x: %w", va, gpa, err)
		}
		out = append(out, buf...)
	}
	return out, nil
}
