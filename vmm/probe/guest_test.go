package probe

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"godvm/kvm"
	"godvm/vmm/x86"
)

// disasm decodes a run of 64-bit code into Intel syntax, one per line.
func disasm(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for len(b) > 0 {
		inst, err := x86asm.Decode(b, 64)
		if err != nil {
			t.Fatalf("decode % x: %v", b, err)
		}
		out = append(out, x86asm.IntelSyntax(inst, 0, nil))
		b = b[inst.Len:]
	}
	return out
}

// TestHandAssembledCode checks every hand-assembled byte sequence against
// what its comment says, using x86asm.
func TestHandAssembledCode(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"done", doneSeq, "mov al, 0x0|out 0xf0, al|hlt"},
		{"stub 14", stub(14)[:5], "mov al, 0xe|out 0xf1, al|hlt"},
		// x86asm writes 0x80000001 as the signed -0x7fffffff.
		{"cpuid", cpuidCode, "mov eax, 0x7|xor ecx, ecx|cpuid|mov eax, ecx|out 0xf3, eax|mov eax, 0x1|xor ecx, ecx|cpuid|mov eax, ecx|out 0xf3, eax|" +
			"mov eax, 0x7|xor ecx, ecx|cpuid|mov eax, ebx|out 0xf3, eax|mov eax, -0x7fffffff|xor ecx, ecx|cpuid|mov eax, edx|out 0xf3, eax"},
	}
	for _, c := range cases {
		if got := strings.Join(disasm(t, c.b), "|"); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	want := map[string]string{
		INT3: "int3", POPCNT: "popcnt rax, rcx", XRSTOR: "xrstor64 ptr [rdi]", FWAIT: "fwait",
		RDRAND: "rdrand eax", CMPXCHG16B: "lock cmpxchg16b xmmword ptr [rdi]",
		LDMXCSR: "ldmxcsr dword ptr [rdi]", STMXCSR: "stmxcsr dword ptr [rdi]", FNSTCW: "fnstcw word ptr [rdi]",
		FLDCW: "fldcw word ptr [rdi]", FNINIT: "fninit", FNSTSW: "fnstsw ax", FNCLEX: "fnclex",
		FLD1FSTP: "fld1 st0|fstp qword ptr [rdi], st0", FXSAVE: "fxsave ptr [rdi]", FXRSTOR: "fxrstor ptr [rdi]", EMMS: "emms",
		PXOR: "pxor xmm0, xmm1", XORPS: "xorps xmm0, xmm1", MOVDTOXMM: "movd xmm0, eax", MOVQFROMXMM: "movq rax, xmm0",
		PCMPEQB: "pcmpeqb xmm0, xmm1", PMOVMSKB: "pmovmskb eax, xmm0", MOVDQU: "movdqu xmm0, xmmword ptr [rdi]",
		MOVSD: "movsd xmm0, qword ptr [rdi]", CVTSI2SD: "cvtsi2sd xmm0, rax", SQRTSD: "sqrtsd xmm0, xmm1",
		PSHUFB: "pshufb xmm0, xmm1", PTEST: "ptest xmm0, xmm1", CRC32: "crc32 eax, ecx", PCLMULQDQ: "pclmulqdq xmm0, xmm1, 0x0",
		AESENC: "aesenc xmm0, xmm1", SHA256MSG1: "sha256msg1 xmm0, xmm1", ANDN: "andn rax, rbx, rcx", SHLX: "shlx rax, rcx, rbx",
		RORX: "rorx rax, rcx, 0x3", VPXOR: "vpxor xmm0, xmm0, xmm1", VPXORYMM: "vpxor ymm0, ymm0, ymm1",
		VPXORD: "vpxord zmm0, zmm0, zmm1", RDTSCP: "rdtscp", RDFSBASE: "rdfsbase rax",
	}
	for _, it := range insnTests {
		if w, ok := want[it.name]; ok {
			if got := strings.Join(disasm(t, it.code), "|"); got != w {
				t.Errorf("%s: %q, want %q", it.name, got, w)
			}
		}
	}
	// x86asm does not know CLAC/STAC/MOVDIR64B/ENQCMDS/ADCX/RDPID and
	// takes CLWB for XSAVEOPT; their bytes are the SDM's (and GNU as
	// 2.40's for "adcx rax, rcx", "rdpid rax", "clwb [rdi]").
	raw := map[string]string{CLAC: "0f01ca", STAC: "0f01cb", MOVDIR64B: "660f38f807", MOVDIR64BRAM: "660f38f807", ENQCMDS: "f30f38f807",
		ADCX: "66480f38f6c1", RDPID: "f30fc7f8", CLWB: "660fae37"}
	for _, it := range insnTests {
		w, ok := raw[it.name]
		if ok {
			if got := hex.EncodeToString(it.code); got != w {
				t.Errorf("%s bytes %s, want %s", it.name, got, w)
			}
		}
		if _, checked := want[it.name]; !checked && !ok {
			t.Errorf("%s: bytes not checked", it.name)
		}
		if len(it.code)+len(doneSeq) > slotSize {
			t.Errorf("%s: %d bytes do not fit a batch slot", it.name, len(it.code))
		}
	}
	if got := strings.Join(disasm(t, []byte{0xb0, 0x5a, 0xe6, portSyscall, 0xf4}), "|"); got != "mov al, 0x5a|out 0xf2, al|hlt" {
		t.Errorf("lstar handler %q", got)
	}
	if len(insnTests) != 49 || len(insnTests) > maxSlots {
		t.Errorf("%d instruction tests, want 49 (room for %d)", len(insnTests), maxSlots)
	}
	// Every test is classified: GuestCmdline's tables know each name.
	seen := map[string]bool{}
	for _, it := range insnTests {
		if seen[it.name] {
			t.Errorf("%s tested twice", it.name)
		}
		seen[it.name] = true
		if !slices.Contains(Baseline, it.name) && !steered(it.name) && !slices.Contains(Emulated, it.name) &&
			!slices.Contains([]string{XRSTOR, MOVDIR64BRAM, RDRAND, CMPXCHG16B}, it.name) {
			t.Errorf("%s is in no class", it.name)
		}
	}
	for _, n := range Baseline {
		if !seen[n] {
			t.Errorf("Baseline %s is not tested", n)
		}
	}
	for _, st := range Steerable {
		if !seen[st.Insn] {
			t.Errorf("Steerable %s is not tested", st.Insn)
		}
	}
}

