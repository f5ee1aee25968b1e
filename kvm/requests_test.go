package kvm

import (
	"os"
	"regexp"
	"testing"
)

// Every request variable declared in ioctl.go is in Requests under the name
// its ioctl call reports, so that godvm's seccomp allow-lists
// (internal/sandbox) see a new ioctl as soon as it is added.
func TestRequestsComplete(t *testing.T) {
	src, err := os.ReadFile("ioctl.go")
	if err != nil {
		t.Fatal(err)
	}
	reqs := Requests()
	byValue := map[uintptr]string{}
	for name, v := range reqs {
		if other, dup := byValue[v]; dup {
			t.Errorf("%s and %s have the same request number %#x", name, other, v)
		}
		byValue[v] = name
	}
	decl := regexp.MustCompile(`(?m)^\s+(kvm[A-Z]\w*)\s+= `)
	vars := decl.FindAllSubmatch(src, -1)
	if len(vars) < 30 {
		t.Fatalf("found %d request variables in ioctl.go: the pattern no longer matches", len(vars))
	}
	if len(vars) != len(reqs) {
		t.Errorf("ioctl.go declares %d requests, Requests lists %d", len(vars), len(reqs))
	}
	// The names Requests uses are the ones the ioctl calls report.
	calls := regexp.MustCompile(`"(KVM_[A-Z0-9_]+)", (kvm[A-Z]\w*)`)
	for _, f := range []string{"system.go", "vm.go", "vcpu.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range calls.FindAllSubmatch(b, -1) {
			if _, ok := reqs[string(m[1])]; !ok {
				t.Errorf("%s: %s (%s) is not in Requests", f, m[1], m[2])
			}
		}
	}
}
