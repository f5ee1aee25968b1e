package sandbox

import (
	"fmt"
	"slices"
	"sort"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"

	"godvm/kvm"
	vfiokernel "godvm/vfio/kernel"
)

// The allow-lists. Everything here was seen in `strace -f` of real runs
// (boot, DSA, virtio-blk/net/rng/console, vfio-user against godvm
// dsa-server, signals) or is named by the code path that needs it; see each
// comment. A call not listed is refused.

// set is an allow-list: calls allowed whatever their arguments, calls
// allowed when one of their argument conditions holds, and ioctl requests
// by name (in order: the most frequent first, KVM_RUN above all, since BPF
// checks them one after the other).
type set struct {
	names  []string
	conds  map[string][]seccomp.ArgumentConditions
	ioctls []string
	// errnos are refused with an error rather than trapped: calls a
	// library tries and does without.
	errnos []errnoRule
}

// errnoRule refuses a call (when cond holds; nil: always) with errno.
type errnoRule struct {
	name  string
	cond  seccomp.ArgumentConditions
	errno unix.Errno
}

func (s set) plus(o set) set {
	r := set{names: slices.Clone(s.names), conds: map[string][]seccomp.ArgumentConditions{}, ioctls: slices.Clone(s.ioctls)}
	for _, n := range o.names {
		if !slices.Contains(r.names, n) {
			r.names = append(r.names, n)
		}
	}
	for n, c := range s.conds {
		r.conds[n] = slices.Clone(c)
	}
	for n, c := range o.conds {
		if _, ok := r.conds[n]; !ok {
			r.conds[n] = slices.Clone(c)
		}
	}
	for _, n := range o.ioctls {
		if !slices.Contains(r.ioctls, n) {
			r.ioctls = append(r.ioctls, n)
		}
	}
	r.errnos = slices.Clone(s.errnos)
	for _, e := range o.errnos {
		if !slices.ContainsFunc(r.errnos, func(x errnoRule) bool { return x.name == e.name }) {
			r.errnos = append(r.errnos, e)
		}
	}
	return r
}

func cond(arg uint32, op seccomp.Operation, v uint64) seccomp.ArgumentConditions {
	return seccomp.ArgumentConditions{{Argument: arg, Operation: op, Value: v}}
}

// goRuntime is what any Go thread may need: the scheduler (futex,
// sched_yield, nanosleep, clone of threads), memory (mmap, munmap, madvise,
// the mapping names of prctl(PR_SET_VMA)), signals (preemption with SIGURG
// through tgkill, os/signal, the vCPU kick, sigreturn), the network poller
// (epoll; created on first use), time (clock_gettime where the vDSO falls back),
// GOMAXPROCS updates (sched_getaffinity, pread of the cgroup files opened at
// start), getrandom, and exiting. read, write and close are on every list:
// every kind of thread moves bytes through descriptors it was given.
func goRuntime(pid int) set {
	exec := uint64(unix.PROT_EXEC)
	return set{
		names: []string{
			"futex", "sched_yield", "nanosleep", "clock_gettime",
			"read", "write", "close", "pread64",
			"munmap", "madvise",
			"rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
			"getpid", "gettid",
			"epoll_pwait", "epoll_ctl", "epoll_create1",
			"sched_getaffinity", "getrandom",
			"exit", "exit_group",
			// A cgo build's threads are glibc's: they register their
			// robust futex list and rseq area when they start, and
			// malloc in the main arena grows it with brk.
			"set_robust_list", "rseq", "brk",
		},
		errnos: []errnoRule{
			// glibc tries clone3 first and falls back to clone on
			// ENOSYS; clone3's flags are in memory, out of a filter's
			// reach.
			{name: "clone3", errno: unix.ENOSYS},
			// glibc reads /sys/devices/system/cpu/online when a cgo
			// thread's first malloc makes an arena, and falls back to
			// sched_getaffinity when it cannot. A read-only open fails
			// with EPERM (the code that asked reports it); any other
			// open traps.
			{name: "openat", cond: cond(2, seccomp.Equal, unix.O_RDONLY|unix.O_CLOEXEC), errno: unix.EPERM},
		},
		conds: map[string][]seccomp.ArgumentConditions{
			// No executable memory: godvm never makes any.
			"mmap":     {cond(2, seccomp.BitsNotSet, exec)},
			"mprotect": {cond(2, seccomp.BitsNotSet, exec)},
			// Threads only, with exactly the flags of Go's runtime or, in
			// a cgo build, of glibc's pthread_create: no fork, no new
			// namespaces.
			"clone": {
				cond(0, seccomp.Equal, cloneThreadFlags),
				cond(0, seccomp.Equal, cloneThreadFlags|unix.CLONE_SETTLS),
				cond(0, seccomp.Equal, cloneThreadFlags|unix.CLONE_SETTLS|unix.CLONE_PARENT_SETTID|unix.CLONE_CHILD_CLEARTID),
			},
			// Signals to godvm's own threads and process only.
			"tgkill": {cond(0, seccomp.Equal, uint64(pid))},
			"kill":   {cond(0, seccomp.Equal, uint64(pid))},
			// Go (re)installs handlers as os/signal needs them; SIGSYS
			// stays with the reporter.
			"rt_sigaction": {cond(0, seccomp.NotEqual, uint64(unix.SIGSYS))},
			// Only naming anonymous mappings ("[anon: Go: heap]").
			"prctl": {cond(0, seccomp.Equal, unix.PR_SET_VMA)},
		},
	}
}

