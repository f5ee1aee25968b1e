package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"godvm/kvm"
)

// The refusal tests run the forbidden call in a child process (this test
// binary again, with childEnv naming the case), so that the test process
// survives the filter's verdict.
const childEnv = "GODVM_SANDBOX_CHILD"

func TestMain(m *testing.M) {
	if c := os.Getenv(childEnv); c != "" {
		os.Exit(child(c))
	}
	os.Exit(m.Run())
}

// childCase is one child run: the process filter, the thread kind the call
// runs on (0: an unlocked goroutine) and the call.
type childCase struct {
	process Kind
	thread  Kind
	call    func(dir string) error
}

var kvmRun = kvm.Requests()["KVM_RUN"]

// childFile and childPipe were opened by the child before its filters
// went in, in the directory childDirEnv names.
var (
	childFile int
	childPipe [2]*os.File
)

const childDirEnv = "GODVM_SANDBOX_DIR"

var childCases = map[string]childCase{
	// The VMM filter: no new sockets, no opening files, and ioctl only
	// with the requests godvm makes (TIOCSTI would push input into the
	// terminal).
	"vmm-socket": {KindVMM, 0, func(string) error {
		return rawErr(unix.RawSyscall(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM, 0))
	}},
	"vmm-openat": {KindVMM, 0, func(dir string) error {
		p, _ := unix.BytePtrFromString(filepath.Join(dir, "f"))
		return rawErr(unix.RawSyscall6(unix.SYS_OPENAT, atFDCWD, uintptrOf(p), unix.O_RDONLY, 0, 0, 0))
	}},
	"vmm-ioctl": {KindVMM, 0, func(string) error {
		c := byte('x')
		return rawErr(unix.RawSyscall(unix.SYS_IOCTL, 0, unix.TIOCSTI, uintptrOf(&c)))
	}},
	// The vCPU filter refuses what the VMM filter allows but a vCPU never
	// does: fsync (disks are flushed by their workers).
	"vcpu-fsync": {KindVMM, KindVCPU, func(dir string) error {
		return rawErr(unix.RawSyscall(unix.SYS_FSYNC, uintptr(childFile), 0, 0))
	}},
	"vcpu-execve": {KindVMM, KindVCPU, func(string) error {
		p, _ := unix.BytePtrFromString("/bin/true")
		return rawErr(unix.RawSyscall(unix.SYS_EXECVE, uintptrOf(p), 0, 0))
	}},
	// A worker makes no ioctl at all, not even KVM_RUN, which the VMM
	// filter lets through for the vCPU threads.
	"worker-ioctl": {KindVMM, KindWorker, func(string) error {
		return rawErr(unix.RawSyscall(unix.SYS_IOCTL, 0, kvmRun, 0))
	}},
	"worker-socket": {KindVMM, KindWorker, func(string) error {
		return rawErr(unix.RawSyscall(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM, 0))
	}},
	// The dsa-server makes no ioctl and opens nothing.
	"dsa-server-ioctl": {KindDSAServer, 0, func(string) error {
		return rawErr(unix.RawSyscall(unix.SYS_IOCTL, 0, kvmRun, 0))
	}},
	"dsa-server-openat": {KindDSAServer, 0, func(dir string) error {
		p, _ := unix.BytePtrFromString(filepath.Join(dir, "f"))
		return rawErr(unix.RawSyscall6(unix.SYS_OPENAT, atFDCWD, uintptrOf(p), unix.O_RDONLY, 0, 0, 0))
	}},
	// Executable memory is refused everywhere.
	"vmm-mmap-exec": {KindVMM, 0, func(string) error {
		return rawErr(unix.RawSyscall6(unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0))
	}},
	// Argument checks let the right calls through: KVM_RUN on a vCPU
	// thread (on a bad descriptor here: EBADF from the kernel, not a
	// trap); glibc's probes get their errors (clone3: ENOSYS, a read-only
	// open: EPERM) and go on.
	"vcpu-kvm-run": {KindVMM, KindVCPU, func(string) error {
		return wantErrno(unix.EBADF, rawErr(unix.RawSyscall(unix.SYS_IOCTL, ^uintptr(0), kvmRun, 0)))
	}},
	"worker-clone3": {KindVMM, KindWorker, func(string) error {
		return wantErrno(unix.ENOSYS, rawErr(unix.RawSyscall(unix.SYS_CLONE3, 0, 0, 0)))
	}},
	"vmm-open-readonly": {KindVMM, 0, func(string) error {
		p, _ := unix.BytePtrFromString("/sys/devices/system/cpu/online")
		return wantErrno(unix.EPERM, rawErr(unix.RawSyscall6(unix.SYS_OPENAT, atFDCWD, uintptrOf(p), unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0)))
	}},
	// A per-thread filter stays on its thread: a goroutine a vCPU
	// goroutine starts runs elsewhere, under the VMM filter alone, and a
	// thread whose locked goroutine ended is gone, never reused.
	"vcpu-spawned-goroutine": {KindVMM, KindVCPU, func(string) error {
		errc := make(chan error)
		go func() { errc <- rawErr(unix.RawSyscall(unix.SYS_FSYNC, uintptr(childFile), 0, 0)) }()
		return <-errc
	}},
	"vcpu-threads-end": {KindVMM, 0, func(string) error {
		for range 8 {
			errc := make(chan error)
			go func() { errc <- LockThread(KindVCPU) }()
			if err := <-errc; err != nil {
				return err
			}
		}
		var wg sync.WaitGroup
		errc := make(chan error, 64)
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					if err := rawErr(unix.RawSyscall(unix.SYS_FSYNC, uintptr(childFile), 0, 0)); err != nil {
						errc <- err
						return
					}
					runtime.Gosched()
				}
			}()
		}
		wg.Wait()
		close(errc)
		return <-errc
	}},
	// What a Go program does all the time works under every filter: see
	// busy.
	"vmm-allowed":        {KindVMM, 0, busy},
	"vcpu-allowed":       {KindVMM, KindVCPU, busy},
	"worker-allowed":     {KindVMM, KindWorker, busy},
	"dsa-server-allowed": {KindDSAServer, 0, busy},
}

