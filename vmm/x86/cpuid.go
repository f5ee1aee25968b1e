package x86

import "godvm/kvm"

// CPUIDEntry is one leaf/subleaf (struct kvm_cpuid_entry2), the type
// KVM_GET_SUPPORTED_CPUID returns and KVM_SET_CPUID2 takes.
type CPUIDEntry = kvm.CPUIDEntry2

// CPUID bits godvm changes.
const (
	cpuid1ECXHypervisor = 1 << 31
	cpuid1EDXHTT        = 1 << 28
)

// CPUIDForVCPU returns the CPUID table for vCPU cpu (its APIC ID) of ncpu,
// starting from the host's supported table: the initial APIC ID in leaf 1
// EBX[31:24] and in EDX of the extended-topology leaves 0xb/0x1f, the logical
// processor count in leaf 1 EBX[23:16] (with HTT when ncpu > 1), and the
// hypervisor bit. Leaf 0xa is zeroed: godvm offers no PMU.
//
// On hosts where KVM decides guest CPUID itself (kvm_pvm) the table has little
// effect; the guest command line's clearcpuid= does the removing there.
func CPUIDForVCPU(supported []CPUIDEntry, cpu, ncpu int) []CPUIDEntry {
	out := make([]CPUIDEntry, len(supported))
	copy(out, supported)
	id := uint32(cpu) & 0xff
	for i := range out {
		e := &out[i]
		switch e.Function {
		case 1:
			e.EBX = e.EBX&0x0000ffff | id<<24 | (uint32(ncpu)&0xff)<<16
			e.ECX |= cpuid1ECXHypervisor
			if ncpu > 1 {
				e.EDX |= cpuid1EDXHTT
			}
		case 0xb, 0x1f:
			e.EDX = uint32(cpu)
		case 0xa:
			e.EAX, e.EBX, e.ECX, e.EDX = 0, 0, 0, 0
		}
	}
	return out
}
