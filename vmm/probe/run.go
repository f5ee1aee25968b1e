package probe

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"godvm/addr"
	"godvm/kvm"
)

// Options tune a probe run.
type Options struct {
	// Timeout bounds each test guest (default 250 ms; they take a few ms).
	Timeout time.Duration
}

// Run opens /dev/kvm and probes it.
func Run(opts Options) (*Result, error) {
	sys, err := kvm.Open()
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	return RunWith(sys, opts)
}

// capNames are the capabilities reported in Result.Capabilities.
var capNames = []struct {
	name string
	cap  kvm.Cap
}{
	{"IRQCHIP", kvm.CapIRQChip}, {"IRQ_ROUTING", kvm.CapIRQRouting}, {"IRQFD", kvm.CapIRQFD},
	{"IRQFD_RESAMPLE", kvm.CapIRQFDResample}, {"IOEVENTFD", kvm.CapIOEventFD}, {"SIGNAL_MSI", kvm.CapSignalMSI},
	{"PIT2", kvm.CapPIT2}, {"SPLIT_IRQCHIP", kvm.CapSplitIRQChip}, {"X2APIC_API", kvm.CapX2APICAPI},
	{"READONLY_MEM", kvm.CapReadonlyMem}, {"NR_MEMSLOTS", kvm.CapNRMemSlots}, {"MAX_VCPUS", kvm.CapMaxVCPUs},
	{"DEVICE_CTRL", kvm.CapDeviceCtrl}, {"IMMEDIATE_EXIT", kvm.CapImmediateExit},
	{"EXIT_ON_EMULATION_FAILURE", kvm.CapExitOnEmulationFailure}, {"VCPU_EVENTS", kvm.CapVCPUEvents},
}

// prober holds what every test guest shares.
type prober struct {
	sys      *kvm.System
	opts     Options
	mem      []byte
	sup      []kvm.CPUIDEntry2
	feat     features
	exitOnEF bool
	tid      int
}

