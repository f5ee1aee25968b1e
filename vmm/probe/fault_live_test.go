package probe

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"godvm/devices/bus"
	"godvm/guestmem"
	"godvm/kvm"
	"godvm/vmm/emulate"
)

// TestLiveEmulateFaults runs MOVDIR64Bs that must fault in the probe's tiny
// CPL0 guest on the real /dev/kvm, with godvm's emulator completing the
// emulation-failure exits as vmm/exits.go does: a source not present, a
// source that runs into a page not present, a destination not present, a
// read-only destination (stored with CR0.WP clear, a protection #PF once the
// guest sets WP), a source that is not canonical (#GP) or not canonical
// through RBP (#SS), a LOCK prefix and a register source (#UD). The guest's
// own handlers (faultHandler) read CR2 with MOV from CR2 and the error code
// and RIP from the exception frame, report them on port 0xf3 and the vector
// on port 0xf1, then IRETQ past the instruction (R15 holds its length), so
// one guest runs every case and ends with a MOVDIR64B that stores: the
// guest goes on after each fault.
func TestLiveEmulateFaults(t *testing.T) {
	p := newLiveProber(t)
	for _, it := range insnTests {
		if it.name == MOVDIR64B {
			if r := p.insn(it); r.Outcome != EmulationFailure {
				t.Skipf("the probe's MOVDIR64B at CPL0 ended in %s, not an emulation failure: "+
					"on this host it never reaches godvm's emulator", outcome(r))
			}
		}
	}
	p.pin(t)
	code, want := faultProgram()
	mem, err := guestmem.FromBytes(guestmem.NewRegion(0, p.mem, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	var mmio bus.Bus
	accept := &portal{base: portalAccept, accept: true}
	if err := mmio.Register(portalAccept, 0x1000, "accepting portal", accept); err != nil {
		t.Fatal(err)
	}
	emu := emulate.New(mem, &mmio)

	var trace []string
	var values []uint32
	onExit := func(cpu *kvm.VCPU, run *kvm.Run) (bool, error) {
		switch run.ExitReason() {
		case kvm.ExitInternalError:
			k, before, after, ok, err := emulationExit(emu, cpu, run)
			if !ok || err != nil {
				if err != nil {
					err = fmt.Errorf("after %q: %w", trace, err)
				}
				return false, err
			}
			trace = append(trace, fmt.Sprintf("%v at %#x, then RIP %#x", k, before, after))
			return true, nil
		case kvm.ExitIO:
			io := run.IO()
			d, err := run.IOData()
			if err != nil {
				return false, err
			}
			switch {
			case io.Port == portValue && io.Direction == kvm.IODirOut && len(d) == 4:
				values = append(values, binary.LittleEndian.Uint32(d))
				return true, nil
			case io.Port == portException && io.Direction == kvm.IODirOut && len(d) == 1:
				trace = append(trace, handlerLine(d[0], values))
				values = nil
				return true, nil
			}
		}
		return false, nil
	}
	ex, err := p.runGuest(guest{code: code, patch: patchFaults, onExit: onExit})
	if err != nil {
		t.Fatalf("guest: %v (trace so far %q)", err, trace)
	}
	t.Logf("trace:\n  %s\nstats %v", strings.Join(trace, "\n  "), &emu.Stats)
	if r := classify("fault guest", code, ex, nil); r.Outcome != Executed {
		t.Fatalf("the guest did not reach its end: %s %s (trace %q)", r.Outcome, r.Detail, trace)
	}
	if strings.Join(trace, "\n") != strings.Join(want, "\n") {
		t.Errorf("trace\n  %s\nwant\n  %s", strings.Join(trace, "\n  "), strings.Join(want, "\n  "))
	}
	checkArrivals(t, "accepting portal", accept, []arrival{
		{portalAccept + 0x40, bus.MOVDIR64B, srcFault}, // read-only, CR0.WP clear
		{portalAccept + 0xc0, bus.MOVDIR64B, srcFault}, // the last step
	}, p.mem)
	if got := emu.Stats.Count(emulate.KindFault); got != 8 {
		t.Errorf("emulate.Stats: %d faults, want 8 (%v)", got, &emu.Stats)
	}
	if got := emu.Stats.Count(emulate.KindMOVDIR64B); got != 2 {
		t.Errorf("emulate.Stats: %d MOVDIR64B, want 2 (%v)", got, &emu.Stats)
	}
}

// The fault guest's memory, on top of the probe image. faultPT maps
// 0x200000-0x3fffff by 4 KiB pages, identity except for the pages below.
const (
	faultPT       = 0x61000
	faultSrc      = 0x232000 // present: the 64-byte source
	faultNP       = 0x233000 // not present
	faultRO       = 0x234000 // -> portalAccept, read-only
	faultRW       = 0x235000 // -> portalAccept, writable
	faultHandlers = 0x4800   // the handlers for vectors 6, 12, 13 and 14, 0x40 bytes apart
	nonCanonical  = 0x8000_0000_0000_0000
)

var srcFault = pattern(0x50)

// faultHandler is the handler for vector v: it reports CR2 (low, high
// half), the error code and the faulting RIP on port 0xf3 (for #UD, which
// has no error code, only RIP), the vector on port 0xf1, then returns past
// the instruction: RIP += R15.
func faultHandler(v byte) []byte {
	report := []byte{0xb0, v, 0xe6, portException} // mov al, v; out 0xf1, al
	if v == 6 {
		b := []byte{0x48, 0x8b, 0x04, 0x24, 0xe7, portValue} // mov rax, [rsp]; out 0xf3, eax
		b = append(b, report...)
		return append(b, 0x4c, 0x01, 0x3c, 0x24, 0x48, 0xcf) // add [rsp], r15; iretq
	}
	b := []byte{
		0x0f, 0x20, 0xd0, 0xe7, portValue, // mov rax, cr2; out 0xf3, eax
		0x48, 0xc1, 0xe8, 0x20, 0xe7, portValue, // shr rax, 0x20; out 0xf3, eax
		0x48, 0x8b, 0x04, 0x24, 0xe7, portValue, // mov rax, [rsp]; out 0xf3, eax
		0x48, 0x8b, 0x44, 0x24, 0x08, 0xe7, portValue, // mov rax, [rsp+0x8]; out 0xf3, eax
	}
	b = append(b, report...)
	return append(b, 0x4c, 0x01, 0x7c, 0x24, 0x08, 0x48, 0x83, 0xc4, 0x08, 0x48, 0xcf) // add [rsp+0x8], r15; add rsp, 0x8; iretq
}

var faultVectors = []byte{6, 12, 13, 14}

// handlerLine is the trace line for one handler's report.
func handlerLine(v byte, values []uint32) string {
	switch {
	case v == 6 && len(values) == 1:
		return fmt.Sprintf("#UD at RIP %#x", values[0])
	case v != 6 && len(values) == 4:
		name := map[byte]string{12: "#SS", 13: "#GP", 14: "#PF"}[v]
		return fmt.Sprintf("%s(%#x) at RIP %#x, CR2 %#x", name, values[2], values[3], uint64(values[1])<<32|uint64(values[0]))
	}
	return fmt.Sprintf("vector %d with values %#x", v, values)
}

// patchFaults adds the 4 KiB mappings, the source and the handlers.
func patchFaults(mem []byte) {
	le := binary.LittleEndian
	le.PutUint64(mem[pdAddr+8*1:], faultPT|ptePresent|pteWrite) // PD[1]: 0x200000-0x3fffff
	for i := uint64(0); i < 512; i++ {
		le.PutUint64(mem[faultPT+8*i:], (0x200000+i<<12)|ptePresent|pteWrite)
	}
	set := func(va, pte uint64) { le.PutUint64(mem[faultPT+8*(va>>12&511):], pte) }
	set(faultNP, 0)
	set(faultRO, portalAccept|ptePresent)
	set(faultRW, portalAccept|ptePresent|pteWrite)
	copy(mem[faultSrc:], srcFault[:])
	copy(mem[faultSrc+0x1000-0x20:], srcFault[:0x20]) // the crossing source's first half
	for i, v := range faultVectors {
		h := uint64(faultHandlers + 0x40*i)
		g := idtGate(h)
		copy(mem[idtAddr+16*int(v):], g[:])
		copy(mem[h:], faultHandler(v))
	}
}

// faultCase is one step of the fault guest: registers, the instruction,
// and what the trace shows for it (%[1]x is the instruction's address).
type faultCase struct {
	rsi, rdx, rbp uint64
	insn          []byte
	want          []string
}

var (
	movdir64bRDXRSI = []byte{0x66, 0x0f, 0x38, 0xf8, 0x16}       // movdir64b rdx, [rsi]
	movdir64bRDXRBP = []byte{0x66, 0x0f, 0x38, 0xf8, 0x55, 0x00} // movdir64b rdx, [rbp+0]
	setCR0WP        = []byte{0x0f, 0x20, 0xc0, 0x0f, 0xba, 0xe8, 0x10, 0x0f, 0x22, 0xc0}
)

func faultCases() []faultCase {
	pf := func(code, cr2 uint64) []string {
		return []string{"fault at %#[1]x, then RIP %#[1]x", fmt.Sprintf("#PF(%#x) at RIP %%#[1]x, CR2 %#x", code, cr2)}
	}
	other := func(name string, cr2 uint64) []string {
		return []string{"fault at %#[1]x, then RIP %#[1]x", fmt.Sprintf("%s(0x0) at RIP %%#[1]x, CR2 %#x", name, cr2)}
	}
	ud := []string{"fault at %#[1]x, then RIP %#[1]x", "#UD at RIP %#[1]x"}
	stored := []string{"movdir64b at %#[1]x, then RIP %#[2]x"}
	return []faultCase{
		{rsi: faultNP + 0x40, rdx: faultRW, insn: movdir64bRDXRSI, want: pf(0, faultNP+0x40)},
		{rsi: faultNP - 0x20, rdx: faultRW, insn: movdir64bRDXRSI, want: pf(0, faultNP)},
		{rsi: faultSrc, rdx: faultNP + 0x40, insn: movdir64bRDXRSI, want: pf(2, faultNP+0x40)},
		{rsi: faultSrc, rdx: faultRO + 0x40, insn: movdir64bRDXRSI, want: stored}, // CR0.WP is clear
		{insn: setCR0WP},
		{rsi: faultSrc, rdx: faultRO + 0x80, insn: movdir64bRDXRSI, want: pf(3, faultRO+0x80)},
		{rsi: nonCanonical, rdx: faultRW, insn: movdir64bRDXRSI, want: other("#GP", faultRO+0x80)},
		{rbp: nonCanonical | 0x3000, rdx: faultRW, insn: movdir64bRDXRBP, want: other("#SS", faultRO+0x80)},
		{rsi: faultSrc, rdx: faultRW, insn: append([]byte{0xf0}, movdir64bRDXRSI...), want: ud},
		{rsi: faultSrc, rdx: faultRW, insn: []byte{0x66, 0x0f, 0x38, 0xf8, 0xd6}, want: ud}, // register source
		{rsi: faultSrc, rdx: faultRW + 0xc0, insn: movdir64bRDXRSI, want: stored},
	}
}

// faultProgram lays the cases out from codeAddr: mov rsi, mov rdx, mov
// rbp, mov r15d (the instruction's length), the instruction.
func faultProgram() (code []byte, want []string) {
	le := binary.LittleEndian
	for _, c := range faultCases() {
		code = append(code, 0x48, 0xbe) // mov rsi, imm64
		code = le.AppendUint64(code, c.rsi)
		code = append(code, 0x48, 0xba) // mov rdx, imm64
		code = le.AppendUint64(code, c.rdx)
		code = append(code, 0x48, 0xbd) // mov rbp, imm64
		code = le.AppendUint64(code, c.rbp)
		code = append(code, 0x41, 0xbf) // mov r15d, imm32
		code = le.AppendUint32(code, uint32(len(c.insn)))
		at := uint64(codeAddr + len(code))
		code = append(code, c.insn...)
		for _, w := range c.want {
			want = append(want, fmt.Sprintf(w, at, at+uint64(len(c.insn))))
		}
	}
	return code, want
}

// TestFaultGuestCode checks the fault guest's hand-assembled bytes (all
// but the 0f 38 f8 family, which x86asm does not know) and its page
// tables. It needs no KVM.
func TestFaultGuestCode(t *testing.T) {
	for v, want := range map[byte]string{
		6: "mov rax, qword ptr [rsp]|out 0xf3, eax|mov al, 0x6|out 0xf1, al|add qword ptr [rsp], r15|iretq",
		14: "mov rax, cr2|out 0xf3, eax|shr rax, 0x20|out 0xf3, eax|mov rax, qword ptr [rsp]|out 0xf3, eax|" +
			"mov rax, qword ptr [rsp+0x8]|out 0xf3, eax|mov al, 0xe|out 0xf1, al|add qword ptr [rsp+0x8], r15|add rsp, 0x8|iretq",
	} {
		if got := strings.Join(disasm(t, faultHandler(v)), "|"); got != want {
			t.Errorf("handler %d: %q, want %q", v, got, want)
		}
	}
	if len(faultHandler(14)) > 0x40 {
		t.Errorf("handler is %d bytes, more than its 0x40", len(faultHandler(14)))
	}
	if got, want := strings.Join(disasm(t, setCR0WP), "|"), "mov rax, cr0|bts eax, 0x10|mov cr0, rax"; got != want {
		t.Errorf("setCR0WP: %q, want %q", got, want)
	}
	code, want := faultProgram()
	if len(code) > lstarAddr-codeAddr {
		t.Errorf("program is %d bytes", len(code))
	}
	if len(want) != 18 {
		t.Errorf("%d trace lines: %q", len(want), want)
	}
	mem := make([]byte, memSize)
	writeImage(mem, false)
	patchFaults(mem)
	le := binary.LittleEndian
	pte := func(va uint64) uint64 { return le.Uint64(mem[faultPT+8*(va>>12&511):]) }
	if le.Uint64(mem[pdAddr+8:])&^0xfff != faultPT || pte(faultSrc) != faultSrc|ptePresent|pteWrite || pte(faultNP) != 0 ||
		pte(faultRO) != portalAccept|ptePresent || pte(faultRW) != portalAccept|ptePresent|pteWrite {
		t.Error("page tables")
	}
	for i, v := range faultVectors {
		g := mem[idtAddr+16*int(v):]
		if h := uint64(le.Uint16(g[0:])) | uint64(le.Uint16(g[6:]))<<16; h != uint64(faultHandlers+0x40*i) {
			t.Errorf("IDT[%d] -> %#x", v, h)
		}
	}
}
