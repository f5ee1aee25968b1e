package probe

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// pvmHost is what host-kvm.md measured on kvm_pvm.
func pvmHost() *Result {
	r := &Result{UserSpace: "SYSCALL from CPL3 ended in #PF at RIP 0x11000, CS 0x2b, error code 0x5, CR2 0x11000"}
	for _, n := range []string{INT3, CLAC, STAC, POPCNT, XRSTOR, FWAIT, MOVDIR64B, ENQCMDS, CMPXCHG16B} {
		r.Instructions = append(r.Instructions, InsnResult{Name: n, Outcome: EmulationFailure})
	}
	r.Instructions = append(r.Instructions, InsnResult{Name: MOVDIR64BRAM, Outcome: EmulationFailure},
		InsnResult{Name: RDRAND, Outcome: Executed})
	r.CPUID = CPUIDResult{POPCNTRemoved: false, XSAVERemoved: false, GuestMOVDIR64B: false}
	return r
}

// intelKVM is a normal kvm_intel host with MOVDIR64B (Sapphire Rapids).
func intelKVM() *Result {
	r := &Result{UserSpaceWorks: true, UserSpace: "SYSCALL from CPL3 reached the CPL0 handler"}
	for _, n := range []string{CLAC, STAC, POPCNT, XRSTOR, FWAIT, RDRAND, CMPXCHG16B} {
		r.Instructions = append(r.Instructions, InsnResult{Name: n, Outcome: Executed})
	}
	r.Instructions = append(r.Instructions,
		InsnResult{Name: INT3, Outcome: Exception, Vector: 3},
		InsnResult{Name: MOVDIR64B, Outcome: EmulationFailure}, // to unbacked MMIO
		InsnResult{Name: MOVDIR64BRAM, Outcome: Executed},
		InsnResult{Name: ENQCMDS, Outcome: Exception, Vector: 6})
	r.CPUID = CPUIDResult{HostMOVDIR64B: true, GuestMOVDIR64B: true, POPCNTRemoved: true, XSAVERemoved: true}
	return r
}

// amdKVM is kvm_amd: no MOVDIR64B at all.
func amdKVM() *Result {
	r := intelKVM()
	for i := range r.Instructions {
		if n := r.Instructions[i].Name; n == MOVDIR64B || n == MOVDIR64BRAM {
			r.Instructions[i] = InsnResult{Name: n, Outcome: Exception, Vector: 6}
		}
	}
	r.CPUID.HostMOVDIR64B, r.CPUID.GuestMOVDIR64B = false, true
	return r
}

