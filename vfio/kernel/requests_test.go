package kernel

import (
	"os"
	"regexp"
	"testing"
)

// Every request variable in uapi.go's request block is in Requests, once,
// so that godvm's seccomp allow-lists (internal/sandbox) see a new ioctl
// as soon as it is added.
func TestRequestsComplete(t *testing.T) {
	src, err := os.ReadFile("uapi.go")
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`(?m)^\s+((?:ioctl|iommu)[A-Z]\w*)\s+= linux\.`)
	vars := decl.FindAllSubmatch(src, -1)
	reqs := Requests()
	if len(vars) < 20 {
		t.Fatalf("found %d request variables in uapi.go: the pattern no longer matches", len(vars))
	}
	if len(vars) != len(reqs) {
		t.Errorf("uapi.go declares %d requests, Requests lists %d", len(vars), len(reqs))
	}
	seen := map[uint32]string{}
	for name, v := range reqs {
		if other, dup := seen[v]; dup {
			t.Errorf("%s and %s have the same request number %#x", name, other, v)
		}
		seen[v] = name
	}
}
