package vmm

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"godvm/internal/sandbox"
	"godvm/kvm"
	"godvm/vmm/layout"
	"godvm/vmm/x86"
)

// kickSignal interrupts a vCPU thread's KVM_RUN (EINTR). godvm catches it so
// that the default action (terminate) never applies.
const kickSignal = unix.SIGUSR2

var kickOnce sync.Once

func installKickHandler() {
	kickOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, kickSignal)
		go func() {
			for range ch { // drain; the signal's only job is the EINTR
			}
		}()
	})
}

type vcpu struct {
	id  int
	cpu *kvm.VCPU
	tid atomic.Int32 // OS thread running KVM_RUN; 0 before it starts

	// RIP sampling (sampler.go): the sampler sets sampleReq and kicks;
	// the vCPU thread records its RIP. samples is read after Run.
	sampleReq atomic.Bool
	samples   []uint64

	// last state, captured when the vCPU stops
	rip    uint64
	ripOK  bool
	exits  uint64
	outNs  int64 // time outside KVM_RUN while running (boot trace)
	ranFor time.Duration
}

func (m *Machine) createVCPUs() error {
	base, err := m.sys.SupportedCPUID()
	if err != nil {
		return fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	for i := 0; i < m.cfg.CPUs; i++ {
		c, err := m.vm.CreateVCPU(i)
		if err != nil {
			return fmt.Errorf("create vCPU %d: %w", i, err)
		}
		v := &vcpu{id: i, cpu: c}
		m.vcpus = append(m.vcpus, v)
		if err := m.setupVCPU(v, base); err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
	}
	return nil
}

func (m *Machine) setupVCPU(v *vcpu, base []x86.CPUIDEntry) error {
	if err := v.cpu.SetCPUID2(x86.CPUIDForVCPU(base, v.id, m.cfg.CPUs)); err != nil {
		return err
	}
	// One at a time: KVM stops at the first MSR it refuses, and a host may
	// refuse one (MTRRs on some nested KVMs) without harm to the guest.
	for _, e := range x86.BootMSRs() {
		if err := v.cpu.SetMSRs([]kvm.MSREntry{{Index: e.Index, Data: e.Value}}); err != nil {
			m.cfg.Log.Debug("MSR not set", "vcpu", v.id, "msr", fmt.Sprintf("%#x", e.Index), "err", err)
		}
	}
	lapic, err := v.cpu.LAPIC()
	if err != nil {
		return err
	}
	x86.SetLINT(lapic.Regs[:])
	if err := v.cpu.SetLAPIC(&lapic); err != nil {
		return err
	}
	if v.id != 0 {
		return nil // APs wait for INIT/SIPI from the BSP
	}
	fpu := kvm.FPU{FCW: x86.FCW, MXCSR: x86.MXCSR}
	if err := v.cpu.SetFPU(fpu); err != nil {
		return err
	}
	sr, err := v.cpu.Sregs()
	if err != nil {
		return err
	}
	b := x86.BootSregs()
	sr.CS, sr.DS, sr.ES, sr.FS, sr.GS, sr.SS = b.CS, b.DS, b.ES, b.FS, b.GS, b.SS
	sr.TR, sr.LDT = b.TR, b.LDT
	sr.GDT, sr.IDT = b.GDT, b.IDT
	sr.CR0, sr.CR3, sr.CR4, sr.EFER = b.CR0, b.CR3, b.CR4, b.EFER
	if err := v.cpu.SetSregs(sr); err != nil {
		return err
	}
	r := x86.BootRegs(m.kernel.Entry, layout.ZeroPage)
	return v.cpu.SetRegs(kvm.Regs{RIP: r.RIP, RSP: r.RSP, RBP: r.RBP, RSI: r.RSI, RFLAGS: r.RFLAGS})
}

// kick makes the vCPU leave KVM_RUN soon: immediate_exit covers the window
// before it enters, the signal the time inside.
func (m *Machine) kick(v *vcpu) {
	v.cpu.RunData().SetImmediateExit(true)
	if tid := v.tid.Load(); tid != 0 {
		_ = unix.Tgkill(os.Getpid(), int(tid), kickSignal)
	}
}

// runVCPU is one vCPU thread: KVM_RUN, dispatch the exit, repeat until the
// machine stops. It returns a non-nil error only for VMM failures.
func (m *Machine) runVCPU(v *vcpu) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Under godvm's seccomp filters the thread takes the vCPU filter and
	// stays locked (the thread ends with this goroutine).
	if err := sandbox.LockThread(sandbox.KindVCPU); err != nil {
		return fmt.Errorf("vCPU %d: %w", v.id, err)
	}
	v.tid.Store(int32(unix.Gettid()))
	defer v.tid.Store(0)
	run := v.cpu.RunData()
	trace := m.cfg.BootTrace
	start := time.Now()
	defer func() { v.ranFor = time.Since(start) }()
	var out time.Time
	for {
		if m.stopped.Load() {
			v.capture()
			return nil
		}
		if trace && !out.IsZero() {
			v.outNs += int64(time.Since(out))
		}
		err := v.cpu.Run()
		if trace {
			out = time.Now()
		}
		if err != nil {
			if kvm.IsRetry(err) {
				if v.sampleReq.Swap(false) {
					v.sample(run)
				}
				continue
			}
			v.capture()
			return fmt.Errorf("vCPU %d: %w", v.id, err)
		}
		v.exits++
		reason := run.ExitReason()
		m.stats.countExit(reason)
		if err := m.handleExit(v, run, reason); err != nil {
			v.capture()
			return err
		}
	}
}

// capture records the vCPU's RIP for reports.
func (v *vcpu) capture() {
	if r, err := v.cpu.Regs(); err == nil {
		v.rip, v.ripOK = r.RIP, true
	}
}