func TestGuestCmdline(t *testing.T) {
	cases := []struct {
		name string
		r    *Result
		want []string
	}{
		{"kvm_pvm", pvmHost(), []string{"noxsave", "clearcpuid=smap,popcnt", "setcpuid=movdir64b", "cryptomgr.notests"}},
		{"cx16 shown to the guest and failing", func() *Result {
			r := pvmHost()
			r.CPUID.Leaf1ECX = cpuid1ECXCX16
			return r
		}(), []string{"noxsave", "clearcpuid=smap,popcnt,cx16", "setcpuid=movdir64b", "cryptomgr.notests"}},
		{"kvm_intel with MOVDIR64B", intelKVM(), nil},
		{"kvm_amd", amdKVM(), nil},
		{"empty result", &Result{}, nil},
		{"only STAC fails", &Result{Instructions: []InsnResult{{Name: STAC, Outcome: EmulationFailure}}}, []string{"clearcpuid=smap"}},
		{"rdrand fails, guest sees it", &Result{Instructions: []InsnResult{{Name: RDRAND, Outcome: EmulationFailure}},
			CPUID: CPUIDResult{Leaf1ECX: cpuid1ECXRDRAND}}, []string{"clearcpuid=rdrand"}},
		{"rdrand fails, CPUID test failed", &Result{Instructions: []InsnResult{{Name: RDRAND, Outcome: EmulationFailure}},
			CPUID: CPUIDResult{Error: "x"}}, []string{"clearcpuid=rdrand"}},
		{"rdrand fails, hidden from the guest", &Result{Instructions: []InsnResult{{Name: RDRAND, Outcome: EmulationFailure}}}, nil},
		{"movdir64b emulated but CPUID can carry it", &Result{
			Instructions: []InsnResult{{Name: MOVDIR64B, Outcome: EmulationFailure}},
			CPUID:        CPUIDResult{GuestMOVDIR64B: true}}, nil},
		{"movdir64b #UD: no setcpuid", &Result{
			Instructions: []InsnResult{{Name: MOVDIR64B, Outcome: Exception, Vector: 6}}}, nil},
		{"xrstor exception is not a failure", &Result{
			Instructions: []InsnResult{{Name: XRSTOR, Outcome: Exception, Vector: 6}}}, nil},
		{"only int3 and fwait fail: emulated, nothing to clear; ring 0 emulated", &Result{
			Instructions: []InsnResult{{Name: INT3, Outcome: EmulationFailure}, {Name: FWAIT, Outcome: EmulationFailure}}},
			[]string{"cryptomgr.notests"}},
		{"only fwait fails: ring 0 not emulated", &Result{
			Instructions: []InsnResult{{Name: FWAIT, Outcome: EmulationFailure}, {Name: INT3, Outcome: Exception, Vector: 3}}}, nil},
	}
	for _, c := range cases {
		if got := c.r.GuestCmdline(); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: GuestCmdline() = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestWarnings(t *testing.T) {
	cases := []struct {
		name    string
		r       *Result
		want    []string // substrings, each in some warning
		notWant []string
	}{
		{"kvm_pvm", pvmHost(),
			[]string{"guest user space cannot make system calls on this host (SYSCALL from CPL3 ended in #PF",
				"only kernel code runs in the guest",
				"godvm emulates them", "INT3, CLAC, STAC, FWAIT, POPCNT, MOVDIR64B, ENQCMDS",
				"KVM_SET_CPUID2 is not fully honoured"},
			[]string{"does not emulate", "#UD"}},
		{"kvm_intel", intelKVM(), []string{"MOVDIR64B"}, []string{"user space", "CPUID"}},
		{"kvm_amd", amdKVM(), []string{"MOVDIR64B raises #UD", "godvm_dsa_path=pv"}, []string{"user space"}},
		{"unknown failure", &Result{UserSpaceWorks: true, CPUID: CPUIDResult{GuestMOVDIR64B: true, POPCNTRemoved: true, XSAVERemoved: true},
			Instructions: []InsnResult{{Name: "XYZ", Outcome: EmulationFailure}, {Name: RDRAND, Outcome: Timeout}}},
			[]string{"XYZ stops the guest with an emulation failure and godvm does not emulate it", "RDRAND test: timeout"}, nil},
		{"cpuid test error", &Result{UserSpaceWorks: true, CPUID: CPUIDResult{Error: "boom"}},
			[]string{"CPUID test failed: boom"}, []string{"not fully honoured"}},
		{"healthy", &Result{UserSpaceWorks: true, CPUID: CPUIDResult{GuestMOVDIR64B: true, POPCNTRemoved: true, XSAVERemoved: true}}, nil,
			[]string{""}},
	}
	for _, c := range cases {
		ws := c.r.Warnings()
		all := strings.Join(ws, "\n")
		for _, w := range c.want {
			if !strings.Contains(all, w) {
				t.Errorf("%s: warnings lack %q:\n%s", c.name, w, all)
			}
		}
		for _, w := range c.notWant {
			if w == "" && len(ws) != 0 {
				t.Errorf("%s: want no warnings, got %q", c.name, ws)
			} else if w != "" && strings.Contains(all, w) {
				t.Errorf("%s: warnings contain %q:\n%s", c.name, w, all)
			}
		}
	}
}

func TestUserSpaceWarning(t *testing.T) {
	if w := (&Result{UserSpaceWorks: true}).UserSpaceWarning(); w != "" {
		t.Errorf("working host warned: %q", w)
	}
	if w := (&Result{}).UserSpaceWarning(); !strings.Contains(w, "the test did not complete") {
		t.Errorf("%q", w)
	}
}

func TestResultJSON(t *testing.T) {
	r := pvmHost()
	r.Capabilities = map[string]int{"IRQ_ROUTING": 4096}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, r) {
		t.Errorf("round trip:\n%+v\n%+v", back, *r)
	}
	for _, k := range []string{`"user_space_works":false`, `"outcome":"emulation-failure"`, `"guest_movdir64b":false`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON lacks %s: %s", k, b)
		}
	}
	if !reflect.DeepEqual(back.GuestCmdline(), r.GuestCmdline()) {
		t.Error("cmdline changed through JSON")
	}
}

