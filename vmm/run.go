package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"godvm/vmm/legacy"
)

// Reason is why a machine stopped.
type Reason int

const (
	ReasonPowerOff    Reason = iota + 1 // ACPI S5 or KVM shutdown event
	ReasonReset                         // the guest reset the machine
	ReasonPanic                         // pvpanic or KVM crash event
	ReasonDebugExit                     // the guest wrote its result to the debug-exit port
	ReasonTimeout                       // Config.Timeout passed
	ReasonInterrupted                   // the context was cancelled (Ctrl-C)
	ReasonError                         // a VMM failure or an unrecoverable guest state
)

func (r Reason) String() string {
	switch r {
	case ReasonPowerOff:
		return "poweroff"
	case ReasonReset:
		return "reset"
	case ReasonPanic:
		return "panic"
	case ReasonDebugExit:
		return "debug-exit"
	case ReasonTimeout:
		return "timeout"
	case ReasonInterrupted:
		return "interrupted"
	case ReasonError:
		return "error"
	}
	return "unknown"
}

// Exit statuses of godvm (team protocol).
const (
	ExitOK      = 0 // powered off, reset, or the guest reported pass
	ExitError   = 1 // godvm's own error: bad input, unhandled exit, VMM failure
	ExitPanic   = 2 // the guest panicked
	ExitFailure = 3 // the guest reported failure (debug-exit value != 0)
	ExitTimeout = 4 // --timeout expired
)

// VCPUState is where a vCPU was when the machine stopped.
type VCPUState struct {
	ID     int
	RIP    uint64
	Valid  bool // RIP could be read
	Symbol string
	Exits  uint64
	// Recent says where the vCPU's last RIP samples fell ("stuck in
	// default_idle ..."); empty without sampling.
	Recent string
}

// Result is how a run ended.
type Result struct {
	Reason Reason
	Code   uint32 // the debug-exit value (ReasonDebugExit)
	Err    error  // ReasonError: what failed
	// BootTime is the time from godvm's start to the guest's first
	// boot-timer write; BootTimeOK is false when it never wrote.
	BootTime   time.Duration
	BootTimeOK bool
	Wall       time.Duration // time in Run
	VCPUs      []VCPUState
	Trace      *Trace // non-nil with Config.BootTrace
}

// ExitStatus maps the result to godvm's exit status.
func (r Result) ExitStatus() int {
	switch r.Reason {
	case ReasonPowerOff, ReasonReset:
		return ExitOK
	case ReasonDebugExit:
		if r.Code == 0 {
			return ExitOK
		}
		return ExitFailure
	case ReasonPanic:
		return ExitPanic
	case ReasonTimeout:
		return ExitTimeout
	}
	return ExitError
}

// Summary is a one-line description for the user.
func (r Result) Summary() string {
	switch r.Reason {
	case ReasonDebugExit:
		if r.Code == 0 {
			return "guest reported success (debug-exit 0)"
		}
		return fmt.Sprintf("guest reported failure: debug-exit value %d (%#x)", r.Code, r.Code)
	case ReasonPanic:
		return "guest kernel panicked" + r.where()
	case ReasonPowerOff:
		return "guest powered off"
	case ReasonReset:
		return "guest reset the machine"
	case ReasonTimeout:
		return "timeout: the guest stopped making progress or did not finish in time" + r.where() + r.bootTimer()
	case ReasonInterrupted:
		return "interrupted" + r.where()
	case ReasonError:
		if r.Err != nil {
			return r.Err.Error()
		}
		return "VMM error"
	}
	return "unknown"
}

func (r Result) bootTimer() string {
	if r.BootTimeOK {
		return fmt.Sprintf("; the guest agent started after %v", r.BootTime.Round(time.Millisecond))
	}
	return "; the guest agent never started (no boot-timer write)"
}

