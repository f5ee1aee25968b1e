package vmm

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"godvm/addr"
	"godvm/devices/bus"
	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/guestmem"
	"godvm/kvm"
	"godvm/vmm/boot"
	"godvm/vmm/emulate"
	"godvm/vmm/layout"
	"godvm/vmm/legacy"
	"godvm/vmm/mptable"
	"godvm/vmm/sysmap"
	"godvm/vmm/x86"
)

// InputError marks errors in what the user gave (files, sizes, flags): the
// CLI prints them as one line and exits 1.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(format string, a ...any) error { return &InputError{fmt.Errorf(format, a...)} }

// Machine is a built, not yet running (or finished) VM.
type Machine struct {
	cfg    Config
	kernel *boot.Kernel
	ram    []addr.Range
	initrd struct {
		addr, size uint64
	}
	cmdline string
	syms    *sysmap.Map

	sys  *kvm.System
	vm   *kvm.VM
	mem  *guestmem.Memory
	pio  *bus.Bus
	mmio *bus.Bus
	plat *platform.Platform
	emu  *emulate.Emulator

	pci       *pci.Root
	serial    *legacy.Serial
	bootTimer *legacy.BootTimer
	vcpus     []*vcpu
	rsdp      uint64
	kvmVFIO   *KVMVFIO // created by the first kernel VFIO device

	stats   stats
	stopMu  sync.Mutex
	stopped atomic.Bool
	stopCh  chan struct{}
	result  Result // set by the first stop
	closers []func() error
}

// New validates cfg, builds the VM and loads the kernel. Problems with the
// user's input (files, sizes) are reported as *InputError before /dev/kvm
// is opened.
func New(cfg Config) (*Machine, error) {
	if err := cfg.normalize(); err != nil {
		return nil, &InputError{err}
	}
	m := &Machine{cfg: cfg, stopCh: make(chan struct{})}
	if err := m.checkInput(false); err != nil {
		if m.kernel != nil {
			m.kernel.Close()
		}
		return nil, err
	}
	if m.kernel.Format == boot.FormatBzImage && cfg.SystemMap != "" && !strings.Contains(m.cmdline, "nokaslr") {
		cfg.Log.Warn("a bzImage randomises its address (KASLR): add nokaslr to --cmdline for --system-map to name RIPs")
	}
	t0 := time.Now()
	if err := m.build(); err != nil {
		m.kernel.Close()
		m.Close()
		return nil, err
	}
	cfg.Log.Debug("machine built", "took", time.Since(t0), "cpus", cfg.CPUs, "memory_mib", cfg.Memory>>20,
		"kernel", m.kernel.Format.String(), "initrd_at", fmt.Sprintf("%#x", m.initrd.addr), "acpi", m.rsdp != 0)
	return m, nil
}

// Check validates cfg and the files it names without touching KVM: what
// New would reject as *InputError.
func Check(cfg Config) error {
	if err := cfg.normalize(); err != nil {
		return &InputError{err}
	}
	m := &Machine{cfg: cfg}
	err := m.checkInput(true)
	if m.kernel != nil {
		m.kernel.Close()
	}
	return err
}

// checkInput reads and checks every file and size before KVM is touched.
// quick leaves a bzImage's payload compressed (Check: New decompresses it
// and reports what only decompressing finds).
func (m *Machine) checkInput(quick bool) error {
	c := &m.cfg
	ram, err := layout.RAM(c.Memory)
	if err != nil {
		return inputErr("--memory: %v", err)
	}
	m.ram = ram
	k, err := boot.ReadKernelWith(c.Kernel, boot.Options{GuestDecompress: c.GuestDecompress, HeaderOnly: quick})
	if err != nil {
		return &InputError{err}
	}
	m.kernel = k
	switch {
	case quick:
	case k.Format == boot.FormatBzImageELF:
		c.Log.Debug("kernel: godvm decompressed the bzImage's payload and enters the ELF inside at its link address; "+
			"physical KASLR (done by the kernel's own decompressor) is off (--guest-decompress keeps it)",
			"compression", k.Compression, "elf_mib", fmt.Sprintf("%.1f", float64(k.Decompressed)/(1<<20)), "start", fmt.Sprintf("%#x", k.Start))
	case k.Note != "":
		c.Log.Debug("kernel: " + k.Note)
	}
	if err := k.CheckFits(ram); err != nil {
		return inputErr("kernel %s: %v", c.Kernel, err)
	}
	m.cmdline = c.FullCmdline()
	if err := k.CheckCmdline(m.cmdline); err != nil {
		return &InputError{err}
	}
	if c.Initrd != "" {
		st, err := os.Stat(c.Initrd)
		if err != nil {
			return inputErr("initrd: %v", err)
		}
		if !st.Mode().IsRegular() {
			return inputErr("initrd %s: not a regular file", c.Initrd)
		}
		f, err := os.Open(c.Initrd)
		if err != nil {
			return inputErr("initrd: %v", err)
		}
		f.Close()
		if st.Size() == 0 {
			return inputErr("initrd %s is empty", c.Initrd)
		}
		addr, err := boot.PlaceInitrd(k, uint64(st.Size()), ram)
		if err != nil {
			return inputErr("initrd %s: %v", c.Initrd, err)
		}
		m.initrd.addr, m.initrd.size = addr, uint64(st.Size())
	}
	if c.SystemMap != "" {
		s, err := sysmap.Load(c.SystemMap)
		if err != nil {
			return &InputError{err}
		}
		m.syms = s
	}
	return nil
}