func TestCPUIDHonoured(t *testing.T) {
	if !(CPUIDResult{GuestMOVDIR64B: true, POPCNTRemoved: true, XSAVERemoved: true}).Honoured() {
		t.Error("all honoured")
	}
	if (CPUIDResult{GuestMOVDIR64B: true, POPCNTRemoved: true}).Honoured() {
		t.Error("xsave not removed")
	}
	if (CPUIDResult{GuestMOVDIR64B: true, POPCNTRemoved: true, XSAVERemoved: true, Error: "x"}).Honoured() {
		t.Error("error")
	}
}

func TestWriteText(t *testing.T) {
	var b strings.Builder
	r := pvmHost()
	r.APIVersion = 12
	r.Capabilities = map[string]int{"IRQ_ROUTING": 4096, "IRQCHIP": 1}
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"KVM API version 12", "capabilities: IRQCHIP=1 IRQ_ROUTING=4096",
		"  XRSTOR", "emulation-failure",
		"KVM_SET_CPUID2: honoured=false",
		"guest user space: works=false (SYSCALL from CPL3 ended in #PF",
		"guest kernel parameters godvm adds: noxsave clearcpuid=smap,popcnt setcpuid=movdir64b",
		"warning: guest user space cannot make system calls",
		"DSA data path: emulated (every guest MOVDIR64B, to RAM as to MMIO, stops the vCPU with an emulation failure, as on kvm_pvm",
		"with a DSA (--dsa, --vfio-user, --vfio), godvm also adds: godvm_dsa_path=emulated\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	(&Result{UserSpaceWorks: true, CPUID: CPUIDResult{Error: "x"}}).WriteText(&b)
	if !strings.Contains(b.String(), "adds: none") || !strings.Contains(b.String(), "test failed: x") {
		t.Errorf("%s", b.String())
	}
}

// insns builds instruction results: every name given fails with an
// emulation failure.
func insns(fail ...string) []InsnResult {
	var out []InsnResult
	for _, n := range fail {
		out = append(out, InsnResult{Name: n, Outcome: EmulationFailure})
	}
	return out
}

// pvmHostMeasured is what the extended probe measured on a kvm_pvm host
// (2026-11-27): the baseline x87/SSE mostly fails, every optional
// extension's instruction fails but RDPID (#UD) and RDFSBASE; the guest's
// CPUID shows the extensions of an AMD Zen 4 but RDTSCP and RDPID.
func pvmHostMeasured() *Result {
	r := pvmHost()
	r.Instructions = append(r.Instructions, insns(LDMXCSR, STMXCSR, FLDCW, FNSTSW, FNCLEX, FLD1FSTP, EMMS, PXOR, XORPS,
		MOVDTOXMM, MOVQFROMXMM, PCMPEQB, PMOVMSKB, MOVSD, CVTSI2SD, SQRTSD,
		PSHUFB, PTEST, CRC32, PCLMULQDQ, AESENC, SHA256MSG1, ADCX, ANDN, SHLX, RORX, VPXOR, VPXORYMM, VPXORD, RDTSCP, CLWB)...)
	for _, n := range []string{FNSTCW, FNINIT, FXSAVE, FXRSTOR, MOVDQU, RDFSBASE} {
		r.Instructions = append(r.Instructions, InsnResult{Name: n, Outcome: Executed})
	}
	r.Instructions = append(r.Instructions, InsnResult{Name: RDPID, Outcome: Exception, Vector: 6})
	r.CPUID.Leaf1ECX = 1<<9 | 1<<19 | 1<<20 | 1<<1 | 1<<25 | 1<<28 | cpuid1ECXCX16
	r.CPUID.Leaf7EBX = 1<<29 | 1<<19 | 1<<3 | 1<<8 | 1<<5 | 1<<16 | 1<<24 | 1<<0
	return r
}

