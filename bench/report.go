package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the report as an aligned table.
func (r *Report) WriteTable(w io.Writer) error {
	kvm := r.Host.KVM
	if r.Host.KVMImpl != "" {
		kvm += " (" + r.Host.KVMImpl + ")"
	}
	fmt.Fprintf(w, "godvm bench  %s  host %s (%d CPUs, %s), kernel %s, KVM %s, runs %d%s\n",
		r.Started.Format("2006-01-02 15:04 UTC"), r.Host.Hostname, r.Host.CPUs, r.Host.CPUModel,
		r.Host.Kernel, kvm, r.Runs, map[bool]string{true: " (quick)"}[r.Quick])
	if r.Kernel != "" {
		fmt.Fprintf(w, "test kernel: %s\n", r.Kernel)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\tunit\tmedian\tmin\tmax\truns\t")
	for _, s := range r.Scenarios {
		if s.Status != StatusOK {
			fmt.Fprintf(tw, "%s\t%s: %s\t\t\t\t\t\t\n", s.Name, s.Status, oneLine(s.Reason))
		}
		for _, m := range s.Metrics {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", s.Name, m.Name, m.Unit, num(m.Median), num(m.Min), num(m.Max), len(m.Values))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Scenarios {
		for k, v := range s.Info {
			fmt.Fprintf(w, "%s: %s: %s\n", s.Name, k, oneLine(v))
		}
	}
	return nil
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", " | ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == math.Trunc(v) && math.Abs(v) < 1e12:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// WriteJSON writes the report as indented JSON. Summary fields of metrics
// without values (NaN) are written as 0 with an empty values list.
func (r *Report) WriteJSON(w io.Writer) error {
	c := *r
	c.Scenarios = make([]ScenarioResult, len(r.Scenarios))
	for i, s := range r.Scenarios {
		s.Metrics = append([]Metric{}, s.Metrics...) // [] rather than null when nothing was measured
		for j := range s.Metrics {
			m := &s.Metrics[j]
			for _, p := range []*float64{&m.Median, &m.Min, &m.Max} {
				if math.IsNaN(*p) || math.IsInf(*p, 0) {
					*p = 0
				}
			}
		}
		c.Scenarios[i] = s
	}
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(&c)
}