func (m *Machine) build() error {
	c := &m.cfg
	sys, err := kvm.OpenPath(c.KVMPath)
	if err != nil {
		var oe *kvm.OpenError
		if errors.As(err, &oe) {
			return &InputError{err}
		}
		return err
	}
	m.sys = sys
	vm, err := sys.CreateVM()
	if err != nil {
		return fmt.Errorf("create VM: %w", err)
	}
	m.vm = vm
	if err := vm.SetTSSAddr(layout.KVMTSS); err != nil {
		return err
	}
	if err := vm.SetIdentityMapAddr(layout.KVMIdentMap); err != nil {
		return err
	}
	if err := vm.CreateIRQChip(); err != nil {
		return err
	}
	if err := vm.CreatePIT2(kvm.PITConfig{Flags: kvm.PITSpeakerDummy}); err != nil {
		return err
	}
	// Instruction bytes with emulation failures, where offered.
	if n, _ := vm.CheckExtension(kvm.CapExitOnEmulationFailure); n > 0 {
		if err := vm.EnableCap(kvm.CapExitOnEmulationFailure, 0, 1); err != nil {
			c.Log.Debug("KVM_CAP_EXIT_ON_EMULATION_FAILURE not enabled", "err", err)
		}
	}

	specs := make([]guestmem.Spec, len(m.ram))
	for i, r := range m.ram {
		specs[i] = guestmem.Spec{GPA: r.Base, Size: r.Size}
	}
	mem, err := guestmem.New(specs)
	if err != nil {
		return err
	}
	m.mem = mem
	m.closers = append(m.closers, mem.Close)
	for i, r := range mem.Regions() {
		h := r.Host()
		if err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
			Slot: uint32(i), GuestPhysAddr: r.GPA, MemorySize: r.Size,
			UserspaceAddr: addr.Host(h),
		}); err != nil {
			return fmt.Errorf("map guest RAM at %#x: %w", r.GPA, err)
		}
	}

	m.pio, m.mmio = &bus.Bus{}, &bus.Bus{}
	plat, err := newPlatform(m)
	if err != nil {
		return err
	}
	m.plat = plat
	m.emu = emulate.New(mem, m.mmio)
	m.emu.Log = c.Log
	if err := m.addLegacy(); err != nil {
		return err
	}
	if err := m.addPCIRoot(); err != nil {
		return err
	}
	for _, d := range c.Devices {
		if err := d(m); err != nil {
			return err
		}
	}
	if err := m.writeACPI(); err != nil {
		return err
	}
	if err := m.loadGuest(); err != nil {
		return err
	}
	return m.createVCPUs()
}