// RunWith probes through an open /dev/kvm. It runs every test guest on the
// calling goroutine's OS thread.
func RunWith(sys *kvm.System, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Timeout <= 0 {
		opts.Timeout = 250 * time.Millisecond
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	res := &Result{Capabilities: map[string]int{}}
	v, err := sys.APIVersion()
	if err != nil {
		return nil, err
	}
	res.APIVersion = v
	for _, c := range capNames {
		n, err := sys.CheckExtension(c.cap)
		if err != nil {
			return nil, err
		}
		res.Capabilities[c.name] = n
	}
	sup, err := sys.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	mem, err := unix.Mmap(-1, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("probe: guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	p := &prober{sys: sys, opts: opts, mem: mem, sup: sup, feat: hostFeatures(sup),
		exitOnEF: res.Capabilities["EXIT_ON_EMULATION_FAILURE"] != 0, tid: unix.Gettid()}

	res.Instructions = p.batch(insnTests)
	res.CPUID = p.cpuid()
	res.UserSpaceWorks, res.UserSpace = p.syscall()
	res.Elapsed = time.Since(start)
	return res, nil
}

// guest is one test guest's set-up.
type guest struct {
	code   []byte // at codeAddr (CPL0) unless user
	user   bool   // start at CPL3 in user code
	cpuid  []kvm.CPUIDEntry2
	cr4    uint64
	regs   func(*kvm.Regs)
	msrs   []kvm.MSREntry
	xcr0   uint64 // set with KVM_SET_XCRS when not 0
	values int    // port-0xf3 reports to collect before the final exit

	// For live tests of godvm's emulator (emulate_live_test.go): patch
	// edits the image after writeImage; onExit sees every exit first and
	// returns true to run the vCPU again.
	patch  func(mem []byte)
	onExit func(cpu *kvm.VCPU, run *kvm.Run) (resume bool, err error)
}

// exit is how a test guest ended.
type exit struct {
	reason kvm.ExitReason
	io     kvm.IOExit
	data   []byte
	ie     kvm.InternalError
	fail   uint64
	regs   kvm.Regs
	sregs  kvm.Sregs
	values []uint32
	frame  []byte // top of the stack at an exception stub
	timed  bool
}

// newVM creates a VM with the probe's memory in slot 0, set up as every
// probe guest needs it.
func (p *prober) newVM() (*kvm.VM, error) {
	vm, err := p.sys.CreateVM()
	if err != nil {
		return nil, err
	}
	// Intel without unrestricted guest needs these; elsewhere harmless.
	_ = vm.SetTSSAddr(0xfffbd000)
	_ = vm.SetIdentityMapAddr(0xfffbc000)
	if p.exitOnEF {
		_ = vm.EnableCap(kvm.CapExitOnEmulationFailure, 0, 1)
	}
	if err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{Slot: 0, MemorySize: memSize,
		UserspaceAddr: addr.Host(p.mem)}); err != nil {
		vm.Close()
		return nil, err
	}
	return vm, nil
}

// runGuest creates a VM with the probe's memory, one vCPU set up as g
// says, and runs it until it reports or stops.
func (p *prober) runGuest(g guest) (*exit, error) {
	writeImage(p.mem, g.user)
	copy(p.mem[codeAddr:], g.code)
	copy(p.mem[codeAddr+len(g.code):], doneSeq)
	if g.patch != nil {
		g.patch(p.mem)
	}

	vm, err := p.newVM()
	if err != nil {
		return nil, err
	}
	defer vm.Close()
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		return nil, err
	}
	defer cpu.Close()
	cid := g.cpuid
	if cid == nil {
		cid = p.sup
	}
	if err := cpu.SetCPUID2(cid); err != nil {
		return nil, err
	}
	base, err := cpu.Sregs()
	if err != nil {
		return nil, err
	}
	if err := cpu.SetSregs(sregs(base, g.user, g.cr4)); err != nil {
		return nil, err
	}
	r := kvm.Regs{RIP: codeAddr, RSP: kernelStack, RFLAGS: 2}
	if g.user {
		r.RIP, r.RSP = userCodeAddr, userStack
	}
	if g.regs != nil {
		g.regs(&r)
	}
	if err := cpu.SetRegs(r); err != nil {
		return nil, err
	}
	if len(g.msrs) > 0 {
		if err := cpu.SetMSRs(g.msrs); err != nil {
			return nil, err
		}
	}
	if g.xcr0 != 0 {
		if err := cpu.SetXCR0(g.xcr0); err != nil {
			return nil, fmt.Errorf("cannot enable AVX state (XCR0 %#x): %w", g.xcr0, err)
		}
	}
	return p.loop(cpu, g.values, g.onExit)
}