func TestImage(t *testing.T) {
	mem := make([]byte, memSize)
	for _, user := range []bool{false, true} {
		writeImage(mem, user)
		le := binary.LittleEndian
		// Page tables: identity, 2 MiB pages, U/S only for the user test.
		walk := func(va uint64) (uint64, uint64) {
			e4 := le.Uint64(mem[pml4Addr+8*(va>>39&511):])
			e3 := le.Uint64(mem[e4&^0xfff+8*(va>>30&511):])
			e2 := le.Uint64(mem[e3&^0xfff+8*(va>>21&511):])
			return e2&^0x1fffff | va&0x1fffff, e4 & e3 & e2
		}
		for _, va := range []uint64{codeAddr, lstarAddr, dataAddr, mmioAddr, 0xffff_f000} {
			pa, flags := walk(va)
			if pa != va || flags&ptePresent == 0 || flags&pteWrite == 0 {
				t.Errorf("user=%v: %#x -> %#x flags %#x", user, va, pa, flags)
			}
			if (flags&pteUser != 0) != user {
				t.Errorf("user=%v: %#x U/S=%v", user, va, flags&pteUser != 0)
			}
		}
		// IDT gate 14 -> stub 14, kernel CS, present interrupt gate.
		g := mem[idtAddr+16*14:]
		off := uint64(le.Uint16(g[0:])) | uint64(le.Uint16(g[6:]))<<16 | uint64(le.Uint32(g[8:]))<<32
		if off != stubAddr+14*stubSize || le.Uint16(g[2:]) != selKernelCode || g[5] != 0x8e {
			t.Errorf("gate 14: % x", g[:16])
		}
		if mem[off+1] != 14 {
			t.Errorf("stub 14 reports %d", mem[off+1])
		}
		if le.Uint64(mem[tssAddr+4:]) != tssRSP0 {
			t.Error("TSS.RSP0")
		}
		if string(mem[userCodeAddr:userCodeAddr+2]) != "\x0f\x05" {
			t.Error("user code is not syscall")
		}
		// x87/SSE operands: a valid FXSAVE image, MXCSR and FCW values.
		if le.Uint16(mem[fpData:]) != 0x37f || le.Uint32(mem[fpData+24:]) != 0x1f80 ||
			le.Uint32(mem[fpMXCSR:]) != 0x1f80 || le.Uint16(mem[fpFCW:]) != 0x37f || mem[dataAddr] != 0 || fpSave%16 != 0 {
			t.Error("x87/SSE operands")
		}
	}
}