func uintptrOf[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }

// wantErrno is nil when err is want.
func wantErrno(want unix.Errno, err error) error {
	if err != want {
		return fmt.Errorf("got %v, want %v", err, want)
	}
	return nil
}

func rawErr(_, _ uintptr, e unix.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

// busy exercises the Go runtime under the filter: goroutines on many
// threads, garbage collection and heap growth, timers, signals through
// os/signal (the vCPU kick), a pipe through the poller.
func busy(string) error {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGUSR2)
	defer signal.Stop(ch)
	var wg sync.WaitGroup
	var mu sync.Mutex
	keep := [][]byte{}
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				b := make([]byte, 64<<10+i*j)
				mu.Lock()
				keep = append(keep, b)
				if len(keep) > 64 {
					keep = keep[1:]
				}
				mu.Unlock()
				if j%50 == 0 {
					time.Sleep(time.Millisecond)
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	runtime.GC()
	if err := unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGUSR2); err != nil {
		return err
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		return errors.New("SIGUSR2 not delivered")
	}
	r, w := childPipe[0], childPipe[1]
	go w.Write([]byte("ok"))
	b := make([]byte, 2)
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(r, b); err != nil || string(b) != "ok" {
		return fmt.Errorf("pipe: %q %v", b, err)
	}
	return nil
}

// child runs one case: it installs the filters and makes the call; a
// refused call never returns (the reporter exits with ExitStatus).
func child(name string) int {
	c, ok := childCases[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no child case %q\n", name)
		return 100
	}
	dir := os.Getenv(childDirEnv)
	f, err := os.Create(filepath.Join(dir, "file"))
	if err == nil {
		childPipe[0], childPipe[1], err = os.Pipe()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 100
	}
	childFile = int(f.Fd())
	// The test framework's files are open already; the filters refuse
	// opening new ones.
	if err := InstallProcess(c.process); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 101
	}
	done := make(chan error)
	go func() {
		if c.thread != 0 {
			if err := LockThread(c.thread); err != nil {
				done <- err
				return
			}
		}
		done <- c.call(dir)
	}()
	if err := <-done; err != nil {
		fmt.Fprintf(os.Stderr, "call returned: %v\n", err)
		return 102
	}
	return 0
}

