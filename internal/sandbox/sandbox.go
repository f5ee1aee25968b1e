// Package sandbox confines godvm with seccomp filters, Firecracker-style:
// an allow-list per kind of thread, with argument checks where they matter
// (ioctl request numbers, mmap/mprotect without PROT_EXEC, clone with the
// Go runtime's thread flags only, signals to godvm's own threads only).
//
// Go decides which OS thread runs a goroutine, so a filter bound to one
// thread only means something for a goroutine locked to it. The design:
//
//   - a process-wide filter (SECCOMP_FILTER_FLAG_TSYNC, so every thread gets
//     it, and every thread the runtime creates later inherits it), installed
//     by InstallProcess once the machine is built: files, /dev/kvm, taps and
//     sockets are open by then. For `godvm run` it is the VMM filter (KindVMM):
//     what the VMM's own goroutines do, which run on any thread, and
//     therefore also everything the stricter filters below allow, since
//     filters stack and a call must pass all of them. For `godvm dsa-server`
//     it is the whole server's filter (KindDSAServer).
//   - a stricter filter added by LockThread on each thread that a goroutine
//     locks for good: the vCPU threads (KindVCPU: KVM_RUN and the vCPU state
//     ioctls, the interrupt and eventfd ioctls device emulation does on
//     exits, the reads and writes of exit handlers) and the virtio device
//     workers (KindWorker: poll, disk and tap I/O, fsync, no ioctl at all).
//     Such a thread is never handed back to the scheduler: its goroutine
//     never unlocks, so the thread ends with it. Threads the runtime needs
//     while a goroutine is locked are cloned by its template thread, which
//     only has the process-wide filter.
//
// A refused call is SECCOMP_RET_TRAP with the refusing filter's Kind as the
// return data; an assembly SIGSYS handler names the call, its first three
// arguments, the filter and the thread on stderr and exits with ExitStatus
// (see sigsys_amd64.go for why not RET_KILL_PROCESS). Two calls get an
// error instead, for glibc's sake in cgo builds (policy.go): clone3
// (ENOSYS: glibc falls back to clone, whose flags a filter can check) and
// an open for reading (EPERM: glibc's CPU count probe falls back).
//
// The lists (policy.go) come from `strace -f` of real runs: boots with the
// agent's scenarios, the built-in DSA, virtio-blk/net/rng/console,
// vfio-user against godvm dsa-server, SIGTERM; and from the code paths
// that cannot run here (kernel VFIO). The ioctl request numbers come from
// kvm.Requests and vfio/kernel.Requests, whose tests fail when a new request is
// not listed there.
package sandbox

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ExitStatus is godvm's exit status after a refused system call: 128 plus
// SIGSYS, what a shell reports for a process killed by SIGSYS.
const ExitStatus = 128 + int(unix.SIGSYS)

// Kind is a kind of thread, with its own filter. Its value is the filter's
// SECCOMP_RET_DATA, which tells the SIGSYS handler who refused.
type Kind uint16

const (
	KindVMM       Kind = 1 // godvm run, process-wide: the VMM's goroutines on any thread
	KindVCPU      Kind = 2 // a vCPU thread (locked), on top of KindVMM
	KindWorker    Kind = 3 // a virtio device worker's thread (locked), on top of KindVMM
	KindDSAServer Kind = 4 // godvm dsa-server, process-wide
)

func (k Kind) String() string {
	switch k {
	case KindVMM:
		return "VMM (process-wide)"
	case KindVCPU:
		return "vCPU thread"
	case KindWorker:
		return "device worker thread"
	case KindDSAServer:
		return "dsa-server (process-wide)"
	}
	return fmt.Sprintf("kind %d", uint16(k))
}

var (
	mu      sync.Mutex
	active  atomic.Uint32 // the process Kind once installed
	threads map[Kind]*unix.SockFprog
)

