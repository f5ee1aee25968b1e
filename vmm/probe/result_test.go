package probe

import (
	"encoding/json"
	"reflect"
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
		{"kvm_pvm", pvmHost(), []string{"noxsave", "clearcpuid=smap,popcnt", "setcpuid=movdir64b"}},
		{"cx16 shown to the guest and failing", func() *Result {
			r := pvmHost()
			r.CPUID.Leaf1ECX = cpuid1ECXCX16
			return r
		}(), []string{"noxsave", "clearcpuid=smap,popcnt,cx16", "setcpuid=movdir64b"}},
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
		{"only int3 and fwait fail: emulated, nothing to clear", &Result{
			Instructions: []InsnResult{{Name: INT3, Outcome: EmulationFailure}, {Name: FWAIT, Outcome: EmulationFailure}}}, nil},
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