func (r Result) where() string {
	var parts []string
	for _, v := range r.VCPUs {
		if !v.Valid {
			continue
		}
		s := fmt.Sprintf("vCPU %d at RIP %#x", v.ID, v.RIP)
		if v.Symbol != "" {
			s += " (" + v.Symbol + ")"
		}
		if v.Recent != "" {
			s += ", " + v.Recent
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, ", ")
}

// guestStop is the devices' Stopper: the first request wins.
func (m *Machine) guestStop(reason legacy.StopReason, code uint32) {
	r := Result{Code: code}
	switch reason {
	case legacy.StopPowerOff:
		r.Reason = ReasonPowerOff
	case legacy.StopReset:
		r.Reason = ReasonReset
	case legacy.StopPanic:
		r.Reason = ReasonPanic
	case legacy.StopDebugExit:
		r.Reason = ReasonDebugExit
	default:
		r.Reason = ReasonError
		r.Err = fmt.Errorf("unknown stop request %d", reason)
	}
	m.stop(r)
}

// stop ends the run with r unless it has already ended, and kicks every
// vCPU out of KVM_RUN.
func (m *Machine) stop(r Result) {
	m.stopMu.Lock()
	if m.stopped.Load() {
		m.stopMu.Unlock()
		return
	}
	m.result = r
	m.stopped.Store(true)
	close(m.stopCh)
	m.stopMu.Unlock()
	for _, v := range m.vcpus {
		m.kick(v)
	}
}

// vcpuGrace bounds how long Run waits for kicked vCPU threads.
const vcpuGrace = 5 * time.Second

// Run starts the vCPUs and the console and returns when the guest stops,
// the timeout expires or ctx is cancelled. The error is non-nil exactly when
// the result's Reason is ReasonError. A Machine runs once.
func (m *Machine) Run(ctx context.Context) (Result, error) {
	if len(m.vcpus) == 0 {
		return Result{Reason: ReasonError, Err: errors.New("machine not built")}, errors.New("vmm: machine not built")
	}
	installKickHandler()
	start := time.Now()
	restore := m.startConsoleInput()
	defer restore()

	var wg sync.WaitGroup
	var errOnce sync.Once
	for _, v := range m.vcpus {
		wg.Add(1)
		go func(v *vcpu) {
			defer wg.Done()
			if err := m.runVCPU(v); err != nil {
				errOnce.Do(func() { m.stop(Result{Reason: ReasonError, Err: err}) })
			}
		}(v)
	}
	switch {
	case m.cfg.BootTrace:
		m.startSampler(traceSamplePeriod)
	case m.cfg.Timeout > 0:
		m.startSampler(timeoutSamplePeriod)
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	var timeout <-chan time.Time
	if m.cfg.Timeout > 0 {
		t := time.NewTimer(m.cfg.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-m.stopCh:
	case <-allDone:
		m.stop(Result{Reason: ReasonError, Err: errors.New("all vCPUs stopped without a stop request")})
	case <-timeout:
		m.stop(Result{Reason: ReasonTimeout})
	case <-ctx.Done():
		m.stop(Result{Reason: ReasonInterrupted})
	}
	select {
	case <-allDone:
	case <-time.After(vcpuGrace):
		m.cfg.Log.Warn("vCPU threads did not stop in time", "grace", vcpuGrace)
	}

	m.stopMu.Lock()
	r := m.result
	m.stopMu.Unlock()
	r.Wall = time.Since(start)
	r.BootTime, r.BootTimeOK = m.bootTimer.Elapsed()
	for _, v := range m.vcpus {
		s := VCPUState{ID: v.id, RIP: v.rip, Valid: v.ripOK, Exits: v.exits, Recent: m.recent(v)}
		if v.ripOK {
			s.Symbol, _ = m.syms.Lookup(v.rip)
		}
		r.VCPUs = append(r.VCPUs, s)
	}
	if m.cfg.BootTrace {
		r.Trace = m.trace(r.Wall)
	}
	if r.Reason == ReasonError {
		if r.Err == nil {
			r.Err = errors.New("VMM error")
		}
		return r, r.Err
	}
	return r, nil
}

// startConsoleInput feeds stdin to the serial port, in raw mode when stdin
// is a terminal. The returned function restores the terminal.
func (m *Machine) startConsoleInput() func() {
	in := m.cfg.Stdin
	if in == nil {
		return func() {}
	}
	restore := func() {}
	fd := int(in.Fd())
	if legacy.IsTerminal(fd) {
		if r, err := legacy.MakeRaw(fd); err == nil {
			restore = func() { _ = r() }
		} else {
			m.cfg.Log.Debug("raw terminal mode", "err", err)
		}
	}
	go pumpInput(in, m.serial, m.stopCh)
	return restore
}

// pumpInput copies r into the UART, waiting while its buffer is full. It
// ends at EOF, on a read error, or when stop closes (after the next read).
func pumpInput(r io.Reader, s *legacy.Serial, stop <-chan struct{}) {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		p := buf[:n]
		for len(p) > 0 {
			select {
			case <-stop:
				return
			default:
			}
			k := s.Input(p)
			p = p[k:]
			if len(p) > 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if err != nil {
			return
		}
	}
}