// Active reports the process-wide filter's kind, or 0 when none is
// installed (--seccomp=off, tests).
func Active() Kind { return Kind(active.Load()) }

// threadKinds are the per-thread filters that go on top of each process
// filter.
var threadKinds = map[Kind][]Kind{
	KindVMM:       {KindVCPU, KindWorker},
	KindDSAServer: nil,
}

// InstallProcess installs the SIGSYS reporter and the process-wide filter
// of kind k (KindVMM or KindDSAServer) on every thread, and prepares the
// per-thread filters LockThread adds. It can be done once per process.
func InstallProcess(k Kind) error {
	mu.Lock()
	defer mu.Unlock()
	if Active() != 0 {
		return fmt.Errorf("seccomp: the %s filter is already installed", Active())
	}
	subs, ok := threadKinds[k]
	if !ok {
		return fmt.Errorf("seccomp: %s is not a process-wide filter", k)
	}
	pid := unix.Getpid()
	prog, err := Program(k, pid)
	if err != nil {
		return err
	}
	progs := map[Kind]*unix.SockFprog{}
	for _, s := range subs {
		if progs[s], err = Program(s, pid); err != nil {
			return err
		}
	}
	warmUp()
	if err := installReporter(); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	// no_new_privs is per thread until TSYNC copies it to the others: keep
	// both calls on one thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	r, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(prog)))
	runtime.KeepAlive(prog)
	if e != 0 {
		if e == unix.ENOSYS || e == unix.EINVAL {
			return fmt.Errorf("seccomp: this kernel cannot install filters (%w); --seccomp=off runs without them", e)
		}
		return fmt.Errorf("seccomp: installing the %s filter: %w", k, e)
	}
	if r != 0 {
		return fmt.Errorf("seccomp: thread %d could not take the %s filter", r, k)
	}
	threads = progs
	active.Store(uint32(k))
	return nil
}

// warmUp does what Go would otherwise do lazily, and with system calls the
// filters refuse, the first time it is needed: reading the local time zone
// (open /etc/localtime) for log time stamps.
func warmUp() {
	time.Now().Zone()
}

// LockThread locks the calling goroutine to its thread for good and adds
// kind k's filter to that thread. Without a process-wide filter it does
// nothing (no lock either). The goroutine must not undo the lock: when it
// returns, Go ends the thread and the filter goes with it.
func LockThread(k Kind) error {
	if Active() == 0 {
		return nil
	}
	prog := threads[k]
	if prog == nil {
		return fmt.Errorf("seccomp: no %s filter under the %s filter", k, Active())
	}
	runtime.LockOSThread() // never undone, see above
	r, _, e := syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(prog)))
	runtime.KeepAlive(prog)
	if e != 0 || r != 0 {
		return fmt.Errorf("seccomp: installing the %s filter on thread %d: %w", k, unix.Gettid(), e)
	}
	return nil
}

// Program assembles kind k's filter for process pid (the signal checks
// compare with it).
func Program(k Kind, pid int) (*unix.SockFprog, error) {
	p, err := policy(k, pid)
	if err != nil {
		return nil, err
	}
	insts, err := p.Assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp: %s filter: %w", k, err)
	}
	// The library returns SECCOMP_RET_TRAP with no data; the data says
	// which filter refused.
	trap := uint32(seccomp.ActionTrap)
	n := 0
	for i, in := range insts {
		if r, ok := in.(bpf.RetConstant); ok && r.Val == trap {
			insts[i] = bpf.RetConstant{Val: trap | uint32(k)}
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("seccomp: %s filter: no SECCOMP_RET_TRAP in the assembled program", k)
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %s filter: %w", k, err)
	}
	if len(raw) > 4096 {
		return nil, fmt.Errorf("seccomp: %s filter: %d instructions (the kernel takes 4096)", k, len(raw))
	}
	f := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}, nil
}

// errNoKind is policy's answer for a Kind without a list.
var errNoKind = errors.New("seccomp: no such filter")
