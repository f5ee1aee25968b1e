package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"godvm/internal/proc"
	"godvm/vmm/probe"
)

// GuestRun is what one `godvm run` child process did.
type GuestRun struct {
	Wall       time.Duration
	ExitStatus int
	Output     string // console and godvm's own messages
	Trace      Trace
	// Resident memory of the godvm process, guest RAM excluded, sampled while
	// it ran: when the guest agent started (its KTAP header reached the
	// console) and the peak over the whole run.
	VMMKBAtAgent uint64
	VMMKBPeak    uint64
	GuestKBPeak  uint64
}

// Trace is the --boot-trace report of godvm run, read back from its text.
type Trace struct {
	BootTime     time.Duration // 0: the guest never wrote the boot timer
	Wall         time.Duration
	OutsideShare float64 // fraction of vCPU time outside KVM_RUN
	Exits        map[string]uint64
	Emulated     map[string]uint64 // instructions godvm completed, by kind (movdir64b, ...)
}

// TotalExits sums the exits of every reason.
func (t Trace) TotalExits() uint64 {
	var n uint64
	for _, v := range t.Exits {
		n += v
	}
	return n
}

var (
	traceBoot    = regexp.MustCompile(`(?m)^boot-trace: guest agent ready \(boot-timer write\) after (\S+)$`)
	traceWall    = regexp.MustCompile(`(?m)^boot-trace: ran (\S+); vCPU time outside KVM_RUN: ([0-9.]+)%$`)
	traceExits   = regexp.MustCompile(`(?m)^boot-trace: exits: (.*)$`)
	traceEmul    = regexp.MustCompile(`(?m)^boot-trace: emulated instructions: (.*)$`)
	ktapStarted  = regexp.MustCompile(`(?m)^KTAP version 1`)
	dmatestSumRe = regexp.MustCompile(`summary (\d+) tests, (\d+) failures ([0-9.]+) iops ([0-9.]+) KB/s`)
)

// ParseTrace reads the boot-trace lines out of godvm's output.
func ParseTrace(out string) (Trace, error) {
	t := Trace{Exits: map[string]uint64{}, Emulated: map[string]uint64{}}
	m := traceWall.FindStringSubmatch(out)
	if m == nil {
		return t, errors.New("no boot-trace in godvm's output")
	}
	var err error
	if t.Wall, err = time.ParseDuration(m[1]); err != nil {
		return t, fmt.Errorf("boot-trace: bad run time %q", m[1])
	}
	pct, err := strconv.ParseFloat(m[2], 64)
	if err != nil {
		return t, fmt.Errorf("boot-trace: bad share %q", m[2])
	}
	t.OutsideShare = pct / 100
	if m := traceBoot.FindStringSubmatch(out); m != nil {
		if t.BootTime, err = time.ParseDuration(m[1]); err != nil {
			return t, fmt.Errorf("boot-trace: bad boot time %q", m[1])
		}
	}
	if m := traceExits.FindStringSubmatch(out); m != nil {
		if err := parseCounts(m[1], t.Exits); err != nil {
			return t, fmt.Errorf("boot-trace: exits: %v", err)
		}
	}
	if m := traceEmul.FindStringSubmatch(out); m != nil {
		if err := parseCounts(m[1], t.Emulated); err != nil {
			return t, fmt.Errorf("boot-trace: emulated instructions: %v", err)
		}
	}
	return t, nil
}

// parseCounts reads "a=3 b=1" (or "none") into into.
func parseCounts(s string, into map[string]uint64) error {
	if s == "none" {
		return nil
	}
	for _, kv := range strings.Fields(s) {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("bad count %q", kv)
		}
		into[k] = n
	}
	return nil
}

// Dmatest is the result line of the kernel's dmatest.
type Dmatest struct {
	Tests, Failures int
	IOPS, KBps      float64
}

// ParseDmatest sums dmatest's per-thread summary lines.
func ParseDmatest(out string) (Dmatest, bool) {
	var d Dmatest
	ms := dmatestSumRe.FindAllStringSubmatch(out, -1)
	for _, m := range ms {
		t, _ := strconv.Atoi(m[1])
		f, _ := strconv.Atoi(m[2])
		i, _ := strconv.ParseFloat(m[3], 64)
		k, _ := strconv.ParseFloat(m[4], 64)
		d.Tests += t
		d.Failures += f
		d.IOPS += i
		d.KBps += k
	}
	return d, len(ms) > 0
}

// CheckGuest says why guests cannot be booted here (nil: they can).
func CheckGuest(env *Env) error {
	if s := KVMStatus(); s != "available" {
		return errors.New("/dev/kvm " + s)
	}
	if env.Godvm == "" {
		return errors.New("no godvm binary")
	}
	if env.Kernel == "" {
		if env.NoKernel != nil {
			return env.NoKernel
		}
		return errors.New("no test kernel (--kernel, GODVM_TEST_KERNEL, or `make kernel` to build one)")
	}
	if _, err := os.Stat(env.Kernel); err != nil {
		return err
	}
	return nil
}

// hostProbe runs godvm's KVM probe once: which DSA data paths this host
// can give a guest (vmm/probe's CheckDSAPath, as godvm run --dsa-path).
var hostProbe = sync.OnceValues(func() (*probe.Result, error) { return probe.Run(probe.Options{}) })

// checkDSAPath says why this host cannot give a guest DSA data path p.
func checkDSAPath(p probe.DSAPath) error {
	r, err := hostProbe()
	if err != nil {
		return fmt.Errorf("KVM probe: %v", err)
	}
	return r.CheckDSAPath(p)
}

// RunGuest runs `godvm run --boot-trace ARGS...` to completion, sampling the
// child's memory every 100 ms. With a System.map in env, godvm names
// functions in its reports (where the vCPUs were at a timeout).
func RunGuest(ctx context.Context, env *Env, limit time.Duration, args ...string) (*GuestRun, error) {
	// godvm's own --timeout goes first: it reports where the vCPUs were.
	ctx, cancel := context.WithTimeout(ctx, limit+30*time.Second)
	defer cancel()
	full := []string{"run", "--boot-trace", "--timeout", limit.String()}
	if env.SystemMap != "" {
		full = append(full, "--system-map", env.SystemMap)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, env.Godvm, full...)
	var out proc.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &GuestRun{}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case err = <-done:
			break loop
		case <-tick.C:
			r, rerr := ReadRSS(cmd.Process.Pid)
			if rerr != nil {
				continue
			}
			g.VMMKBPeak = max(g.VMMKBPeak, r.VMMKB)
			g.GuestKBPeak = max(g.GuestKBPeak, r.GuestKB)
			if g.VMMKBAtAgent == 0 && ktapStarted.MatchString(out.String()) {
				g.VMMKBAtAgent = r.VMMKB
			}
		}
	}
	g.Wall = time.Since(t0)
	g.Output = out.String()
	if g.ExitStatus, err = proc.ExitStatus(err); err != nil {
		return g, err
	}
	if g.ExitStatus != 0 {
		return g, fmt.Errorf("godvm run exited %d: %s", g.ExitStatus, proc.TailBytes(g.Output, 300))
	}
	g.Trace, err = ParseTrace(g.Output)
	return g, err
}
