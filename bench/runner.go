package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Env is what scenarios may use: the godvm binary, the test kernel, and the
// run mode.
type Env struct {
	Godvm     string // path of the godvm binary (for scenarios that boot guests)
	Kernel    string // test kernel (vmlinux); "" when none was found
	NoKernel  error  // why Kernel is "" (internal/kernelcache's error)
	KernelWhy string // which test kernel and how it was found, for the report
	SystemMap string // the test kernel's System.map ("": none), for godvm run's reports
	BzImage   string // test kernel as bzImage (for peers that need one)
	Initrd    string
	Quick     bool
}

// Scenario is one named measurement.
type Scenario struct {
	Name        string
	Description string
	// Check returns why the scenario cannot run here (nil: it can).
	Check func(env *Env) error
	// Run performs one run, recording its measurements.
	Run func(ctx context.Context, env *Env, r *Recorder) error
}

// Status of a scenario in a report.
const (
	StatusOK          = "ok"
	StatusUnavailable = "unavailable" // cannot run on this host; Reason says why
	StatusFailed      = "failed"      // tried and failed; Reason has the error
)

// ScenarioResult is one scenario's outcome.
type ScenarioResult struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Status      string            `json:"status"`
	Reason      string            `json:"reason,omitempty"`
	Runs        int               `json:"runs"`
	Seconds     float64           `json:"seconds"`
	Metrics     []Metric          `json:"metrics"`
	Info        map[string]string `json:"info,omitempty"`
}

// Host describes the machine the numbers come from.
type Host struct {
	Hostname string `json:"hostname"`
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	KVM      string `json:"kvm"`
	KVMImpl  string `json:"kvm_module,omitempty"` // kvm_intel, kvm_amd, kvm_pvm: which module serves /dev/kvm
	GoVer    string `json:"go"`
}

// Report is a whole bench run.
type Report struct {
	Schema    int              `json:"schema"`
	Started   time.Time        `json:"started"`
	Quick     bool             `json:"quick"`
	Runs      int              `json:"runs"`
	Host      Host             `json:"host"`
	Kernel    string           `json:"test_kernel,omitempty"` // the guest scenarios' kernel and how it was found
	Scenarios []ScenarioResult `json:"scenarios"`
}

// SchemaVersion is the JSON report's version.
const SchemaVersion = 1

// Options choose what to run.
type Options struct {
	Runs     int      // runs per scenario (>= 1)
	Only     []string // scenario names; empty: all
	Progress io.Writer
}

// Select returns the scenarios named in only (all when empty), in the given
// order, or an error naming an unknown scenario.
func Select(all []Scenario, only []string) ([]Scenario, error) {
	if len(only) == 0 {
		return all, nil
	}
	var out []Scenario
	for _, n := range only {
		i := slices.IndexFunc(all, func(s Scenario) bool { return s.Name == n })
		if i < 0 {
			names := make([]string, len(all))
			for j, s := range all {
				names[j] = s.Name
			}
			return nil, fmt.Errorf("unknown scenario %q (have: %s)", n, strings.Join(names, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// Run runs the scenarios and returns the report. A scenario that fails does
// not stop the others; it is reported as failed with its error.
func Run(ctx context.Context, scenarios []Scenario, env *Env, opt Options) *Report {
	if opt.Runs < 1 {
		opt.Runs = 1
	}
	prog := opt.Progress
	if prog == nil {
		prog = io.Discard
	}
	rep := &Report{Schema: SchemaVersion, Started: time.Now().UTC(), Quick: env.Quick, Runs: opt.Runs, Host: DescribeHost(), Kernel: env.KernelWhy}
	for _, s := range scenarios {
		res := ScenarioResult{Name: s.Name, Description: s.Description, Status: StatusOK}
		start := time.Now()
		if s.Check != nil {
			if err := s.Check(env); err != nil {
				res.Status, res.Reason = StatusUnavailable, err.Error()
				fmt.Fprintf(prog, "%-11s unavailable: %v\n", s.Name, err)
				rep.Scenarios = append(rep.Scenarios, res)
				continue
			}
		}
		rec := newRecorder()
		for i := 1; i <= opt.Runs; i++ {
			t0 := time.Now()
			err := s.Run(ctx, env, rec)
			if err != nil {
				res.Status, res.Reason = StatusFailed, err.Error()
				var un *UnavailableError
				if errors.As(err, &un) {
					res.Status = StatusUnavailable
				}
				fmt.Fprintf(prog, "%-11s run %d/%d %s: %v\n", s.Name, i, opt.Runs, res.Status, err)
				break
			}
			res.Runs++
			fmt.Fprintf(prog, "%-11s run %d/%d done in %.2fs\n", s.Name, i, opt.Runs, time.Since(t0).Seconds())
		}
		res.Metrics = rec.metricsList()
		if len(rec.info) > 0 {
			res.Info = rec.info
		}
		res.Seconds = time.Since(start).Seconds()
		rep.Scenarios = append(rep.Scenarios, res)
	}
	return rep
}

// UnavailableError marks a run that found the host cannot do it (as opposed
// to a failure of godvm).
type UnavailableError struct{ Why string }

func (e *UnavailableError) Error() string { return e.Why }

// Unavailable returns an *UnavailableError.
func Unavailable(format string, a ...any) error {
	return &UnavailableError{Why: fmt.Sprintf(format, a...)}
}

// DescribeHost reads what identifies this machine.
func DescribeHost() Host {
	h := Host{CPUs: runtime.NumCPU(), GoVer: runtime.Version()}
	h.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	h.KVM = KVMStatus()
	h.KVMImpl = kvmModule("/sys/module")
	return h
}

// kvmModule names the loaded KVM vendor modules under sysfs ("" if none).
func kvmModule(sys string) string {
	var mods []string
	for _, m := range []string{"kvm_intel", "kvm_amd", "kvm_pvm"} {
		if _, err := os.Stat(sys + "/" + m); err == nil {
			mods = append(mods, m)
		}
	}
	return strings.Join(mods, ",")
}

// KVMStatus says whether /dev/kvm is usable here, in words.
func KVMStatus() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "unavailable: " + err.Error()
	}
	f.Close()
	return "available"
}