func TestGuestCmdlineSteering(t *testing.T) {
	all := func() *Result { // every optional extension fails and shows
		r := &Result{CPUID: CPUIDResult{Leaf1ECX: ^uint32(0), Leaf7EBX: ^uint32(0), Leaf7ECX: ^uint32(0), Ext1EDX: ^uint32(0)}}
		for _, st := range Steerable {
			r.Instructions = append(r.Instructions, InsnResult{Name: st.Insn, Outcome: EmulationFailure})
		}
		return r
	}
	cases := []struct {
		name string
		r    *Result
		want []string
	}{
		{"kvm_pvm as measured", pvmHostMeasured(), []string{"noxsave",
			"clearcpuid=smap,popcnt,cx16,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,adx,bmi1,bmi2,clwb", "setcpuid=movdir64b", "cryptomgr.notests"}},
		{"fails but the guest does not see it", &Result{Instructions: insns(PSHUFB, RDTSCP, CLWB),
			CPUID: CPUIDResult{Leaf1ECX: 0, Leaf7EBX: 0}}, nil},
		{"fails and the guest sees it", &Result{Instructions: insns(PSHUFB, RDTSCP, CLWB),
			CPUID: CPUIDResult{Leaf1ECX: 1 << 9, Ext1EDX: 1 << 27, Leaf7EBX: 1 << 24}}, []string{"clearcpuid=ssse3,rdtscp,clwb"}},
		{"CPUID test failed: clear what fails", &Result{Instructions: insns(CRC32, RDPID), CPUID: CPUIDResult{Error: "x"}},
			[]string{"clearcpuid=sse4_2,rdpid"}},
		{"#UD although the guest sees it", &Result{Instructions: []InsnResult{{Name: RDPID, Outcome: Exception, Vector: 6}},
			CPUID: CPUIDResult{Leaf7ECX: 1 << 22}}, []string{"clearcpuid=rdpid"}},
		{"#GP is not a missing extension", &Result{Instructions: []InsnResult{{Name: RDPID, Outcome: Exception, Vector: 13}},
			CPUID: CPUIDResult{Leaf7ECX: 1 << 22}}, nil},
		{"executes: nothing to clear", &Result{Instructions: []InsnResult{{Name: AESENC, Outcome: Executed}},
			CPUID: CPUIDResult{Leaf1ECX: 1 << 25}}, nil},
		{"SHLX and RORX: bmi2 once", &Result{Instructions: insns(SHLX, RORX), CPUID: CPUIDResult{Leaf7EBX: 1 << 8}},
			[]string{"clearcpuid=bmi2"}},
		{"avx clears avx2 and avx512f in the kernel", &Result{Instructions: insns(VPXOR, VPXORYMM, VPXORD),
			CPUID: CPUIDResult{Leaf1ECX: 1 << 28, Leaf7EBX: 1<<5 | 1<<16}}, []string{"clearcpuid=avx"}},
		{"avx2 alone", &Result{Instructions: append(insns(VPXORYMM), InsnResult{Name: VPXOR, Outcome: Executed}),
			CPUID: CPUIDResult{Leaf1ECX: 1 << 28, Leaf7EBX: 1 << 5}}, []string{"clearcpuid=avx2"}},
		{"noxsave clears the AVX family", &Result{Instructions: insns(XRSTOR, VPXOR, VPXORYMM, ANDN),
			CPUID: CPUIDResult{Leaf1ECX: 1 << 28, Leaf7EBX: 1<<5 | 1<<3}}, []string{"noxsave", "clearcpuid=bmi1"}},
		{"baseline failures: ring 0 emulated", &Result{Instructions: insns(LDMXCSR, PXOR, FLDCW)}, []string{"cryptomgr.notests"}},
		{"baseline failures without PXOR add nothing", &Result{Instructions: insns(LDMXCSR, FLDCW)}, nil},
		{"everything fails and shows", all(), []string{
			"clearcpuid=ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,adx,bmi1,bmi2,avx,rdtscp,rdpid,clwb,fsgsbase"}},
	}
	for _, c := range cases {
		if got := c.r.GuestCmdline(); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: GuestCmdline() = %q, want %q", c.name, got, c.want)
		}
	}
	// The kernel reads at most 127 characters of clearcpuid= (a 128-byte
	// buffer in cpu_parse_early_param()): the worst case fits, with every
	// failure this package can steer.
	worst := all()
	worst.Instructions = append(worst.Instructions, insns(CLAC, POPCNT, CMPXCHG16B, RDRAND)...)
	for _, p := range worst.GuestCmdline() {
		if v, ok := strings.CutPrefix(p, "clearcpuid="); ok && len(v) > 127 {
			t.Errorf("clearcpuid= is %d characters: %s", len(v), v)
		}
	}
}

