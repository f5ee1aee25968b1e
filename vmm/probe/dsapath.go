package probe

import (
	"fmt"
	"slices"
	"strings"
)

// DSAPath is how a guest's 64-byte DSA submissions (the idxd driver's
// movdir64b() and enqcmds()) reach the device on this host.
type DSAPath string

// The three paths.
const (
	// DSANative: the guest CPU executes MOVDIR64B itself. A store to a
	// passed-through portal (a memory slot) goes straight to the device;
	// one to godvm's emulated portal faults into KVM, whose emulator
	// cannot execute it, so it reaches godvm as an emulation failure that
	// vmm/emulate completes. Intel with MOVDIR64B under kvm_intel.
	DSANative DSAPath = "native"
	// DSAEmulated: every guest MOVDIR64B stops the vCPU with an emulation
	// failure (guest ring 0 runs in KVM's emulator), and vmm/emulate
	// completes each one. kvm_pvm.
	DSAEmulated DSAPath = "emulated"
	// DSAPV: the guest cannot execute MOVDIR64B at all (#UD in the guest,
	// no exit); godvm's patched test kernel, told godvm_dsa_path=pv, hands
	// each store to godvm through the paravirtual port (vmm/emulate's
	// package doc). AMD, older Intel, nested kvm_amd. Always possible.
	DSAPV DSAPath = "pv"
)

// DSAPaths are the paths in the order they are documented.
var DSAPaths = []DSAPath{DSANative, DSAEmulated, DSAPV}

// ParseDSAPath reads a path name; "" and "auto" are not paths.
func ParseDSAPath(s string) (DSAPath, error) {
	for _, p := range DSAPaths {
		if s == string(p) {
			return p, nil
		}
	}
	names := make([]string, len(DSAPaths))
	for i, p := range DSAPaths {
		names[i] = string(p)
	}
	return "", fmt.Errorf("unknown DSA data path %q (want %s)", s, strings.Join(names, ", "))
}

// GuestParam is the guest kernel parameter that tells the patched test
// kernel the path: godvm_dsa_path=pv routes its movdir64b()/enqcmds()
// through the port; the other values are only recorded for the guest's
// test agent to print.
func (p DSAPath) GuestParam() string { return "godvm_dsa_path=" + string(p) }

// DSAPath picks the data path for this host and says why, from the
// MOVDIR64B test (aimed at an unbacked MMIO page) and the CPUID test.
func (r *Result) DSAPath() (DSAPath, string) {
	i, ok := r.Insn(MOVDIR64B)
	switch {
	case !ok:
		return DSAPV, "the probe did not test MOVDIR64B, so godvm cannot count on it: the guest kernel hands each 64-byte store to godvm through port 0xf6"
	case i.Outcome == Executed:
		return DSANative, "the guest CPU executes MOVDIR64B"
	case i.Outcome == EmulationFailure && r.movdir64bToRAM() == EmulationFailure:
		return DSAEmulated, "every guest MOVDIR64B, to RAM as to MMIO, stops the vCPU with an emulation failure, as on kvm_pvm, where guest ring 0 " +
			"runs in KVM's emulator: godvm completes each store"
	case i.Outcome == EmulationFailure && r.movdir64bToRAM() == Executed:
		return DSANative, "the guest CPU executes MOVDIR64B (to RAM without an exit): a store to a passed-through portal goes straight to the device, " +
			"one to godvm's emulated portal exits to godvm as an emulation failure"
	case i.Outcome == EmulationFailure && r.CPUID.HostMOVDIR64B:
		return DSANative, "the guest CPU executes MOVDIR64B, which KVM offers in CPUID: a store to a passed-through portal goes straight to the device, " +
			"one to godvm's emulated portal exits to godvm as an emulation failure"
	case i.Outcome == EmulationFailure:
		return DSAEmulated, "a guest MOVDIR64B stops the vCPU with an emulation failure, as on kvm_pvm, where guest ring 0 runs in KVM's emulator " +
			"and the CPU lacks MOVDIR64B: godvm completes each store"
	case i.Outcome == Exception:
		return DSAPV, fmt.Sprintf("a guest MOVDIR64B raises %s inside the guest and never reaches godvm: "+
			"the guest kernel hands each 64-byte store to godvm through port 0xf6", vectorName(i.Vector))
	}
	what := string(i.Outcome)
	if i.Detail != "" {
		what += " (" + i.Detail + ")"
	}
	return DSAPV, "the MOVDIR64B test ended in " + what + ", so godvm cannot count on the instruction: " +
		"the guest kernel hands each 64-byte store to godvm through port 0xf6"
}

// CheckDSAPath says why this host cannot give a guest path p (nil: it
// can). native and emulated are possible only where DSAPath picks them;
// pv is always possible.
func (r *Result) CheckDSAPath(p DSAPath) error {
	auto, why := r.DSAPath()
	if p == DSAPV || p == auto {
		return nil
	}
	return fmt.Errorf("this host cannot give the guest the %s DSA data path (it gives %s: %s)", p, auto, why)
}

// DSACmdline returns the guest kernel parameters a machine with a DSA
// needs for path p, beyond GuestCmdline: p's godvm_dsa_path=, and
// setcpuid=movdir64b when the guest's CPUID lacks MOVDIR64B and
// GuestCmdline does not add it already (the stock idxd driver refuses to
// load without the flag, on the pv path as on the others).
func (r *Result) DSACmdline(p DSAPath) []string {
	out := []string{p.GuestParam()}
	const setcpuid = "setcpuid=movdir64b"
	if !r.guestSeesMOVDIR64B() && !slices.Contains(r.GuestCmdline(), setcpuid) {
		out = append(out, setcpuid)
	}
	return out
}

// guestSeesMOVDIR64B reports whether a godvm guest's CPUID shows MOVDIR64B:
// godvm gives the guest KVM's supported CPUID, which has it only when the
// host offers it, and the CPUID test showed that the guest then sees it.
func (r *Result) guestSeesMOVDIR64B() bool {
	return r.CPUID.Error == "" && r.CPUID.HostMOVDIR64B && r.CPUID.GuestMOVDIR64B
}

// movdir64bToRAM is the outcome of the RAM-destination MOVDIR64B test, ""
// when it did not run (results from an older probe).
func (r *Result) movdir64bToRAM() Outcome {
	if i, ok := r.Insn(MOVDIR64BRAM); ok {
		return i.Outcome
	}
	return ""
}

// vectorName names an exception vector ("#UD (vector 6)").
func vectorName(v int) string {
	names := map[int]string{0: "#DE", 1: "#DB", 3: "#BP", 6: "#UD", 8: "#DF", 13: "#GP", 14: "#PF"}
	if n, ok := names[v]; ok {
		return fmt.Sprintf("%s (vector %d)", n, v)
	}
	return fmt.Sprintf("exception vector %d", v)
}
