package bench

import (
	"context"
	"testing"
)

// The mediator scenario runs here (in-process clients, no guest) and
// yields a positive rate for one client alone, for two at once and for
// each of the two.
func TestDSAMediatorQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	rep := Run(context.Background(), []Scenario{DSAMediatorScenario()}, &Env{Quick: true}, Options{Runs: 1})
	s := rep.Scenarios[0]
	if s.Status != StatusOK {
		t.Fatalf("%s: %s", s.Status, s.Reason)
	}
	want := map[string]bool{
		"mediated DSA, one client alone: descriptors/s (memmove 64 B)":          true,
		"mediated DSA, two clients sharing one parent: aggregate descriptors/s": true,
		"mediated DSA, two clients: client A descriptors/s":                     true,
		"mediated DSA, two clients: client B descriptors/s":                     true,
		"mediated DSA, aggregate two clients / one alone":                       true,
	}
	for _, m := range s.Metrics {
		if len(m.Values) != 1 || m.Median <= 0 {
			t.Errorf("%s: %v", m.Name, m.Values)
		}
		t.Logf("%s: %.0f %s", m.Name, m.Median, m.Unit)
		delete(want, m.Name)
	}
	if len(want) > 0 {
		t.Errorf("missing metrics: %v", want)
	}
}
