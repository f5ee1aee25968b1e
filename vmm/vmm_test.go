package vmm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godvm/devices/bus"
	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/internal/testkernel"
	"godvm/vmm/layout"
	"godvm/vmm/legacy"
	"godvm/vmm/sysmap"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"512M": 512 << 20, "2G": 2 << 30, "2g": 2 << 30, "1GiB": 1 << 30, "64MB": 64 << 20,
		"4096K": 4 << 20, "256": 256 << 20, " 1T ": 1 << 40,
		// "B" alone is bytes, not the MiB of a bare number.
		"512B": 512, "512b": 512, "33554432B": 32 << 20, "2KB": 2 << 10, "3KiB": 3 << 10,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "M", "0", "-1G", "1.5G", "12X", "99999999999999999999G", "9000000000T", "512iB", "B", "MiB"} {
		if v, err := ParseSize(bad); err == nil {
			t.Errorf("%q accepted as %d", bad, v)
		}
	}
}

// 512B is 512 bytes, which the machine then refuses as too small, before
// it reads the kernel or opens /dev/kvm.
func TestParseSizeBytesTooSmall(t *testing.T) {
	size, err := ParseSize("512B")
	if err != nil || size != 512 {
		t.Fatalf("ParseSize(512B) = %d, %v; want 512", size, err)
	}
	err = Check(Config{Kernel: "/nonexistent/vmlinux", Memory: size})
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "--memory: memory size 512 bytes is too small (minimum 32 MiB)") {
		t.Fatalf("Check with 512 bytes of RAM: %v", err)
	}
}

func TestFullCmdline(t *testing.T) {
	c := Config{HostCmdline: []string{"clearcpuid=smap", "noxsave"}, Cmdline: "  console=hvc0 quiet "}
	got := c.FullCmdline()
	if got != "console=ttyS0 clearcpuid=smap noxsave console=hvc0 quiet" {
		t.Errorf("%q", got)
	}
	// The user's parameters come last so they win.
	if !strings.HasSuffix(got, "console=hvc0 quiet") || strings.Index(got, "noxsave") > strings.Index(got, "quiet") {
		t.Error("order")
	}
	if (&Config{}).FullCmdline() != BaseCmdline {
		t.Error("empty config")
	}
}

func TestExitStatus(t *testing.T) {
	for _, c := range []struct {
		r    Result
		want int
	}{
		{Result{Reason: ReasonPowerOff}, 0},
		{Result{Reason: ReasonReset}, 0},
		{Result{Reason: ReasonDebugExit, Code: 0}, 0},
		{Result{Reason: ReasonDebugExit, Code: 7}, 3},
		{Result{Reason: ReasonPanic}, 2},
		{Result{Reason: ReasonTimeout}, 4},
		{Result{Reason: ReasonError}, 1},
		{Result{Reason: ReasonInterrupted}, 1},
		{Result{}, 1},
	} {
		if got := c.r.ExitStatus(); got != c.want {
			t.Errorf("%v code %d: status %d, want %d", c.r.Reason, c.r.Code, got, c.want)
		}
	}
	r := Result{Reason: ReasonTimeout, VCPUs: []VCPUState{{ID: 0, RIP: 0xffffffff81001012, Valid: true, Symbol: "default_idle+0x12"}, {ID: 1}}}
	s := r.Summary()
	if !strings.Contains(s, "stopped making progress") || !strings.Contains(s, "default_idle+0x12") || !strings.Contains(s, "never started") || strings.Contains(s, "vCPU 1") {
		t.Errorf("timeout summary %q", s)
	}
	if s := (Result{Reason: ReasonDebugExit, Code: 7}).Summary(); !strings.Contains(s, "value 7") {
		t.Errorf("%q", s)
	}
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Bad input is reported as *InputError before /dev/kvm is opened: the
// KVM path here does not exist, so reaching it would give another error.
func TestNewBadInput(t *testing.T) {
	kernel := writeFile(t, "vmlinux", testkernel.TinyELF())
	notKernel := writeFile(t, "notes.txt", []byte("hello, I am not a kernel\n"))
	bigInitrd := filepath.Join(t.TempDir(), "initrd")
	f, _ := os.Create(bigInitrd)
	f.Truncate(64 << 20)
	f.Close()
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing kernel", Config{Kernel: "/nonexistent/vmlinux"}, "no such file"},
		{"no kernel", Config{}, "no kernel"},
		{"not a kernel", Config{Kernel: notKernel}, "not an x86-64 Linux kernel"},
		{"kernel is a directory", Config{Kernel: t.TempDir()}, "kernel"},
		{"memory too small", Config{Kernel: kernel, Memory: 1 << 20}, "too small"},
		{"memory huge", Config{Kernel: kernel, Memory: 1 << 50}, "too large"},
		{"initrd missing", Config{Kernel: kernel, Initrd: "/nonexistent/initrd"}, "initrd"},
		{"initrd larger than RAM", Config{Kernel: kernel, Initrd: bigInitrd, Memory: 32 << 20}, "larger than guest memory"},
		{"cpus", Config{Kernel: kernel, CPUs: 1000}, "--cpus"},
		{"cmdline too long", Config{Kernel: kernel, Cmdline: strings.Repeat("a", 4000)}, "command line"},
		{"bad system map", Config{Kernel: kernel, SystemMap: notKernel}, "system map"},
	}
	for _, c := range cases {
		c.cfg.KVMPath = "/nonexistent/kvm"
		_, err := New(c.cfg)
		var ie *InputError
		if err == nil || !errors.As(err, &ie) {
			t.Errorf("%s: %v is not an InputError", c.name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %q does not mention %q", c.name, err, c.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: multi-line error %q", c.name, err)
		}
	}
	// Good input reaches /dev/kvm, whose absence is also an input error.
	_, err := New(Config{Kernel: kernel, KVMPath: "/nonexistent/kvm"})
	var ie *InputError
	if err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), "/nonexistent/kvm") {
		t.Errorf("missing /dev/kvm: %v", err)
	}
}