// loop runs the vCPU until a terminal exit, with a watchdog that kicks it
// (immediate_exit plus a signal to this thread) after the timeout.
func (p *prober) loop(cpu *kvm.VCPU, values int, onExit func(*kvm.VCPU, *kvm.Run) (bool, error)) (*exit, error) {
	run := cpu.RunData()
	var timedOut atomic.Bool
	pid := unix.Getpid()
	// The watchdog must never touch kvm_run after the caller unmaps it:
	// done (under mu) tells a late timer to do nothing.
	var mu sync.Mutex
	done := false
	w := time.AfterFunc(p.opts.Timeout, func() {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		timedOut.Store(true)
		run.SetImmediateExit(true)
		_ = unix.Tgkill(pid, p.tid, unix.SIGURG) // Go's runtime ignores stray SIGURGs
	})
	defer func() {
		w.Stop()
		mu.Lock()
		done = true
		mu.Unlock()
	}()
	ex := &exit{}
	for {
		err := cpu.Run()
		if kvm.IsRetry(err) {
			if timedOut.Load() {
				run.SetImmediateExit(false)
				ex.timed = true
				return ex, nil
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		ex.reason = run.ExitReason()
		if onExit != nil {
			resume, err := onExit(cpu, run)
			if err != nil {
				return nil, err
			}
			if resume {
				continue
			}
		}
		if ex.reason == kvm.ExitIO {
			ex.io = run.IO()
			d, err := run.IOData()
			if err != nil {
				return nil, err
			}
			ex.data = append([]byte(nil), d...)
			if ex.io.Port == portValue && ex.io.Direction == kvm.IODirOut && len(ex.values) < values && len(d) >= 4 {
				ex.values = append(ex.values, binary.LittleEndian.Uint32(d))
				continue
			}
		}
		switch ex.reason {
		case kvm.ExitInternalError:
			ex.ie = run.InternalError()
		case kvm.ExitFailEntry:
			ex.fail, _ = run.FailEntry()
		}
		if ex.regs, err = cpu.Regs(); err != nil {
			return nil, err
		}
		if ex.sregs, err = cpu.Sregs(); err != nil {
			return nil, err
		}
		if sp := ex.regs.RSP; sp < memSize-48 {
			ex.frame = append([]byte(nil), p.mem[sp:sp+48]...)
		}
		return ex, nil
	}
}

// vectorNames for exception reports.
var vectorNames = map[int]string{0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
	8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM"}

func hasErrorCode(v int) bool {
	switch v {
	case 8, 10, 11, 12, 13, 14, 17, 21, 29, 30:
		return true
	}
	return false
}

// describeException reads the interrupt frame the stub left on the stack.
func describeException(ex *exit, vector int) string {
	name := vectorNames[vector]
	if name == "" {
		name = fmt.Sprintf("vector %d", vector)
	}
	f := ex.frame
	if len(f) < 24 {
		return name
	}
	off := 0
	var code uint64
	has := hasErrorCode(vector)
	if has {
		code = binary.LittleEndian.Uint64(f[0:])
		off = 8
	}
	rip := binary.LittleEndian.Uint64(f[off:])
	cs := binary.LittleEndian.Uint64(f[off+8:])
	s := fmt.Sprintf("%s at RIP %#x, CS %#x", name, rip, cs)
	if has {
		s += fmt.Sprintf(", error code %#x", code)
	}
	if vector == 14 {
		s += fmt.Sprintf(", CR2 %#x", ex.sregs.CR2)
	}
	return s
}

// classify turns a CPL0 instruction test's exit into a result.
func classify(name string, code []byte, ex *exit, err error) InsnResult {
	return classifyAt(name, code, codeAddr, ex, err)
}

// classifyAt is classify for a test whose instruction is at addr.
func classifyAt(name string, code []byte, addr uint64, ex *exit, err error) InsnResult {
	r := InsnResult{Name: name, Bytes: hex.EncodeToString(code)}
	switch {
	case err != nil:
		r.Outcome, r.Detail = Failed, err.Error()
	case ex.timed:
		r.Outcome = Timeout
	case ex.reason == kvm.ExitIO && ex.io.Port == portDone:
		r.Outcome = Executed
	case ex.reason == kvm.ExitIO && ex.io.Port == portException && len(ex.data) > 0:
		r.Outcome, r.Vector = Exception, int(ex.data[0])
		r.Detail = describeException(ex, r.Vector)
	case ex.reason == kvm.ExitInternalError && ex.ie.Suberror == kvm.InternalErrorEmulation:
		r.Outcome = EmulationFailure
		r.Detail = fmt.Sprintf("RIP %#x", ex.regs.RIP)
		if ex.regs.RIP != addr {
			r.Detail += fmt.Sprintf(" (not at the test instruction, %#x)", addr)
		}
		if len(ex.ie.InsnBytes) > 0 {
			r.Detail += fmt.Sprintf(", KVM saw bytes %x", ex.ie.InsnBytes)
		}
	case ex.reason == kvm.ExitShutdown:
		r.Outcome, r.Detail = Shutdown, fmt.Sprintf("RIP %#x", ex.regs.RIP)
	default:
		r.Outcome, r.Detail = OtherExit, describeExit(ex)
	}
	return r
}

func describeExit(ex *exit) string {
	switch ex.reason {
	case kvm.ExitIO:
		return fmt.Sprintf("%v port %#x", ex.reason, ex.io.Port)
	case kvm.ExitInternalError:
		return fmt.Sprintf("%v suberror %d", ex.reason, ex.ie.Suberror)
	case kvm.ExitFailEntry:
		return fmt.Sprintf("%v hardware reason %#x", ex.reason, ex.fail)
	}
	return fmt.Sprintf("%v at RIP %#x", ex.reason, ex.regs.RIP)
}

// insn runs one instruction test in a VM of its own (the live tests'
// way; Run uses batch).
func (p *prober) insn(t insnTest) InsnResult {
	g := guest{code: t.code, regs: t.regs}
	if t.cr4 != nil {
		g.cr4 = t.cr4(p.feat)
	}
	if t.xcr0 != 0 {
		g.xcr0 = p.feat.xcr0
	}
	ex, err := p.runGuest(g)
	return classify(t.name, t.code, ex, err)
}

// batchVM is the one VM in which the instruction tests run one after
// another: every test's code is in its own slot, and before each test the
// data pages, the segment and control registers, the FPU state and the
// general registers are set afresh. A test that leaves the vCPU in an
// unknown state (a timeout, a shutdown, an unexpected exit, an error)
// closes the VM and the next test gets a new one.
type batchVM struct {
	vm      *kvm.VM
	cpu     *kvm.VCPU
	base    kvm.Sregs
	xcr0Err error // KVM_SET_XCRS failed: tests needing AVX state cannot run
}

func (b *batchVM) close() {
	b.cpu.Close()
	b.vm.Close()
}

// slotAddr is where test i's code goes.
func slotAddr(i int) uint64 { return codeAddr + uint64(i)*slotSize }

// newBatchVM writes the image with every test's code in its slot and
// creates the VM and its vCPU.
func (p *prober) newBatchVM(tests []insnTest) (*batchVM, error) {
	writeImage(p.mem, false)
	for i, t := range tests {
		a := slotAddr(i)
		copy(p.mem[a:], t.code)
		copy(p.mem[a+uint64(len(t.code)):], doneSeq)
	}
	vm, err := p.newVM()
	if err != nil {
		return nil, err
	}
	b := &batchVM{vm: vm}
	fail := func(err error) (*batchVM, error) {
		vm.Close()
		return nil, err
	}
	if b.cpu, err = vm.CreateVCPU(0); err != nil {
		return fail(err)
	}
	if err := b.cpu.SetCPUID2(p.sup); err != nil {
		b.close()
		return nil, err
	}
	if b.base, err = b.cpu.Sregs(); err != nil {
		b.close()
		return nil, err
	}
	if p.feat.xcr0 != 0 {
		b.xcr0Err = b.cpu.SetXCR0(p.feat.xcr0)
	}
	return b, nil
}

// initFPU is the FPU state each test starts from (FNINIT's, with
// MXCSR's default): earlier tests' x87/SSE state does not leak.
var initFPU = kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}

// runSlot runs test i in slot i.
func (p *prober) runSlot(b *batchVM, i int, t insnTest) (*exit, error) {
	// Where the host cannot give the guest the state a VEX/EVEX test needs
	// (no AVX/AVX-512 in XCR0), the instruction raises #UD: the test
	// shows that. Where KVM refused XCR0, the test cannot tell.
	if t.xcr0 != 0 && b.xcr0Err != nil {
		return nil, fmt.Errorf("cannot enable AVX state (XCR0 %#x): %w", p.feat.xcr0, b.xcr0Err)
	}
	writeData(p.mem)
	var cr4 uint64
	if t.cr4 != nil {
		cr4 = t.cr4(p.feat)
	}
	if err := b.cpu.SetSregs(sregs(b.base, false, cr4)); err != nil {
		return nil, err
	}
	_ = b.cpu.SetFPU(initFPU) // best effort: a host without it keeps the previous test's FPU state
	r := kvm.Regs{RIP: slotAddr(i), RSP: kernelStack, RFLAGS: 2}
	if t.regs != nil {
		t.regs(&r)
	}
	if err := b.cpu.SetRegs(r); err != nil {
		return nil, err
	}
	return p.loop(b.cpu, 0, nil)
}

// settle completes what the last exit left pending (an OUT's completion
// moves RIP) with an immediate-exit KVM_RUN, so that the next test's
// registers are not changed under it. False: the vCPU is not reusable.
func settle(b *batchVM) bool {
	run := b.cpu.RunData()
	run.SetImmediateExit(true)
	err := b.cpu.Run()
	run.SetImmediateExit(false)
	return err == nil || kvm.IsRetry(err)
}

// batch runs the instruction tests in one VM (a new one only after a test
// that leaves the vCPU unusable). Far cheaper than a VM per test: VM
// creation is most of a test's cost.
func (p *prober) batch(tests []insnTest) []InsnResult {
	out := make([]InsnResult, 0, len(tests))
	if len(tests) > maxSlots {
		panic(fmt.Sprintf("probe: %d instruction tests, room for %d", len(tests), maxSlots))
	}
	var b *batchVM
	defer func() {
		if b != nil {
			b.close()
		}
	}()
	for i, t := range tests {
		var ex *exit
		var err error
		if b == nil {
			b, err = p.newBatchVM(tests)
		}
		if err == nil {
			ex, err = p.runSlot(b, i, t)
		}
		out = append(out, classifyAt(t.name, t.code, slotAddr(i), ex, err))
		reusable := err == nil && !ex.timed &&
			(ex.reason == kvm.ExitIO || ex.reason == kvm.ExitInternalError && ex.ie.Suberror == kvm.InternalErrorEmulation)
		if b != nil && (!reusable || !settle(b)) {
			b.close()
			b = nil
		}
	}
	return out
}

// cpuid runs CPUID in a guest whose table asks for MOVDIR64B and drops
// POPCNT and XSAVE.
func (p *prober) cpuid() CPUIDResult {
	res := CPUIDResult{HostMOVDIR64B: p.feat.movdir64b}
	ex, err := p.runGuest(guest{code: cpuidCode, cpuid: editCPUID(p.sup), values: cpuidValues})
	switch {
	case err != nil:
		res.Error = err.Error()
	case ex.timed:
		res.Error = "the CPUID guest timed out"
	case len(ex.values) != cpuidValues:
		res.Error = "the CPUID guest stopped early: " + classify("CPUID", cpuidCode, ex, nil).Detail
	default:
		res.Leaf7ECX, res.Leaf1ECX, res.Leaf7EBX, res.Ext1EDX = ex.values[0], ex.values[1], ex.values[2], ex.values[3]
		res.GuestMOVDIR64B = res.Leaf7ECX&cpuid7ECXMOVDIR64B != 0
		res.POPCNTRemoved = res.Leaf1ECX&cpuid1ECXPOPCNT == 0
		res.XSAVERemoved = res.Leaf1ECX&cpuid1ECXXSAVE == 0
	}
	return res
}

// syscall starts at CPL3 on "syscall" and reports whether the CPL0 handler
// at LSTAR ran.
func (p *prober) syscall() (bool, string) {
	ex, err := p.runGuest(guest{user: true, msrs: syscallMSRs()})
	return judgeSyscall(ex, err)
}

// judgeSyscall interprets the SYSCALL guest's end.
func judgeSyscall(ex *exit, err error) (bool, string) {
	switch {
	case err != nil:
		return false, "the test could not run: " + err.Error()
	case ex.timed:
		return false, "the test guest timed out"
	case ex.reason == kvm.ExitIO && ex.io.Port == portSyscall:
		return true, "SYSCALL from CPL3 reached the CPL0 handler"
	case ex.reason == kvm.ExitIO && ex.io.Port == portException && len(ex.data) > 0:
		return false, "SYSCALL from CPL3 ended in " + describeException(ex, int(ex.data[0]))
	case ex.reason == kvm.ExitShutdown:
		return false, "SYSCALL from CPL3 ended in a shutdown (triple fault)"
	}
	return false, "SYSCALL from CPL3 ended in " + describeExit(ex)
}
