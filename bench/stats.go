// Package bench is godvm's benchmarking harness: named scenarios run a number
// of times, their measurements summarised (median, min, max), printed as a
// table, written as JSON and drawn as a PNG chart. Scenarios that cannot run
// on a host say why instead of reporting numbers.
package bench

import (
	"fmt"
	"math"
	"sort"
)

// Metric is one measured quantity across the runs of a scenario.
type Metric struct {
	Name   string    `json:"name"`
	Unit   string    `json:"unit"`
	Values []float64 `json:"values"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

// Summarise fills Median, Min and Max from Values.
func (m *Metric) Summarise() {
	if len(m.Values) == 0 {
		m.Median, m.Min, m.Max = math.NaN(), math.NaN(), math.NaN()
		return
	}
	s := append([]float64(nil), m.Values...)
	sort.Float64s(s)
	m.Min, m.Max = s[0], s[len(s)-1]
	if n := len(s); n%2 == 1 {
		m.Median = s[n/2]
	} else {
		m.Median = (s[n/2-1] + s[n/2]) / 2
	}
}

// Recorder collects the measurements of one scenario.
type Recorder struct {
	order   []string
	metrics map[string]*Metric
	info    map[string]string
}

func newRecorder() *Recorder {
	return &Recorder{metrics: map[string]*Metric{}, info: map[string]string{}}
}

// Add records one value of a metric. A metric keeps the unit it was first
// recorded with; recording it with another unit is a programming error that
// is reported rather than silently mixed.
func (r *Recorder) Add(name, unit string, v float64) error {
	m, ok := r.metrics[name]
	if !ok {
		m = &Metric{Name: name, Unit: unit}
		r.metrics[name] = m
		r.order = append(r.order, name)
	}
	if m.Unit != unit {
		return fmt.Errorf("bench: metric %q recorded in %s and %s", name, m.Unit, unit)
	}
	m.Values = append(m.Values, v)
	return nil
}

// Info attaches a fact about the run (a peer's error text, a device shape).
func (r *Recorder) Info(key, value string) { r.info[key] = value }

func (r *Recorder) metricsList() []Metric {
	out := make([]Metric, 0, len(r.order))
	for _, n := range r.order {
		m := *r.metrics[n]
		m.Summarise()
		out = append(out, m)
	}
	return out
}