func TestSregs(t *testing.T) {
	k := sregs(kvm.Sregs{APICBase: 0xfee00900}, false, cr4SMAP)
	if k.CS.Selector != 0x08 || k.CS.L != 1 || k.CS.DPL != 0 || k.CS.Type != 0xb || k.SS.Selector != 0x10 || k.SS.DB != 1 {
		t.Errorf("kernel segments %+v %+v", k.CS, k.SS)
	}
	if k.TR.Base != tssAddr || k.TR.Type != 0xb || k.TR.S != 0 || k.TR.Limit != 0x67 {
		t.Errorf("TR %+v", k.TR)
	}
	if k.CR4&cr4SMAP == 0 || k.CR4&x86.CR4PAE == 0 || k.CR0&x86.CR0PG == 0 || k.EFER != 0x501 || k.CR3 != pml4Addr {
		t.Errorf("control registers %#x %#x %#x", k.CR0, k.CR4, k.EFER)
	}
	if k.APICBase != 0xfee00900 {
		t.Error("APIC base not kept from KVM's sregs")
	}
	u := sregs(kvm.Sregs{}, true, 0)
	if u.CS.Selector != 0x2b || u.CS.DPL != 3 || u.CS.L != 1 || u.SS.Selector != 0x23 || u.SS.DPL != 3 {
		t.Errorf("user segments %+v %+v", u.CS, u.SS)
	}
	// SYSCALL loads CS = STAR[47:32] = 0x08, SS = 0x10; SYSRET CS = 0x18+16.
	m := syscallMSRs()
	star := m[0].Data
	if m[0].Index != msrSTAR || star>>32&0xffff != selKernelCode || (star>>48&0xfffc)+16 != selUserCode64 || m[1].Data != lstarAddr {
		t.Errorf("MSRs %+v", m)
	}
}

func TestEditCPUID(t *testing.T) {
	sup := []kvm.CPUIDEntry2{{Function: 1, ECX: cpuid1ECXPOPCNT | cpuid1ECXXSAVE | 1}, {Function: 7, Index: 0, EBX: cpuid7EBXSMAP}, {Function: 7, Index: 1}}
	f := hostFeatures(sup)
	if !f.xsave || !f.smap || f.movdir64b || f.fsgsbase || f.xcr0 != xcr0X87|xcr0SSE {
		t.Errorf("features %+v", f)
	}
	e := editCPUID(sup)
	if e[0].ECX != 1 || e[1].ECX != cpuid7ECXMOVDIR64B || e[2].ECX != 0 || sup[0].ECX == 1 {
		t.Errorf("edited %+v (original changed: %v)", e, sup[0].ECX == 1)
	}
	e = editCPUID([]kvm.CPUIDEntry2{{Function: 1}})
	if len(e) != 2 || e[1].Function != 7 || e[1].ECX != cpuid7ECXMOVDIR64B {
		t.Errorf("leaf 7 not added: %+v", e)
	}
}

