package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testScenarios() []Scenario {
	n := 0
	return []Scenario{
		{Name: "good", Description: "counts", Run: func(ctx context.Context, env *Env, r *Recorder) error {
			n++
			r.Add("latency", "ms", float64(n))
			r.Add("rate", "MB/s", float64(100*n))
			r.Info("shape", "x")
			return nil
		}},
		{Name: "nohost", Check: func(*Env) error { return errors.New("no /dev/kvm") }},
		{Name: "broken", Run: func(ctx context.Context, env *Env, r *Recorder) error { return errors.New("boom") }},
		{Name: "peer", Run: func(ctx context.Context, env *Env, r *Recorder) error {
			return Unavailable("qemu: Could not access KVM kernel module")
		}},
	}
}

func TestRunReport(t *testing.T) {
	var prog bytes.Buffer
	rep := Run(context.Background(), testScenarios(), &Env{Quick: true}, Options{Runs: 3, Progress: &prog})
	if len(rep.Scenarios) != 4 {
		t.Fatalf("%d scenarios", len(rep.Scenarios))
	}
	g := rep.Scenarios[0]
	if g.Status != StatusOK || g.Runs != 3 || len(g.Metrics) != 2 || g.Metrics[0].Median != 2 || g.Metrics[1].Max != 300 {
		t.Fatalf("good: %+v", g)
	}
	if s := rep.Scenarios[1]; s.Status != StatusUnavailable || s.Reason != "no /dev/kvm" || s.Runs != 0 {
		t.Fatalf("nohost: %+v", s)
	}
	if s := rep.Scenarios[2]; s.Status != StatusFailed || s.Reason != "boom" {
		t.Fatalf("broken: %+v", s)
	}
	if s := rep.Scenarios[3]; s.Status != StatusUnavailable || !strings.Contains(s.Reason, "KVM") {
		t.Fatalf("peer: %+v", s)
	}
	if c := strings.Count(prog.String(), "\n"); c != 6 {
		t.Fatalf("progress lines %d:\n%s", c, prog.String())
	}

	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"metrics": []`) {
		t.Error("a scenario that measured nothing has no empty metrics list in the JSON")
	}
	if back.Schema != SchemaVersion || back.Scenarios[0].Metrics[1].Unit != "MB/s" || back.Host.CPUs < 1 {
		t.Fatalf("round trip: %+v", back)
	}

	var tab bytes.Buffer
	if err := rep.WriteTable(&tab); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"latency", "MB/s", "unavailable: no /dev/kvm", "failed: boom"} {
		if !strings.Contains(tab.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tab.String())
		}
	}

	png := filepath.Join(t.TempDir(), "b.png")
	if err := rep.Plot(png); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(png)
	if err != nil || len(b) < 1000 || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("png: %d bytes, %v", len(b), err)
	}
}

func TestSelect(t *testing.T) {
	all := testScenarios()
	s, err := Select(all, []string{"peer", "good"})
	if err != nil || len(s) != 2 || s[0].Name != "peer" {
		t.Fatal(s, err)
	}
	if _, err := Select(all, []string{"nope"}); err == nil || !strings.Contains(err.Error(), "good, nohost") {
		t.Fatal(err)
	}
}

func TestPlotNothing(t *testing.T) {
	rep := &Report{Scenarios: []ScenarioResult{{Name: "x", Status: StatusUnavailable}}}
	if err := rep.Plot(filepath.Join(t.TempDir(), "p.png")); err == nil {
		t.Fatal("empty chart drawn")
	}
}
