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
// this host; the chart is a PNG. No timing is asserted. Where /dev/kvm is
// usable, boot, memory and dsa-guest must have measured:
// bench finds the test kernel itself (internal/kernelcache), so for them
// "unavailable" is accepted only without KVM. That takes a few guest boots
// (minutes on kvm_pvm); the test binary serves as the godvm they run.
func TestBenchQuickJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: the quick bench takes seconds to minutes")
	}
	if os.Getenv("GODVM_BINARY") == "" {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("GODVM_BINARY", self)
		t.Setenv(asGodvm, "1")
	}
	host := bench.DescribeHost()
	kvmUsable := host.KVM == "available"
	// dsa-guest too: the pv path (godvm's test kernel hands each store to
	// godvm through a port) is possible on every KVM host.
	mustRun := map[string]bool{"boot": kvmUsable, "memory": kvmUsable, "dsa-guest": kvmUsable}
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
			if mustRun[s.Name] {
				t.Errorf("%s: unavailable on this host (KVM %s %s): %s", s.Name, host.KVM, host.KVMImpl, s.Reason)
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

// Without --kernel or GODVM_TEST_KERNEL, bench boots the kernel
// images/build-kernel.sh points kernel-current at, with its System.map
// (here a stand-in godvm records what it was asked to boot).
func TestBenchFindsTestKernel(t *testing.T) {
	cache := t.TempDir()
	kdir := filepath.Join(cache, "kernel-0123456789abcdef")
	os.Mkdir(kdir, 0o755)
	for _, f := range []string{"vmlinux", "System.map", ".complete"} {
		os.WriteFile(filepath.Join(kdir, f), nil, 0o644)
	}
	os.Symlink("kernel-0123456789abcdef", filepath.Join(cache, "kernel-current"))
	t.Setenv("GODVM_CACHE", cache)
	t.Setenv("GODVM_TEST_KERNEL", "")
	args := filepath.Join(t.TempDir(), "args")
	fake := filepath.Join(t.TempDir(), "godvm")
	os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\" >"+args+"\nexit 3\n"), 0o755)
	t.Setenv("GODVM_BINARY", fake)

	js := filepath.Join(t.TempDir(), "b.json")
	runApp(t, "bench", "--quick", "--only", "boot", "--json", js)
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	vmlinux := filepath.Join(kdir, "vmlinux")
	if !strings.HasPrefix(rep.Kernel, vmlinux+" (kernel-current link; no bzImage") {
		t.Errorf("report's test kernel %q, want %s by the link", rep.Kernel, vmlinux)
	}
	if bench.KVMStatus() != "available" {
		return // boot is unavailable before it starts godvm
	}
	got, err := os.ReadFile(args)
	if err != nil {
		t.Fatalf("godvm was not started: %v (report %s)", err, b)
	}
	a := "\n" + string(got)
	if !strings.Contains(a, "\n--kernel\n"+vmlinux+"\n") || !strings.Contains(a, "\n--system-map\n"+filepath.Join(kdir, "System.map")+"\n") {
		t.Errorf("godvm run got:\n%s", got)
	}
}