// TestHostFeaturesXCR0: the batch guest's XCR0 takes what KVM supports
// of AVX and AVX-512 state (the latter only whole), and nothing without
// XSAVE.
func TestHostFeaturesXCR0(t *testing.T) {
	leaves := func(xsave bool, d uint32) []kvm.CPUIDEntry2 {
		var ecx uint32
		if xsave {
			ecx = cpuid1ECXXSAVE
		}
		return []kvm.CPUIDEntry2{{Function: 1, ECX: ecx}, {Function: 7, EBX: cpuid7EBXFSGSBASE}, {Function: 0xd, EAX: d}}
	}
	for _, c := range []struct {
		xsave bool
		sup   uint32
		want  uint64
	}{
		{true, 0x2e7, 0xe7}, // x87 SSE AVX opmask ZMM_Hi256 Hi16_ZMM PKRU
		{true, 0x7, 0x7},
		{true, 0x67, 0x7}, // AVX-512 state incomplete: left out
		{true, 0x3, 0x3},
		{false, 0xe7, 0},
	} {
		f := hostFeatures(leaves(c.xsave, c.sup))
		if f.xcr0 != c.want || !f.fsgsbase {
			t.Errorf("xsave=%v supported %#x: xcr0 %#x, want %#x", c.xsave, c.sup, f.xcr0, c.want)
		}
	}
}

func TestClassify(t *testing.T) {
	code := []byte{0xcc}
	frame := make([]byte, 48)
	binary.LittleEndian.PutUint64(frame[0:], 5)       // error code
	binary.LittleEndian.PutUint64(frame[8:], 0x11000) // RIP
	binary.LittleEndian.PutUint64(frame[16:], 0x2b)   // CS
	cases := []struct {
		name string
		ex   *exit
		err  error
		want Outcome
		vec  int
		det  string
	}{
		{"done", &exit{reason: kvm.ExitIO, io: kvm.IOExit{Port: portDone}, data: []byte{0}}, nil, Executed, 0, ""},
		{"#BP", &exit{reason: kvm.ExitIO, io: kvm.IOExit{Port: portException}, data: []byte{3}, frame: frame}, nil, Exception, 3, "#BP at RIP 0x5"},
		{"#PF", &exit{reason: kvm.ExitIO, io: kvm.IOExit{Port: portException}, data: []byte{14}, frame: frame, sregs: kvm.Sregs{CR2: 0x11000}}, nil,
			Exception, 14, "#PF at RIP 0x11000, CS 0x2b, error code 0x5, CR2 0x11000"},
		{"emulation failure", &exit{reason: kvm.ExitInternalError, ie: kvm.InternalError{Suberror: 1, InsnBytes: []byte{0xcc}}, regs: kvm.Regs{RIP: codeAddr}}, nil,
			EmulationFailure, 0, "RIP 0x10000, KVM saw bytes cc"},
		{"emulation failure elsewhere", &exit{reason: kvm.ExitInternalError, ie: kvm.InternalError{Suberror: 1}, regs: kvm.Regs{RIP: 0x4000}}, nil,
			EmulationFailure, 0, "not at the test instruction"},
		{"other internal error", &exit{reason: kvm.ExitInternalError, ie: kvm.InternalError{Suberror: 3}}, nil, OtherExit, 0, "suberror 3"},
		{"shutdown", &exit{reason: kvm.ExitShutdown}, nil, Shutdown, 0, ""},
		{"fail entry", &exit{reason: kvm.ExitFailEntry, fail: 0x21}, nil, OtherExit, 0, "hardware reason 0x21"},
		{"mmio", &exit{reason: kvm.ExitMMIO, regs: kvm.Regs{RIP: codeAddr}}, nil, OtherExit, 0, "KVM_EXIT_MMIO at RIP 0x10000"},
		{"timeout", &exit{timed: true}, nil, Timeout, 0, ""},
		{"error", nil, errors.New("KVM_CREATE_VCPU: too many open files"), Failed, 0, "too many open files"},
	}
	for _, c := range cases {
		r := classify("T", code, c.ex, c.err)
		if r.Outcome != c.want || r.Vector != c.vec || !strings.Contains(r.Detail, c.det) || r.Bytes != "cc" {
			t.Errorf("%s: %+v", c.name, r)
		}
	}
	// In a batch, the test instruction is at its slot.
	ex := &exit{reason: kvm.ExitInternalError, ie: kvm.InternalError{Suberror: 1}, regs: kvm.Regs{RIP: slotAddr(3)}}
	if r := classifyAt("T", code, slotAddr(3), ex, nil); r.Detail != "RIP 0x100c0" {
		t.Errorf("slot 3: %q", r.Detail)
	}
	if r := classifyAt("T", code, slotAddr(2), ex, nil); !strings.Contains(r.Detail, "not at the test instruction, 0x10080") {
		t.Errorf("slot 2: %q", r.Detail)
	}
}