type irqRec struct{ lines []uint32 }

func (i *irqRec) NewMSIVector() (platform.MSIVector, error) { return nil, errors.New("no") }
func (i *irqRec) SetIRQLine(gsi uint32, level bool) error {
	if level {
		i.lines = append(i.lines, gsi)
	}
	return nil
}

// newTestMachine wires the legacy devices and the PCI root on fresh buses,
// without KVM.
func newTestMachine(t testing.TB, console *bytes.Buffer, irq platform.Interrupts) *Machine {
	t.Helper()
	m := &Machine{cfg: Config{Console: console}, stopCh: make(chan struct{}), pio: &bus.Bus{}, mmio: &bus.Bus{}}
	m.cfg.normalize()
	m.plat = &platform.Platform{PIO: m.pio, MMIO: m.mmio, IRQ: irq}
	if err := m.addLegacy(); err != nil {
		t.Fatal(err)
	}
	if err := m.addPCIRoot(); err != nil {
		t.Fatal(err)
	}
	return m
}

// The legacy ports are wired to the lifecycle: the first stop request wins.
func TestLegacyPortsStopMachine(t *testing.T) {
	var out bytes.Buffer
	irq := &irqRec{}
	m := newTestMachine(t, &out, irq)
	// Console output through the UART, IRQ 4 when THRI is enabled.
	m.pioAccess(layout.PortCOM1+4, []byte{0x08}, true) // OUT2
	m.pioAccess(layout.PortCOM1+1, []byte{0x02}, true) // IER.THRI
	m.pioAccess(layout.PortCOM1, []byte{'K'}, true)
	if out.String() != "K" || len(irq.lines) == 0 || irq.lines[0] != layout.IRQCOM1 {
		t.Errorf("serial: %q irqs %v", out.String(), irq.lines)
	}
	// Unknown ports are not found (the exit path reads 0xff).
	if m.pioAccess(0x1234, []byte{0}, false) {
		t.Error("port 0x1234 answered")
	}
	// A 32-bit outl to 0xf4 carries the whole code.
	if !m.pioAccess(layout.PortDebugExit, []byte{0x2a, 0x01, 0, 0}, true) {
		t.Fatal("debug-exit outl not dispatched")
	}
	m.pioAccess(layout.PortPVPanic, []byte{1}, true) // later requests lose
	if !m.stopped.Load() || m.result.Reason != ReasonDebugExit || m.result.Code != 0x12a {
		t.Errorf("result %+v", m.result)
	}
	if m.result.ExitStatus() != ExitFailure {
		t.Error("status")
	}
	// Boot timer.
	m.pioAccess(layout.PortBootTimer, []byte{1}, true)
	if _, ok := m.bootTimer.Elapsed(); !ok {
		t.Error("boot timer not recorded")
	}
}

func TestPanicAndPowerOff(t *testing.T) {
	for _, c := range []struct {
		port uint64
		data []byte
		want Reason
	}{
		{layout.PortPVPanic, []byte{1}, ReasonPanic},
		{layout.PortPM1aCtrl, []byte{0, 0x34}, ReasonPowerOff},
		{layout.PortResetCF9, []byte{6}, ReasonReset},
		{layout.PortI8042Cmd, []byte{0xfe}, ReasonReset},
	} {
		m := newTestMachine(t, &bytes.Buffer{}, &irqRec{})
		m.pioAccess(c.port, c.data, true)
		if m.result.Reason != c.want {
			t.Errorf("port %#x: %v, want %v", c.port, m.result.Reason, c.want)
		}
	}
}

