package e2e

import (
	"sync"
	"testing"

	"godvm/vmm/probe"
)

var (
	probeOnce sync.Once
	probeRes  *probe.Result
	probeErr  error
)

// hostDSAPath runs godvm's KVM probe (once) and returns the DSA data path
// godvm picks on this host, and why: native (the guest CPU executes
// MOVDIR64B), emulated (kvm_pvm: every MOVDIR64B is an emulation failure
// godvm completes) or pv (the guest cannot execute it: the test kernel's
// movdir64b()/enqcmds() hand each store to godvm through its port).
func hostDSAPath(t *testing.T) (probe.DSAPath, string) {
	t.Helper()
	probeOnce.Do(func() { probeRes, probeErr = probe.Run(probe.Options{}) })
	if probeErr != nil {
		t.Fatalf("KVM probe: %v", probeErr)
	}
	return probeRes.DSAPath()
}