func TestJudgeSyscall(t *testing.T) {
	frame := make([]byte, 48)
	binary.LittleEndian.PutUint64(frame[0:], 5)
	binary.LittleEndian.PutUint64(frame[8:], lstarAddr)
	binary.LittleEndian.PutUint64(frame[16:], 0x2b)
	cases := []struct {
		ex   *exit
		err  error
		ok   bool
		text string
	}{
		{&exit{reason: kvm.ExitIO, io: kvm.IOExit{Port: portSyscall}}, nil, true, "reached the CPL0 handler"},
		{&exit{reason: kvm.ExitIO, io: kvm.IOExit{Port: portException}, data: []byte{14}, frame: frame}, nil, false, "ended in #PF at RIP 0x11000, CS 0x2b"},
		{&exit{reason: kvm.ExitShutdown}, nil, false, "triple fault"},
		{&exit{timed: true}, nil, false, "timed out"},
		{&exit{reason: kvm.ExitHLT}, nil, false, "KVM_EXIT_HLT"},
		{nil, errors.New("x"), false, "could not run: x"},
	}
	for i, c := range cases {
		ok, text := judgeSyscall(c.ex, c.err)
		if ok != c.ok || !strings.Contains(text, c.text) {
			t.Errorf("case %d: %v %q", i, ok, text)
		}
	}
}

// TestLiveProbe runs the real probe when /dev/kvm exists.
func TestLiveProbe(t *testing.T) {
	if _, err := os.Stat(kvm.DevicePath); errors.Is(err, os.ErrNotExist) {
		t.Skip("/dev/kvm absent on this host: skipping the live probe")
	}
	r, err := Run(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probe took %v; cmdline %q; warnings %q", r.Elapsed, r.GuestCmdline(), r.Warnings())
	for _, i := range r.Instructions {
		t.Logf("%-10s %-18s %s", i.Name, i.Outcome, i.Detail)
		if i.Outcome == Failed || i.Outcome == Timeout {
			t.Errorf("%s: %s %s", i.Name, i.Outcome, i.Detail)
		}
	}
	if r.CPUID.Error != "" {
		t.Errorf("CPUID: %s", r.CPUID.Error)
	}
	if len(r.Instructions) != len(insnTests) {
		t.Errorf("%d results", len(r.Instructions))
	}
	// The batch gives each test what a VM of its own gives it.
	p := newLiveProber(t)
	for i, it := range insnTests {
		one := p.insn(it)
		b := r.Instructions[i]
		if one.Outcome != b.Outcome || one.Vector != b.Vector {
			t.Errorf("%s: alone %s %s, in the batch %s %s", it.name, one.Outcome, one.Detail, b.Outcome, b.Detail)
		}
	}
	t.Logf("must emulate: %q", r.MustEmulate())
}
