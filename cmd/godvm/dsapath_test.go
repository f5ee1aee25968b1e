package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"godvm/internal/testkernel"
	"godvm/vmm/probe"
)

// Constructed probe results for the three kinds of host.
func hostWith(o probe.Outcome, vector int, hostMOVDIR64B bool) *probe.Result {
	return &probe.Result{
		Instructions: []probe.InsnResult{{Name: probe.MOVDIR64B, Outcome: o, Vector: vector}},
		CPUID:        probe.CPUIDResult{HostMOVDIR64B: hostMOVDIR64B, GuestMOVDIR64B: hostMOVDIR64B, POPCNTRemoved: true, XSAVERemoved: true},
	}
}

var (
	pvmHost   = hostWith(probe.EmulationFailure, 0, false) // GuestCmdline adds setcpuid= itself
	intelHost = hostWith(probe.EmulationFailure, 0, true)
	amdHost   = hostWith(probe.Exception, 6, false)
)

func TestPlanDSAPath(t *testing.T) {
	cases := []struct {
		name         string
		forced       probe.DSAPath
		host         *probe.Result
		hasDSA       bool
		hostDefaults bool
		path         probe.DSAPath
		params       []string
		why          string // substring
		err          string // substring; "" for none
	}{
		{"auto, kvm_pvm", "", pvmHost, true, true, probe.DSAEmulated, []string{"godvm_dsa_path=emulated"}, "emulation failure", ""},
		{"auto, kvm_intel", "", intelHost, true, true, probe.DSANative, []string{"godvm_dsa_path=native"}, "executes", ""},
		{"auto, kvm_amd", "", amdHost, true, true, probe.DSAPV, []string{"godvm_dsa_path=pv", "setcpuid=movdir64b"}, "#UD", ""},
		{"auto, no DSA", "", amdHost, false, true, "", nil, "no DSA", ""},
		{"auto, --no-host-defaults", "", amdHost, true, false, "", nil, "--no-host-defaults", ""},
		{"auto, no probe result", "", nil, true, true, "", nil, "no result", ""},
		{"pv forced on kvm_pvm", probe.DSAPV, pvmHost, true, true, probe.DSAPV, []string{"godvm_dsa_path=pv"}, "would pick emulated", ""},
		{"pv forced on kvm_intel", probe.DSAPV, intelHost, true, true, probe.DSAPV, []string{"godvm_dsa_path=pv"}, "forced", ""},
		{"pv forced on kvm_amd", probe.DSAPV, amdHost, true, true, probe.DSAPV, []string{"godvm_dsa_path=pv", "setcpuid=movdir64b"}, "forced", ""},
		{"pv forced, --no-host-defaults: only its own parameter", probe.DSAPV, amdHost, true, false, probe.DSAPV, []string{"godvm_dsa_path=pv"}, "forced", ""},
		{"emulated forced on kvm_pvm", probe.DSAEmulated, pvmHost, true, true, probe.DSAEmulated, []string{"godvm_dsa_path=emulated"}, "forced", ""},
		{"native forced on kvm_intel", probe.DSANative, intelHost, true, true, probe.DSANative, []string{"godvm_dsa_path=native"}, "forced", ""},
		{"forced, no probe result: not checked", probe.DSANative, nil, true, true, probe.DSANative, []string{"godvm_dsa_path=native"}, "not checked", ""},
		{"native forced on kvm_pvm", probe.DSANative, pvmHost, true, true, "", nil, "", "--dsa-path native: this host cannot"},
		{"native forced on kvm_amd", probe.DSANative, amdHost, true, true, "", nil, "", "#UD"},
		{"emulated forced on kvm_intel", probe.DSAEmulated, intelHost, true, true, "", nil, "", "--dsa-path emulated"},
		{"emulated forced on kvm_amd", probe.DSAEmulated, amdHost, true, true, "", nil, "", "--dsa-path emulated"},
		{"impossible even without a DSA", probe.DSANative, amdHost, false, true, "", nil, "", "--dsa-path native"},
		{"impossible even with --no-host-defaults", probe.DSANative, amdHost, true, false, "", nil, "", "--dsa-path native"},
	}
	for _, c := range cases {
		plan, err := planDSAPath(c.forced, c.host, c.hasDSA, c.hostDefaults)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: error %v, want one line with %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if plan.path != c.path || !reflect.DeepEqual(plan.params, c.params) || !strings.Contains(plan.why, c.why) {
			t.Errorf("%s: plan %+v, want path %q params %q why …%s…", c.name, plan, c.path, c.params, c.why)
		}
	}
}

