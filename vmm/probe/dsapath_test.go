package probe

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestDSAPath(t *testing.T) {
	withMOVDIR64B := func(r *Result, i InsnResult) *Result {
		i.Name = MOVDIR64B
		for k := range r.Instructions {
			if r.Instructions[k].Name == MOVDIR64B {
				r.Instructions[k] = i
			}
		}
		return r
	}
	noMOVDIR64BTest := pvmHost()
	noMOVDIR64BTest.Instructions = noMOVDIR64BTest.Instructions[:0]
	cases := []struct {
		name    string
		r       *Result
		want    DSAPath
		why     string // substring
		cmdline []string
	}{
		{"kvm_pvm", pvmHost(), DSAEmulated, "emulation failure",
			[]string{"godvm_dsa_path=emulated"}}, // setcpuid= is in GuestCmdline already
		{"kvm_intel with MOVDIR64B", intelKVM(), DSANative, "executes MOVDIR64B",
			[]string{"godvm_dsa_path=native"}},
		{"kvm_pvm on a CPU with MOVDIR64B", func() *Result {
			r := pvmHost()
			r.CPUID.HostMOVDIR64B, r.CPUID.GuestMOVDIR64B = true, true
			return r
		}(), DSAEmulated, "to RAM as to MMIO", []string{"godvm_dsa_path=emulated"}},
		{"kvm_amd", amdKVM(), DSAPV, "#UD (vector 6)",
			[]string{"godvm_dsa_path=pv", "setcpuid=movdir64b"}},
		{"executed (a test aimed at memory)", withMOVDIR64B(intelKVM(), InsnResult{Outcome: Executed}), DSANative, "executes",
			[]string{"godvm_dsa_path=native"}},
		{"emulation failure, CPUID test failed", func() *Result {
			r := pvmHost()
			r.CPUID = CPUIDResult{Error: "boom"}
			return r
		}(), DSAEmulated, "emulation failure", []string{"godvm_dsa_path=emulated"}},
		{"#GP", withMOVDIR64B(amdKVM(), InsnResult{Outcome: Exception, Vector: 13}), DSAPV, "#GP (vector 13)",
			[]string{"godvm_dsa_path=pv", "setcpuid=movdir64b"}},
		{"timeout", withMOVDIR64B(amdKVM(), InsnResult{Outcome: Timeout, Detail: "no exit in 250ms"}), DSAPV, "timeout (no exit in 250ms)",
			[]string{"godvm_dsa_path=pv", "setcpuid=movdir64b"}},
		{"not tested", noMOVDIR64BTest, DSAPV, "did not test", []string{"godvm_dsa_path=pv", "setcpuid=movdir64b"}},
		{"empty result", &Result{}, DSAPV, "did not test", []string{"godvm_dsa_path=pv", "setcpuid=movdir64b"}},
	}
	for _, c := range cases {
		p, why := c.r.DSAPath()
		if p != c.want || !strings.Contains(why, c.why) {
			t.Errorf("%s: DSAPath() = %s (%s), want %s (…%s…)", c.name, p, why, c.want, c.why)
		}
		if got := c.r.DSACmdline(p); !reflect.DeepEqual(got, c.cmdline) {
			t.Errorf("%s: DSACmdline(%s) = %q, want %q", c.name, p, got, c.cmdline)
		}
	}
	// pv forced on a host whose guest CPUID has MOVDIR64B: no setcpuid=.
	if got := intelKVM().DSACmdline(DSAPV); !reflect.DeepEqual(got, []string{"godvm_dsa_path=pv"}) {
		t.Errorf("pv on kvm_intel: %q", got)
	}
	// The guest executes MOVDIR64B but its CPUID did not show it: setcpuid=
	// (GuestCmdline adds it only for an emulation failure).
	r := withMOVDIR64B(intelKVM(), InsnResult{Outcome: Executed})
	r.CPUID.GuestMOVDIR64B = false
	if got := r.DSACmdline(DSANative); !reflect.DeepEqual(got, []string{"godvm_dsa_path=native", "setcpuid=movdir64b"}) {
		t.Errorf("guest CPUID without MOVDIR64B: %q", got)
	}
	// When GuestCmdline adds it already, it is not repeated.
	r = intelKVM()
	r.CPUID.GuestMOVDIR64B = false
	if !slices.Contains(r.GuestCmdline(), "setcpuid=movdir64b") || !reflect.DeepEqual(r.DSACmdline(DSANative), []string{"godvm_dsa_path=native"}) {
		t.Errorf("setcpuid= twice: %q then %q", r.GuestCmdline(), r.DSACmdline(DSANative))
	}
}

func TestCheckDSAPath(t *testing.T) {
	hosts := []struct {
		name string
		r    *Result
		ok   map[DSAPath]bool
		why  string // in each refusal
	}{
		{"kvm_pvm", pvmHost(), map[DSAPath]bool{DSAEmulated: true, DSAPV: true}, "emulation failure"},
		{"kvm_intel", intelKVM(), map[DSAPath]bool{DSANative: true, DSAPV: true}, "executes MOVDIR64B"},
		{"kvm_amd", amdKVM(), map[DSAPath]bool{DSAPV: true}, "#UD"},
	}
	for _, h := range hosts {
		for _, p := range DSAPaths {
			err := h.r.CheckDSAPath(p)
			if h.ok[p] != (err == nil) {
				t.Errorf("%s: CheckDSAPath(%s) = %v, want ok=%v", h.name, p, err, h.ok[p])
			}
			if err != nil && (!strings.Contains(err.Error(), string(p)) || !strings.Contains(err.Error(), h.why)) {
				t.Errorf("%s: %s refused without naming it and why: %v", h.name, p, err)
			}
		}
	}
}

func TestParseDSAPath(t *testing.T) {
	for _, p := range DSAPaths {
		if got, err := ParseDSAPath(string(p)); got != p || err != nil {
			t.Errorf("%s: %v %v", p, got, err)
		}
	}
	for _, s := range []string{"", "auto", "PV", "paravirtual", "native "} {
		if _, err := ParseDSAPath(s); err == nil || !strings.Contains(err.Error(), "native, emulated, pv") {
			t.Errorf("%q: %v", s, err)
		}
	}
	if DSAPV.GuestParam() != "godvm_dsa_path=pv" {
		t.Error(DSAPV.GuestParam())
	}
}