// cloneThreadFlags are the flags Go's runtime clones its threads with
// (runtime/os_linux.go cloneFlags; its clone adds CLONE_SETTLS on amd64).
const cloneThreadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_SYSVSEM | unix.CLONE_THREAD

// vcpuIoctls are the ioctls of a vCPU thread, KVM_RUN first: the vCPU's
// state as the exit handlers and the emulator use it (registers; special
// registers, CR2 for an injected #PF; events, to inject exceptions;
// x87/SSE state through KVM_GET/SET_XSAVE for the instructions it
// emulates; IA32_PASID through KVM_GET_MSRS for ENQCMD; KVM_TRANSLATE,
// read-only),
// and what device emulation does on an exit: the serial port's interrupt
// line, MSI routes and irqfds when the guest programs MSI-X, ioeventfds
// and memory slots when it moves a BAR (a mapped vfio-user portal), and
// VFIO interrupts when it enables MSI-X on a passed-through device. Not
// here, so refused after the machine is built: KVM_CREATE_VM/VCPU/DEVICE,
// KVM_SET_CPUID2, KVM_SET_MSRS, KVM_SET_LAPIC, KVM_SET_FPU, KVM_ENABLE_CAP
// and the rest of the setup.
var vcpuIoctls = []string{
	"KVM_RUN",
	"KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS",
	"KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS", "KVM_GET_XSAVE", "KVM_SET_XSAVE",
	"KVM_GET_MSRS", "KVM_TRANSLATE",
	"KVM_IRQFD", "KVM_SET_GSI_ROUTING", "KVM_IOEVENTFD", "KVM_IRQ_LINE",
	"KVM_SET_USER_MEMORY_REGION",
	"VFIO_DEVICE_SET_IRQS",
}

// vcpu is a vCPU thread's list beyond the runtime's: its ioctls; the
// writes of exit handlers (console bytes, eventfd kicks, a passed-through
// device's regions with pwrite, pread being the runtime's; requests to a
// vfio-user server with sendmsg: the replies are read by the client's own
// goroutine); eventfds for MSI-X vectors.
func vcpu() set {
	return set{
		names:  []string{"pwrite64", "sendmsg", "eventfd2"},
		ioctls: vcpuIoctls,
	}
}

// worker is a virtio device worker's list beyond the runtime's: ppoll on
// its queues' eventfds and back ends; disk I/O (preadv/pwritev, pwrite64
// for write-zeroes without fallocate, fsync for flushes, fallocate for
// discard and write-zeroes); tap I/O (readv/writev); console and rng I/O
// (read/write, getrandom). No ioctl at all: interrupts are irqfd writes.
func worker() set {
	return set{
		names: []string{
			"ppoll",
			"readv", "writev", "preadv", "pwritev", "pwrite64",
			"fsync", "fallocate",
		},
	}
}

// vmmIoctls are the ioctls godvm run's goroutines make besides the vCPU
// threads' (which the process filter must allow too): KVM-VFIO file
// removal and VFIO/iommufd DMA unmapping when the machine closes, and the
// terminal modes of the serial console (raw mode at the start, restored at
// the end).
var vmmIoctls = []string{
	"KVM_SET_DEVICE_ATTR",
	"VFIO_IOMMU_UNMAP_DMA", "VFIO_GROUP_UNSET_CONTAINER", "IOMMU_IOAS_UNMAP",
	"TCGETS", "TCSETS",
}