func runChild(t *testing.T, name string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+name, childDirEnv+"="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// TestRefused: a forbidden call is refused in each kind of thread, by that
// thread's filter, and the message names the call and the filter.
func TestRefused(t *testing.T) {
	for _, c := range []struct {
		name, filter, call string
	}{
		{"vmm-socket", "VMM (process-wide)", "socket (41) with arguments 0x2, 0x1, 0x0"},
		{"vmm-openat", "VMM (process-wide)", "openat (257)"},
		{"vmm-ioctl", "VMM (process-wide)", fmt.Sprintf("ioctl (16) with arguments 0x0, %#x,", unix.TIOCSTI)},
		{"vmm-mmap-exec", "VMM (process-wide)", "mmap (9) with arguments 0x0, 0x1000, 0x5"},
		{"vcpu-fsync", "vCPU thread", "fsync (74)"},
		{"vcpu-execve", "vCPU thread", "execve (59)"},
		{"worker-ioctl", "device worker thread", fmt.Sprintf("ioctl (16) with arguments 0x0, %#x,", kvmRun)},
		{"worker-socket", "device worker thread", "socket (41)"},
		{"dsa-server-ioctl", "dsa-server (process-wide)", "ioctl (16)"},
		{"dsa-server-openat", "dsa-server (process-wide)", "openat (257)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, stderr := runChild(t, c.name)
			if status != ExitStatus {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", status, ExitStatus, stderr)
			}
			want := "godvm: seccomp: the " + c.filter + " filter refused system call " + c.call
			if !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("stderr:\n%s\nwant one line starting %q", stderr, want)
			}
			if !strings.Contains(stderr, " on thread ") || !strings.Contains(stderr, "--seccomp=off") {
				t.Errorf("stderr %q lacks the thread or the hint", stderr)
			}
		})
	}
}

// TestAllowed: the Go runtime keeps working under each filter, and
// argument checks let through what they should.
func TestAllowed(t *testing.T) {
	for _, name := range []string{"vmm-allowed", "vcpu-allowed", "worker-allowed", "dsa-server-allowed",
		"vcpu-kvm-run", "worker-clone3", "vmm-open-readonly", "vcpu-spawned-goroutine", "vcpu-threads-end"} {
		t.Run(name, func(t *testing.T) {
			status, stderr := runChild(t, name)
			if status != 0 {
				t.Fatalf("exit status %d; stderr:\n%s", status, stderr)
			}
		})
	}
}

// TestPrograms: every filter assembles, within the kernel's limit, and
// every ioctl name on the lists is known.
func TestPrograms(t *testing.T) {
	for _, k := range []Kind{KindVMM, KindVCPU, KindWorker, KindDSAServer} {
		p, err := Program(k, 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d instructions", k, p.Len)
	}
	if _, err := Program(Kind(9), 1); err == nil {
		t.Error("an unknown kind assembled")
	}
}

// The thread filters are subsets of the process filter they go under: a
// call the process filter refuses would be refused on the locked thread
// anyway, so a per-thread list that names it is a mistake.
func TestThreadListsWithinProcessList(t *testing.T) {
	v := vmm()
	for _, sub := range []set{vcpu(), worker()} {
		for _, n := range sub.names {
			if !slices.Contains(v.names, n) {
				t.Errorf("%s: allowed on a thread, refused by the VMM filter", n)
			}
		}
		for _, n := range sub.ioctls {
			if !slices.Contains(v.ioctls, n) {
				t.Errorf("ioctl %s: allowed on a thread, refused by the VMM filter", n)
			}
		}
	}
}

var fdcwd = unix.AT_FDCWD

// atFDCWD is AT_FDCWD (-100) as a system call argument.
var atFDCWD = uintptr(fdcwd)
