package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"godvm/vmm/probe"
)

// The DSA data path of `godvm run` (--dsa-path): how the guest's 64-byte
// DSA submissions reach the device, and the guest parameters that say so
// (vmm/probe's DSAPath; the paravirtual port in vmm/emulate).

// parseDSAPathFlag reads --dsa-path: "" for auto, else the forced path.
func parseDSAPathFlag(s string) (probe.DSAPath, error) {
	if s == "auto" {
		return "", nil
	}
	p, err := probe.ParseDSAPath(s)
	if err != nil {
		return "", fmt.Errorf("run: --dsa-path %q: want auto, native, emulated or pv", s)
	}
	return p, nil
}

// machineHasDSA reports whether the machine gets a DSA: the built-in one,
// or a passthrough function (--vfio-user, --vfio), which is taken to be a
// DSA since godvm cannot tell before opening it (the parameters are
// harmless to a guest without one).
func machineHasDSA(c *cli.Context) bool {
	return len(c.StringSlice("dsa"))+len(c.StringSlice("vfio-user"))+len(c.StringSlice("vfio")) > 0
}

// dsaPlan is what `godvm run` does about the DSA data path.
type dsaPlan struct {
	path   probe.DSAPath // "" when none is chosen
	why    string        // why this path (or why none)
	params []string      // guest parameters, placed before --cmdline
}

// planDSAPath decides the DSA data path. forced is --dsa-path ("" for
// auto); host is the probe's result (nil when it did not run or failed);
// hostDefaults is false with --no-host-defaults.
//
//   - A forced path is checked against the host whenever the probe ran, DSA
//     or not: one this host cannot do is an error.
//   - Without a DSA nothing is added.
//   - auto: the probe's path, with DSACmdline's parameters (godvm_dsa_path=
//     and, where the guest's CPUID lacks MOVDIR64B, setcpuid=movdir64b);
//     nothing with --no-host-defaults or without a probe result.
//   - forced: the same parameters for that path; with --no-host-defaults
//     (or without a probe result) only its godvm_dsa_path=, since the user
//     asked for the path by name but not for the host defaults.
func planDSAPath(forced probe.DSAPath, host *probe.Result, hasDSA, hostDefaults bool) (dsaPlan, error) {
	if forced != "" && host != nil {
		if err := host.CheckDSAPath(forced); err != nil {
			return dsaPlan{}, fmt.Errorf("run: --dsa-path %s: %v", forced, err)
		}
	}
	switch {
	case !hasDSA:
		return dsaPlan{why: "the machine has no DSA (--dsa, --vfio-user, --vfio)"}, nil
	case forced == "" && !hostDefaults:
		return dsaPlan{why: "--no-host-defaults and --dsa-path auto: no godvm_dsa_path= added"}, nil
	case forced == "" && host == nil:
		return dsaPlan{why: "the KVM probe gave no result: no godvm_dsa_path= added"}, nil
	case forced == "":
		path, why := host.DSAPath()
		return dsaPlan{path: path, why: why, params: host.DSACmdline(path)}, nil
	}
	plan := dsaPlan{path: forced, why: "forced by --dsa-path", params: []string{forced.GuestParam()}}
	if host == nil {
		plan.why += "; not checked: the KVM probe gave no result"
		return plan, nil
	}
	if hostDefaults {
		plan.params = host.DSACmdline(forced)
	}
	auto, _ := host.DSAPath()
	plan.why += fmt.Sprintf("; the probe would pick %s", auto)
	return plan, nil
}
