package sandbox

import (
	"fmt"
	"unsafe"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/sys/unix"
)

// The SIGSYS reporter (sigsys_amd64.s). A refused system call raises
// SIGSYS (SECCOMP_RET_TRAP, with the refusing filter's Kind as the return
// data); the handler, written in assembly so that it needs nothing of Go's
// runtime on whatever thread trapped, writes
//
//	godvm: seccomp: the vCPU thread filter refused system call openat (257) with arguments 0xffffffffffffff9c, 0xc000014080, 0x80000 on thread 4242; ...
//
// to stderr and exits with ExitStatus. Why not the alternatives: Go's own
// SIGSYS handling prints "SIGSYS: bad system call" and a goroutine dump
// without naming the call, and exits with 2, which is godvm run's "the
// guest panicked"; SECCOMP_RET_KILL_PROCESS (Firecracker's choice) leaves
// the name to the kernel's audit log, which a user running godvm rarely
// reads, or may not be allowed to; os/signal cannot see the siginfo that
// names the call.
//
// One case escapes the message: a refused call made while the thread
// blocks SIGSYS. The kernel then resets SIGSYS to its default and godvm
// dies of it (a shell shows "Bad system call" and status 159). Only the Go
// runtime and glibc block all signals, around thread creation, and the
// lists allow what they do there (clone with their flags, mmap, mprotect,
// rt_sigprocmask, set_robust_list, rseq; clone3 fails with ENOSYS, a
// read-only open with EPERM).

// sigsysKinds is the size of the kind table: a power of two, indexed by the
// filter's return data masked with sigsysKinds-1.
const sigsysKinds = 8

// sigsysMaxNr bounds the system call names kept; larger numbers (and other
// architectures' calls) are reported as unknown, with the number from the
// arguments' context lost. x86-64 numbers end below 470 today.
const sigsysMaxNr = 512

var (
	sigsysBusy uint32              // set by the first thread that traps
	sigsysBuf  [1024]byte          // the message
	sigsysKind [sigsysKinds]string // indexed by filter data
	// sigsysName[nr] is "name (nr)"; sigsysName[sigsysMaxNr] is for
	// numbers not in the table.
	sigsysName [sigsysMaxNr + 1]string
	sigsysPart = [6]string{
		"godvm: seccomp: the ",
		" filter refused system call ",
		" with arguments ",
		", ",
		" on thread ",
		fmt.Sprintf("; godvm stops (exit status %d). This is a bug in godvm or an attack on it: "+
			"please report it. --seccomp=off runs without the filters, for debugging.\n", ExitStatus),
	}
)

func sigsysHandlerAddr() uintptr
func sigsysRestorerAddr() uintptr

// kernelSigaction is the kernel's struct sigaction on x86-64.
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const (
	saSiginfo  = 0x4
	saOnstack  = 0x08000000
	saRestorer = 0x04000000
)

// installReporter fills the message tables and makes sigsysHandler SIGSYS's
// handler for the whole process. Go's runtime keeps no state about the
// handler it installed there: nothing in godvm asks os/signal about SIGSYS,
// and the filters refuse rt_sigaction(SIGSYS, ...) once they are in.
func installReporter() error {
	for i := range sigsysKind {
		sigsysKind[i] = Kind(i).String()
	}
	for nr := range sigsysMaxNr {
		name, ok := arch.X86_64.SyscallNumbers[nr]
		if !ok {
			name = "?"
		}
		sigsysName[nr] = fmt.Sprintf("%s (%d)", name, nr)
	}
	sigsysName[sigsysMaxNr] = "of an unknown number or architecture"
	act := kernelSigaction{
		handler:  sigsysHandlerAddr(),
		flags:    saSiginfo | saOnstack | saRestorer,
		restorer: sigsysRestorerAddr(),
		mask:     ^uint64(0),
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSYS), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0); e != 0 {
		return fmt.Errorf("rt_sigaction(SIGSYS): %w", e)
	}
	return nil
}
