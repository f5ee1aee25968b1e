package bench

import (
	"context"
	"strings"
	"testing"
)

// The engine scenario runs here (no guest needed) and yields a positive
// number for every operation, size and engine count, plus the memcpy ratio.
func TestDSAEngineQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	rep := Run(context.Background(), []Scenario{DSAEngineScenario()}, &Env{Quick: true}, Options{Runs: 1})
	s := rep.Scenarios[0]
	if s.Status != StatusOK {
		t.Fatalf("%s: %s", s.Status, s.Reason)
	}
	want := map[string]bool{}
	for _, op := range []string{"memmove", "fill", "compare", "crcgen"} {
		for _, sz := range []string{"4KiB", "64KiB"} {
			for _, e := range []string{"1", "2"} {
				want[op+" "+sz+" "+e+" engine(s)"] = true
			}
		}
	}
	for _, m := range s.Metrics {
		if len(m.Values) != 1 || m.Median <= 0 && !strings.HasPrefix(m.Name, "idle CPU") {
			t.Errorf("%s: %v", m.Name, m.Values)
		}
		delete(want, m.Name)
	}
	if len(want) > 0 {
		t.Errorf("missing metrics: %v", want)
	}
	names := ""
	for _, m := range s.Metrics {
		names += m.Name + ";"
	}
	for _, w := range []string{"host copy() 4KiB", "memmove 64KiB 1 engine / host copy()", "memmove 4KiB 1 engine, fed on its own core / host copy()", "idle engine spinning",
		"engine parked", "2 engines on 2 cores / 1 engine", "host copy() 64KiB 2 goroutines / 1",
		"descriptors/s through a mapped vfio-user portal", "idle CPU, 2 engines after work", "idle CPU, vfio-user DSA server"} {
		if !strings.Contains(names, w) {
			t.Errorf("no %q metric", w)
		}
	}
}

// BenchmarkMappedPortal: 64-byte MEMMOVEs through a vfio-user server's
// mapped portal page (ns/op per descriptor, portalWindow in flight), as the
// "descriptors/s through a mapped vfio-user portal" row; for profiling.
func BenchmarkMappedPortal(b *testing.B) {
	p, err := newPortalRig()
	if err != nil {
		b.Fatal(err)
	}
	defer p.close()
	seq := 0
	if err := p.run(portalWindow, &seq); err != nil { // warm up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if err := p.run(b.N, &seq); err != nil {
		b.Fatal(err)
	}
}