func TestTraceWrite(t *testing.T) {
	var b bytes.Buffer
	(&Trace{Exits: map[string]uint64{"KVM_EXIT_IO": 10, "KVM_EXIT_MMIO": 3}, UnknownPorts: map[string]uint64{"in 0x61": 2},
		Emulated: "int3=1 pv-movdir64b=7", DSAPath: "pv (forced by --dsa-path)", OutsideShare: 0.25}).Write(&b)
	s := b.String()
	for _, want := range []string{"never wrote the boot timer", "KVM_EXIT_IO=10 KVM_EXIT_MMIO=3", "25.0%", "in 0x61=2",
		"emulated instructions: int3=1 pv-movdir64b=7\n", "boot-trace: DSA data path: pv (forced by --dsa-path)\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("trace lacks %q:\n%s", want, s)
		}
	}
}

// The PCI root answers config cycles: the host bridge at 00:00.0.
func TestPCIRootWired(t *testing.T) {
	m := newTestMachine(t, &bytes.Buffer{}, &irqRec{})
	m.pioAccess(layout.PortPCIConfig, []byte{0, 0, 0, 0x80}, true) // bus 0 dev 0 fn 0 reg 0
	id := make([]byte, 4)
	if !m.pioAccess(layout.PortPCIConfig+pci.ConfigDataOff, id, false) {
		t.Fatal("the configuration data port not answered")
	}
	if id[0] != 0x36 || id[1] != 0x1b {
		t.Errorf("host bridge vendor % x", id)
	}
	// ECAM reaches the same register.
	if !m.mmio.Read(layout.ECAMStart, id) || id[0] != 0x36 {
		t.Errorf("ECAM read % x", id)
	}
}

func TestACPITables(t *testing.T) {
	for _, cpus := range []int{1, 2, 64} {
		tables, rsdp, err := buildACPI(cpus)
		if err != nil {
			t.Fatal(err)
		}
		if rsdp < layout.ACPIStart || rsdp >= layout.ACPIStart+layout.ACPISize || rsdp%16 != 0 {
			t.Errorf("RSDP at %#x", rsdp)
		}
		off := rsdp - layout.ACPIStart
		if string(tables[off:off+8]) != "RSD PTR " {
			t.Errorf("no RSDP signature at %#x", rsdp)
		}
		var sum byte
		for _, b := range tables[off : off+20] {
			sum += b
		}
		if sum != 0 {
			t.Error("RSDP checksum")
		}
	}
}

func TestProfileAndRecent(t *testing.T) {
	syms, err := sysmap.Parse(strings.NewReader("ffffffff81000000 T start_kernel\nffffffff81001000 T default_idle\nffffffff81002000 T _etext\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := &Machine{syms: syms}
	idle := uint64(0xffffffff81001010)
	v0 := &vcpu{id: 0, samples: []uint64{0xffffffff81000010, idle, idle, idle, idle, idle}}
	v1 := &vcpu{id: 1, samples: []uint64{0xffffffff81000020, 0x1234}}
	m.vcpus = []*vcpu{v0, v1}
	p := m.profile(10)
	if len(p) != 3 || p[0].Function != "default_idle" || p[0].Samples != 5 || p[1].Function != "start_kernel" || p[1].Samples != 2 {
		t.Errorf("profile %+v", p)
	}
	if r := m.recent(v0); !strings.Contains(r, "stuck in default_idle") {
		t.Errorf("recent %q", r)
	}
	if r := m.recent(v1); r != "recently in start_kernel, 0x1234" {
		t.Errorf("recent %q", r)
	}
	if m.recent(&vcpu{}) != "" {
		t.Error("no samples")
	}
}

// Console input reaches the UART in order, waiting while its buffer is full.
func TestPumpInput(t *testing.T) {
	s := legacy.NewSerial(&bytes.Buffer{}, nil)
	in := bytes.Repeat([]byte("0123456789"), legacy.SerialRXMax/10+50)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { pumpInput(bytes.NewReader(in), s, stop); close(done) }()
	var got []byte
	b := []byte{0}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(in) && time.Now().Before(deadline) {
		s.Read(5, b) // LSR
		if b[0]&1 == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		s.Read(0, b)
		got = append(got, b[0])
	}
	<-done
	if !bytes.Equal(got, in) {
		t.Fatalf("got %d bytes, want %d (first difference matters)", len(got), len(in))
	}
	close(stop)
}
