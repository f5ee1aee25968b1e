package vmm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests boot tiny hand-assembled "kernels" (64-bit code entered the
// way Linux is) on the real KVM. They skip when /dev/kvm is absent.

func requireKVM(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); errors.Is(err, os.ErrNotExist) {
		t.Skip("/dev/kvm absent on this host: skipping a test that runs a guest")
	}
}

// codeELF wraps 64-bit machine code as a vmlinux-shaped ELF loaded and
// entered at 16 MiB.
func codeELF(code []byte) []byte {
	const entry = 0x1000000
	b := make([]byte, 64+56)
	copy(b, "\x7fELF\x02\x01\x01")
	put := func(off int, v uint64, n int) {
		for i := 0; i < n; i++ {
			b[off+i] = byte(v >> (8 * i))
		}
	}
	put(16, 2, 2)
	put(18, 62, 2)
	put(24, entry, 8)
	put(32, 64, 8)
	put(54, 56, 2)
	put(56, 1, 2)
	put(64, 1, 4)
	put(64+8, 120, 8)
	put(64+24, entry, 8)
	put(64+32, uint64(len(code)), 8)
	put(64+40, 0x1000, 8)
	return append(b, code...)
}

func runCode(t *testing.T, code []byte, cpus int, timeout time.Duration) (Result, string, error) {
	t.Helper()
	requireKVM(t)
	k := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(k, codeELF(code), 0o644); err != nil {
		t.Fatal(err)
	}
	var console bytes.Buffer
	m, err := New(Config{Kernel: k, CPUs: cpus, Memory: 64 << 20, Timeout: timeout, Console: &console, BootTrace: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	done := make(chan struct{})
	var res Result
	var runErr error
	go func() { res, runErr = m.Run(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout + 30*time.Second):
		t.Fatal("Run did not return")
	}
	return res, console.String(), runErr
}

var (
	hltLoop = []byte{0xf4, 0xeb, 0xfd} // hlt; jmp back to hlt
	// mov eax, [rsi+0x202] (boot_params.hdr.header); mov dx, 0xf4; out dx, eax
	reportHdrS = []byte{0x8b, 0x86, 0x02, 0x02, 0x00, 0x00, 0x66, 0xba, 0xf4, 0x00, 0xef}
	// mov dx, 0x3f8; mov al, 'O'; out dx, al; mov al, 'K'; out dx, al;
	// mov dx, 0x604; mov ax, 0x3400 (SLP_TYP 5 | SLP_EN); out dx, ax
	printOKPowerOff = []byte{0x66, 0xba, 0xf8, 0x03, 0xb0, 'O', 0xee, 0xb0, 'K', 0xee,
		0x66, 0xba, 0x04, 0x06, 0x66, 0xb8, 0x00, 0x34, 0x66, 0xef}
)

// Long mode, identity paging and RSI = &boot_params: the guest reads the
// "HdrS" magic through RSI and reports it on the debug-exit port.
func TestLiveBootProtocol(t *testing.T) {
	res, _, err := runCode(t, append(reportHdrS, hltLoop...), 1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != ReasonDebugExit || res.Code != 0x53726448 {
		t.Fatalf("result %v code %#x, want debug-exit 0x53726448: %s", res.Reason, res.Code, res.Summary())
	}
	if res.ExitStatus() != ExitFailure {
		t.Error("non-zero debug-exit must be status 3")
	}
	if res.Trace == nil || res.Trace.Exits["KVM_EXIT_IO"] == 0 {
		t.Errorf("trace %+v", res.Trace)
	}
}

// Console output and ACPI poweroff, with an AP parked waiting for SIPI that
// must be kicked out of KVM_RUN.
func TestLiveSerialAndPowerOff(t *testing.T) {
	for _, cpus := range []int{1, 2} {
		res, console, err := runCode(t, append(printOKPowerOff, hltLoop...), cpus, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.Reason != ReasonPowerOff || console != "OK" {
			t.Errorf("%d CPUs: %v, console %q", cpus, res.Reason, console)
		}
	}
}

func TestLiveTimeoutReport(t *testing.T) {
	res, _, err := runCode(t, []byte{0xeb, 0xfe}, 1, 800*time.Millisecond) // jmp $
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != ReasonTimeout || res.ExitStatus() != ExitTimeout {
		t.Fatalf("%v", res.Reason)
	}
	if len(res.VCPUs) != 1 || !res.VCPUs[0].Valid || res.VCPUs[0].RIP != 0x1000000 {
		t.Errorf("vCPU state %+v", res.VCPUs)
	}
	if !strings.Contains(res.Summary(), "0x1000000") {
		t.Errorf("summary %q", res.Summary())
	}
	// The sampler (every 100 ms with the boot trace) saw the loop.
	if res.Trace == nil || len(res.Trace.Profile) != 1 || res.Trace.Profile[0].Function != "0x1000000" {
		t.Errorf("profile %+v", res.Trace)
	}
}

// A triple fault (no IDT, then #UD) is a clear error, not a hang.
func TestLiveTripleFault(t *testing.T) {
	_, _, err := runCode(t, []byte{0x0f, 0x0b}, 1, 10*time.Second) // ud2
	var ge *GuestError
	if !errors.As(err, &ge) || !strings.Contains(err.Error(), "triple") {
		t.Fatalf("err %v", err)
	}
}