// vmm is godvm run's process-wide list beyond the runtime's: the vCPU and
// worker lists (filters stack: a call must pass the process filter too);
// the vfio-user clients' sockets (sendmsg, recvmsg); and the per-thread
// filters' own installation (seccomp without TSYNC: a filter can only add
// restrictions).
func vmm() set {
	s := vcpu().plus(worker())
	return s.plus(set{
		names: []string{"recvmsg"},
		conds: map[string][]seccomp.ArgumentConditions{
			"seccomp": {{
				{Argument: 0, Operation: seccomp.Equal, Value: unix.SECCOMP_SET_MODE_FILTER},
				{Argument: 1, Operation: seccomp.Equal, Value: 0},
			}},
		},
		ioctls: vmmIoctls,
	})
}

// dsaServer is godvm dsa-server's list beyond the runtime's: clients
// accepted on its socket (accept4, getsockname); messages with descriptors
// (sendmsg, recvmsg); DMA maps of the client's memfds (fstat for their
// size, mmap, munmap); SET_IRQS checks that a descriptor is an eventfd
// (readlinkat of /proc/self/fd/N, fstat) and the interrupt eventfds it
// keeps; ppoll on them; and its socket file removed on the way out
// (newfstatat to check it is still its own, unlinkat).
func dsaServer() set {
	return set{
		names: []string{
			"accept4", "getsockname", "getpeername", "sendmsg", "recvmsg",
			"fstat", "newfstatat", "readlinkat", "eventfd2", "ppoll",
			"unlinkat",
		},
	}
}

func policy(k Kind, pid int) (seccomp.Policy, error) {
	var s set
	switch k {
	case KindVMM:
		s = vmm()
	case KindVCPU:
		s = vcpu()
	case KindWorker:
		s = worker()
	case KindDSAServer:
		s = dsaServer()
	default:
		return seccomp.Policy{}, fmt.Errorf("%w: %d", errNoKind, k)
	}
	s = s.plus(goRuntime(pid))
	return s.policy()
}

// requests are the ioctl request numbers the lists may name.
func requests() map[string]uint64 {
	m := map[string]uint64{
		"TCGETS": unix.TCGETS,
		"TCSETS": unix.TCSETS,
	}
	for n, v := range kvm.Requests() {
		m[n] = uint64(v)
	}
	for n, v := range vfiokernel.Requests() {
		m[n] = uint64(v)
	}
	return m
}

// policy is the library's form of s: ioctls first (the hot path), then
// the rest; anything else traps.
func (s set) policy() (seccomp.Policy, error) {
	reqs := requests()
	var ioctl []seccomp.NameWithConditions
	for _, n := range s.ioctls {
		v, ok := reqs[n]
		if !ok {
			return seccomp.Policy{}, fmt.Errorf("seccomp: unknown ioctl %s", n)
		}
		ioctl = append(ioctl, seccomp.NameWithConditions{Name: "ioctl", Conditions: cond(1, seccomp.Equal, v)})
	}
	var groups []seccomp.SyscallGroup
	if len(ioctl) > 0 {
		groups = append(groups, seccomp.SyscallGroup{NamesWithCondtions: ioctl, Action: seccomp.ActionAllow})
	}
	rest := seccomp.SyscallGroup{Names: slices.Clone(s.names), Action: seccomp.ActionAllow}
	sort.Strings(rest.Names)
	names := make([]string, 0, len(s.conds))
	for n := range s.conds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, c := range s.conds[n] {
			rest.NamesWithCondtions = append(rest.NamesWithCondtions, seccomp.NameWithConditions{Name: n, Conditions: c})
		}
	}
	groups = append(groups, rest)
	for _, e := range s.errnos {
		g := seccomp.SyscallGroup{Action: seccomp.ActionErrno | seccomp.Action(e.errno)}
		if e.cond == nil {
			g.Names = []string{e.name}
		} else {
			g.NamesWithCondtions = []seccomp.NameWithConditions{{Name: e.name, Conditions: e.cond}}
		}
		groups = append(groups, g)
	}
	return seccomp.Policy{DefaultAction: seccomp.ActionTrap, Syscalls: groups}, nil
}