func TestMustEmulate(t *testing.T) {
	// godvm emulates the whole baseline: nothing must be emulated any more.
	for _, n := range Baseline {
		if !slices.Contains(Emulated, n) {
			t.Errorf("%s is in Baseline but not emulated", n)
		}
	}
	if got := pvmHostMeasured().MustEmulate(); got != nil {
		t.Errorf("kvm_pvm: %q", got)
	}
	ws := strings.Join(pvmHostMeasured().Warnings(), "\n")
	if !strings.Contains(ws, "KVM cannot execute INT3, CLAC, STAC, FWAIT, POPCNT, MOVDIR64B, ENQCMDS, LDMXCSR, STMXCSR, FLDCW") ||
		strings.Contains(ws, "no guest parameter switches off") || strings.Contains(ws, "PSHUFB") {
		t.Errorf("warnings:\n%s", ws)
	}
	var text strings.Builder
	pvmHostMeasured().WriteText(&text)
	for _, want := range []string{"must be emulated and are not (x87/SSE baseline, no guest parameter avoids them): none (godvm emulates",
		"guest kernel parameters godvm adds: noxsave clearcpuid=smap,popcnt,cx16,ssse3,"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	// The mechanism, with the baseline's emulation taken away.
	saved := Emulated
	defer func() { Emulated = saved }()
	Emulated = []string{INT3, CLAC, STAC, FWAIT, POPCNT, MOVDIR64B, ENQCMDS}
	if got := pvmHostMeasured().MustEmulate(); !reflect.DeepEqual(got, []string{LDMXCSR, STMXCSR, FLDCW, FNSTSW, FNCLEX, FLD1FSTP, EMMS,
		PXOR, XORPS, MOVDTOXMM, MOVQFROMXMM, PCMPEQB, PMOVMSKB, MOVSD, CVTSI2SD, SQRTSD}) {
		t.Errorf("kvm_pvm without the x87/SSE emulation: %q", got)
	}
	// Optional extensions, godvm's emulated instructions and exceptions
	// are not in it.
	r := &Result{Instructions: append(insns(PSHUFB, INT3, FWAIT), InsnResult{Name: LDMXCSR, Outcome: Exception, Vector: 6})}
	if got := r.MustEmulate(); got != nil {
		t.Errorf("%q", got)
	}
	if got := intelKVM().MustEmulate(); got != nil {
		t.Errorf("kvm_intel: %q", got)
	}
	ws = strings.Join(pvmHostMeasured().Warnings(), "\n")
	if !strings.Contains(ws, "KVM cannot execute LDMXCSR, STMXCSR, FLDCW") || !strings.Contains(ws, "no guest parameter switches off") ||
		strings.Contains(ws, "PSHUFB") || strings.Contains(ws, "godvm does not emulate it") {
		t.Errorf("warnings:\n%s", ws)
	}
	var b strings.Builder
	pvmHostMeasured().WriteText(&b)
	for _, want := range []string{"must be emulated and are not (x87/SSE baseline, no guest parameter avoids them): LDMXCSR, STMXCSR,",
		"guest CPUID: leaf 1 ECX 0x12182202, leaf 7 EBX 0x21090129",
		"guest kernel parameters godvm adds: noxsave clearcpuid=smap,popcnt,cx16,ssse3,"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestRole(t *testing.T) {
	r := pvmHostMeasured()
	want := map[string]string{
		INT3: "emulated", XRSTOR: "noxsave", LDMXCSR: "emulated", FXSAVE: "", PSHUFB: "clearcpuid=ssse3",
		SHLX: "clearcpuid=bmi2", VPXOR: "noxsave clears it", VPXORD: "noxsave clears it", RDTSCP: "not in guest CPUID",
		RDPID: "not in guest CPUID", RDFSBASE: "", CMPXCHG16B: "clearcpuid=cx16", RDRAND: "", MOVDIR64BRAM: "DSA path choice",
	}
	for name, w := range want {
		i, ok := r.Insn(name)
		if !ok {
			t.Fatalf("%s missing", name)
		}
		if got := r.role(i); got != w {
			t.Errorf("%s: role %q, want %q", name, got, w)
		}
	}
	// Without noxsave, AVX is cleared by name and AVX2 with it.
	r = &Result{Instructions: insns(VPXOR, VPXORYMM), CPUID: CPUIDResult{Leaf1ECX: 1 << 28, Leaf7EBX: 1 << 5}}
	if a, b := r.role(r.Instructions[0]), r.role(r.Instructions[1]); a != "clearcpuid=avx" || b != "clearcpuid=avx" {
		t.Errorf("avx %q, avx2 %q", a, b)
	}
	var b strings.Builder
	pvmHostMeasured().WriteText(&b)
	if !regexp.MustCompile(`(?m)^  PSHUFB +(\S+ +)?emulation-failure +clearcpuid=ssse3`).MatchString(b.String()) {
		t.Errorf("text:\n%s", b.String())
	}
}
