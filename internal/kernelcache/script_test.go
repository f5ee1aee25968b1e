package kernelcache

import (
	"os/exec"
	"strings"
	"testing"
)

// extractFunc returns the bash function name() { ... } from src (its body
// ends at the first line that is exactly "}").
func extractFunc(t *testing.T, src, name string) string {
	t.Helper()
	i := strings.Index(src, "\n"+name+"() {\n")
	if i < 0 {
		t.Fatalf("no function %s in the build script", name)
	}
	rest := src[i+1:]
	j := strings.Index(rest, "\n}\n")
	if j < 0 {
		t.Fatalf("function %s does not end", name)
	}
	return rest[:j+3]
}

func runBash(t *testing.T, script string) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