func (m *Machine) addLegacy() error {
	c := &m.cfg
	irq := m.plat.IRQ
	m.serial = legacy.NewSerial(c.Console, func(level bool) {
		if err := irq.SetIRQLine(layout.IRQCOM1, level); err != nil {
			c.Log.Debug("serial irq", "err", err)
		}
	})
	m.bootTimer = legacy.NewBootTimer(c.Start)
	stop := legacy.StopFunc(m.guestStop)
	devs := []struct {
		base, size uint64
		name       string
		dev        bus.Device
	}{
		{layout.PortCOM1, 8, "serial", m.serial},
		{layout.PortCMOS, 2, "cmos", legacy.NewCMOS(nil)},
		{layout.PortPOST, 1, "post", legacy.Sink{V: 0xff}},
		{layout.PortI8042Cmd, 1, "i8042", legacy.I8042{S: stop}},
		{layout.PortDebugExit, 1, "debug-exit", legacy.DebugExit{S: stop}},
		{layout.PortBootTimer, 1, "boot-timer", m.bootTimer},
		{layout.PortPVPanic, 1, "pvpanic", legacy.PVPanic{S: stop}},
		{layout.PortPM1aEvent, 4, "pm1a-evt", &legacy.PM1aEvent{}},
		{layout.PortPM1aCtrl, 2, "pm1a-cnt", &legacy.PM1aControl{S: stop}},
		// layout.PortResetCF9 (reset control) belongs to the PCI root's
		// configuration ports; addPCIRoot wires its reset to the lifecycle.
	}
	for _, d := range devs {
		if err := m.pio.Register(d.base, d.size, d.name, d.dev); err != nil {
			return err
		}
	}
	// The debug-exit port is written with a 32-bit outl, which would
	// overlap the boot timer at 0xf5: the exit dispatch routes wide
	// accesses by their first port (see pioAccess).
	return nil
}

// loadGuest writes the kernel, initrd, boot structures and tables.
func (m *Machine) loadGuest() error {
	mem := m.mem
	if err := m.kernel.Load(mem); err != nil {
		return err
	}
	m.kernel.Close() // the file mapping is no longer needed
	if m.initrd.size > 0 {
		if err := m.loadInitrd(); err != nil {
			return err
		}
	}
	if err := mem.WriteAt(x86.GDTBytes(), layout.BootGDT); err != nil {
		return err
	}
	if err := mem.Fill(layout.BootIDT, 8, 0); err != nil {
		return err
	}
	gpa, pt := x86.PageTables()
	if err := mem.WriteAt(pt, gpa); err != nil {
		return err
	}
	mp, err := mptable.Bytes(layout.MPTable, m.cfg.CPUs)
	if err != nil {
		return err
	}
	if err := mem.WriteAt(mp, layout.MPTable); err != nil {
		return err
	}
	seed := make([]byte, boot.RNGSeedSize)
	if _, err := rand.Read(seed); err != nil {
		return fmt.Errorf("getrandom for the guest's RNG seed: %w", err)
	}
	return boot.Write(mem, m.kernel, boot.Params{
		Cmdline:    m.cmdline,
		RAM:        m.ram,
		InitrdAddr: m.initrd.addr,
		InitrdSize: m.initrd.size,
		RSDP:       m.rsdp,
		Seed:       seed,
	})
}

func (m *Machine) loadInitrd() error {
	f, err := os.Open(m.cfg.Initrd)
	if err != nil {
		return &InputError{fmt.Errorf("initrd: %w", err)}
	}
	defer f.Close()
	dst, err := m.mem.Slice(m.initrd.addr, m.initrd.size)
	if err != nil {
		return err
	}
	if _, err := io.ReadFull(f, dst); err != nil {
		return &InputError{fmt.Errorf("initrd %s: %w (did it change while loading?)", m.cfg.Initrd, err)}
	}
	return nil
}

// PCI is the PCI root complex (bus 0) devices are added to.
func (m *Machine) PCI() *pci.Root { return m.pci }

// Platform is what devices attach to.
func (m *Machine) Platform() *platform.Platform { return m.plat }

// Cmdline is the full guest command line.
func (m *Machine) Cmdline() string { return m.cmdline }

// Kernel is the parsed kernel.
func (m *Machine) Kernel() *boot.Kernel { return m.kernel }

// AddCloser registers cleanup run by Close (devices' resources).
func (m *Machine) AddCloser(f func() error) { m.closers = append(m.closers, f) }

// Close releases the VM, its vCPUs and guest memory.
func (m *Machine) Close() error {
	var first error
	for _, v := range m.vcpus {
		if err := v.cpu.Close(); err != nil && first == nil {
			first = err
		}
	}
	m.vcpus = nil
	for i := len(m.closers) - 1; i >= 0; i-- {
		if err := m.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	m.closers = nil
	if m.vm != nil {
		m.vm.Close()
		m.vm = nil
	}
	if m.sys != nil {
		m.sys.Close()
		m.sys = nil
	}
	return first
}
