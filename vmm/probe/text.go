package probe

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

// WriteText prints the result for people (`godvm probe` without --json).
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "KVM API version %d, probe took %v\n", r.APIVersion, r.Elapsed.Round(100_000))
	if len(r.Capabilities) > 0 {
		names := make([]string, 0, len(r.Capabilities))
		for n := range r.Capabilities {
			names = append(names, n)
		}
		sort.Strings(names)
		b.WriteString("capabilities:")
		for _, n := range names {
			fmt.Fprintf(&b, " %s=%d", n, r.Capabilities[n])
		}
		b.WriteString("\n")
	}
	b.WriteString("instructions at guest CPL0 (name, bytes, outcome, what godvm does where it fails, detail):\n")
	for _, i := range r.Instructions {
		fmt.Fprintf(&b, "  %-13s %-12s %-18s %-19s %s\n", i.Name, i.Bytes, i.Outcome, r.role(i), i.Detail)
	}
	m := "none (godvm emulates the x87/SSE baseline)"
	if mm := r.MustEmulate(); len(mm) > 0 {
		m = strings.Join(mm, ", ")
	}
	fmt.Fprintf(&b, "must be emulated and are not (x87/SSE baseline, no guest parameter avoids them): %s\n", m)
	c := r.CPUID
	if c.Error != "" {
		fmt.Fprintf(&b, "KVM_SET_CPUID2: test failed: %s\n", c.Error)
	} else {
		fmt.Fprintf(&b, "KVM_SET_CPUID2: honoured=%v (MOVDIR64B added: %v, POPCNT removed: %v, XSAVE removed: %v; host offers MOVDIR64B: %v)\n",
			c.Honoured(), c.GuestMOVDIR64B, c.POPCNTRemoved, c.XSAVERemoved, c.HostMOVDIR64B)
		fmt.Fprintf(&b, "guest CPUID: leaf 1 ECX %#08x, leaf 7 EBX %#08x ECX %#08x, leaf 0x80000001 EDX %#08x\n",
			c.Leaf1ECX, c.Leaf7EBX, c.Leaf7ECX, c.Ext1EDX)
	}
	fmt.Fprintf(&b, "guest user space: works=%v (%s)\n", r.UserSpaceWorks, r.UserSpace)
	if cl := r.GuestCmdline(); len(cl) > 0 {
		fmt.Fprintf(&b, "guest kernel parameters godvm adds: %s\n", strings.Join(cl, " "))
	} else {
		b.WriteString("guest kernel parameters godvm adds: none\n")
	}
	path, why := r.DSAPath()
	fmt.Fprintf(&b, "DSA data path: %s (%s)\n", path, why)
	fmt.Fprintf(&b, "with a DSA (--dsa, --vfio-user, --vfio), godvm also adds: %s\n", strings.Join(r.DSACmdline(path), " "))
	for _, s := range r.Warnings() {
		fmt.Fprintf(&b, "warning: %s\n", s)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// role says in a few words what godvm does about an instruction that
// fails at CPL0 here ("" where it does not fail): emulate it, steer the
// guest off it (a clearcpuid= name or noxsave), nothing because the
// guest's CPUID does not offer it, or nothing yet (the x87/SSE baseline).
func (r *Result) role(i InsnResult) string {
	failed := i.Outcome == EmulationFailure
	switch {
	case failed && slices.Contains(Emulated, i.Name):
		return "emulated"
	case failed && slices.Contains(Baseline, i.Name):
		return "must be emulated"
	case failed && i.Name == XRSTOR:
		return "noxsave"
	case failed && i.Name == MOVDIR64BRAM:
		return "DSA path choice"
	}
	bits := map[string]struct {
		feature string
		bit     cpuidBit
	}{CMPXCHG16B: {"cx16", cpuidBit{1, 'c', 13}}, RDRAND: {"rdrand", cpuidBit{1, 'c', 30}}}
	for _, st := range Steerable {
		bits[st.Insn] = struct {
			feature string
			bit     cpuidBit
		}{st.Feature, st.bit}
	}
	b, ok := bits[i.Name]
	ud := i.Outcome == Exception && i.Vector == 6 && i.Name != CMPXCHG16B && i.Name != RDRAND
	if !ok || !failed && !ud {
		return ""
	}
	if !r.guestHas(b.bit) {
		return "not in guest CPUID"
	}
	var clear []string
	cmdline := r.GuestCmdline()
	for _, p := range cmdline {
		if v, ok := strings.CutPrefix(p, "clearcpuid="); ok {
			clear = strings.Split(v, ",")
		}
	}
	switch {
	case slices.Contains(clear, b.feature):
		return "clearcpuid=" + b.feature
	case slices.Contains(cmdline, "noxsave") && slices.Contains(impliedBy["xsave"], b.feature):
		return "noxsave clears it"
	case slices.Contains(clear, "avx") && slices.Contains(impliedBy["avx"], b.feature):
		return "clearcpuid=avx"
	}
	return ""
}
