package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godvm/bench"
)

// `godvm bench --quick` runs every scenario and its JSON holds, for each,
// either plausible non-zero measurements or the reason it could not run on
// this host; the chart is a PNG. No timing is asserted.
func TestBenchQuickJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: the quick bench takes a few seconds")
	}
	if _, err := os.Stat("/dev/kvm"); err == nil && os.Getenv("GODVM_BINARY") == "" {
		t.Fatal("/dev/kvm is present: set GODVM_BINARY to a built godvm (the Makefile does) so the guest scenarios can run")
	}
	dir := t.TempDir()
	js, png := filepath.Join(dir, "b.json"), filepath.Join(dir, "b.png")
	status, stderr := runApp(t, "bench", "--quick", "--json", js, "--plot", png)
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatalf("status %d, no JSON: %v\n%s", status, err, stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Schema != bench.SchemaVersion || !rep.Quick || rep.Runs != 1 || rep.Host.CPUs < 1 || rep.Host.KVM == "" {
		t.Errorf("report header: %+v", rep)
	}
	seen := map[string]bool{}
	for _, s := range rep.Scenarios {
		seen[s.Name] = true
		switch s.Status {
		case bench.StatusOK:
			if s.Runs != 1 || len(s.Metrics) == 0 {
				t.Errorf("%s: ok with %d runs and %d metrics", s.Name, s.Runs, len(s.Metrics))
			}
			for _, m := range s.Metrics {
				if m.Unit == "" || len(m.Values) != 1 || !(m.Median > 0) || m.Min > m.Median || m.Max < m.Median {
					t.Errorf("%s: implausible metric %+v", s.Name, m)
				}
			}
		case bench.StatusUnavailable:
			if strings.TrimSpace(s.Reason) == "" {
				t.Errorf("%s: unavailable without a reason", s.Name)
			}
			t.Logf("%s unavailable here: %s", s.Name, s.Reason)
		default:
			t.Errorf("%s: %s: %s", s.Name, s.Status, s.Reason)
		}
	}
	for _, n := range []string{"boot", "memory", "dsa-engine", "dsa-guest", "peer"} {
		if !seen[n] {
			t.Errorf("scenario %s missing from the report", n)
		}
	}
	// The engine needs no guest: it must have run everywhere.
	for _, s := range rep.Scenarios {
		if s.Name == "dsa-engine" && s.Status != bench.StatusOK {
			t.Errorf("dsa-engine did not run: %s", s.Reason)
		}
	}
	if status != 0 {
		t.Errorf("godvm bench exited %d: %s", status, stderr)
	}
	if p, err := os.ReadFile(png); err != nil || !strings.HasPrefix(string(p), "\x89PNG") {
		t.Errorf("no PNG chart: %v", err)
	}
}

func TestBenchBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--only", "nope"}, `unknown scenario "nope"`},
		{[]string{"bench", "--runs", "0"}, "--runs 0"},
		{[]string{"bench", "--json", "/no/such/dir/x.json"}, "cannot write"},
	} {
		status, stderr := runApp(t, c.args...)
		if status != 1 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: status %d, stderr %q, want one line with %q", c.args, status, stderr, c.want)
		}
	}
}
