package probe

import (
	"fmt"
	"io"
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
	b.WriteString("instructions at guest CPL0:\n")
	for _, i := range r.Instructions {
		fmt.Fprintf(&b, "  %-13s %-12s %-18s %s\n", i.Name, i.Bytes, i.Outcome, i.Detail)
	}
	c := r.CPUID
	if c.Error != "" {
		fmt.Fprintf(&b, "KVM_SET_CPUID2: test failed: %s\n", c.Error)
	} else {
		fmt.Fprintf(&b, "KVM_SET_CPUID2: honoured=%v (MOVDIR64B added: %v, POPCNT removed: %v, XSAVE removed: %v; host offers MOVDIR64B: %v)\n",
			c.Honoured(), c.GuestMOVDIR64B, c.POPCNTRemoved, c.XSAVERemoved, c.HostMOVDIR64B)
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