func TestParseDSAPathFlag(t *testing.T) {
	for s, want := range map[string]probe.DSAPath{"auto": "", "native": probe.DSANative, "emulated": probe.DSAEmulated, "pv": probe.DSAPV} {
		if got, err := parseDSAPathFlag(s); got != want || err != nil {
			t.Errorf("%q: %q %v", s, got, err)
		}
	}
	for _, s := range []string{"", "Auto", "paravirtual", "none"} {
		if _, err := parseDSAPathFlag(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// An unknown --dsa-path is a one-line error before anything is built.
func TestDSAPathFlagBadValue(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(kernel, testkernel.TinyELF(), 0o644)
	status, stderr := runApp(t, "run", "--kernel", kernel, "--dsa-path", "fast")
	if status != 1 || !strings.Contains(stderr, `--dsa-path "fast"`) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("status %d stderr %q", status, stderr)
	}
}

// On a host with KVM, a path the probe rules out is a one-line error
// (exit status 1) and no guest starts.
func TestDSAPathForcedImpossible(t *testing.T) {
	r, err := probe.Run(probe.Options{})
	if err != nil {
		t.Skipf("no usable KVM here (%v): the probe decides what is possible", err)
	}
	var impossible probe.DSAPath
	for _, p := range probe.DSAPaths {
		if r.CheckDSAPath(p) != nil {
			impossible = p
			break
		}
	}
	if impossible == "" {
		t.Fatal("every path possible: native and emulated exclude each other")
	}
	if r.CheckDSAPath(probe.DSAPV) != nil {
		t.Error("pv refused")
	}
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(kernel, testkernel.TinyELF(), 0o644)
	status, stderr := runApp(t, "run", "--kernel", kernel, "--dsa", "default", "--dsa-path", string(impossible), "--timeout", "5s")
	want := "--dsa-path " + string(impossible) + ": this host cannot"
	if status != 1 || !strings.Contains(stderr, want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("status %d stderr %q, want one line with %q", status, stderr, want)
	}
}

// `godvm probe --json` carries the DSA data path beside the probe's result.
func TestProbeJSONDSAPath(t *testing.T) {
	b, err := json.Marshal(probeJSON(amdHost))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"dsa_path":{"path":"pv","why":"a guest MOVDIR64B raises #UD`,
		`"params":["godvm_dsa_path=pv","setcpuid=movdir64b"]`, `"instructions":[{"name":"MOVDIR64B"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
	var back probe.Result
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back.Instructions, amdHost.Instructions) {
		t.Errorf("the probe result does not read back: %v %+v", err, back)
	}
}

// `godvm probe --json` also carries the guest parameters godvm adds and
// the baseline instructions that must be emulated (none: godvm emulates
// LDMXCSR and the rest of the baseline).
func TestProbeJSONCmdlineMustEmulate(t *testing.T) {
	r := &probe.Result{
		Instructions: []probe.InsnResult{
			{Name: probe.XRSTOR, Outcome: probe.EmulationFailure},
			{Name: probe.LDMXCSR, Outcome: probe.EmulationFailure},
			{Name: probe.FXSAVE, Outcome: probe.Executed},
			{Name: probe.PSHUFB, Outcome: probe.EmulationFailure},
		},
		CPUID: probe.CPUIDResult{Leaf1ECX: 1 << 9, GuestMOVDIR64B: true},
	}
	b, err := json.Marshal(probeJSON(r))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"guest_cmdline":["noxsave","clearcpuid=ssse3"]`, `"must_emulate":[]`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
	b, _ = json.Marshal(probeJSON(&probe.Result{}))
	if !strings.Contains(string(b), `"guest_cmdline":[]`) || !strings.Contains(string(b), `"must_emulate":[]`) {
		t.Errorf("empty lists: %s", b)
	}
}
