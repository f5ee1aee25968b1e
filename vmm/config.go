// Package vmm assembles a godvm machine from a Config: guest memory laid out
// by vmm/layout, the kernel loaded by vmm/boot, the legacy devices, the MP
// (and ACPI) tables, one thread per vCPU running KVM_RUN, the exit dispatch
// (exits.go), the boot trace (stats.go, trace.go, sampler.go) and the
// lifecycle (run.go) that turns guest requests into godvm's exit
// statuses.
package vmm

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"godvm/vmm/layout"
)

// BaseCmdline is always first on the guest command line.
const BaseCmdline = "console=ttyS0"

// DeviceFunc attaches a device to the machine under construction. It runs
// after guest memory, the buses, the interrupt controller and the PCI root
// exist (m.Platform(), m.PCI(), m.KVMVFIO()) and before the ACPI tables are
// written, so that the tables describe what was added. Resources the device
// holds are released with m.AddCloser.
type DeviceFunc func(m *Machine) error

// Config describes a machine.
type Config struct {
	Kernel string // ELF vmlinux or bzImage (required)
	Initrd string // optional initrd/initramfs
	// GuestDecompress leaves a bzImage to decompress itself in the guest
	// (its own decompressor, with physical KASLR); by default godvm
	// decompresses the payload on the host and loads the ELF inside at
	// its link address (vmm/boot).
	GuestDecompress bool
	// Cmdline is the user's part of the guest command line: it goes last,
	// so its parameters win over BaseCmdline and HostCmdline.
	Cmdline string
	// HostCmdline holds host-compatibility parameters (from vmm/probe),
	// placed between BaseCmdline and Cmdline.
	HostCmdline []string
	CPUs        int           // 1..layout.MaxVCPUs; 0 means 1
	Memory      uint64        // bytes; 0 means layout.DefaultMemory
	Timeout     time.Duration // 0: none; else Run ends with ReasonTimeout
	BootTrace   bool          // collect exit/emulation statistics
	SystemMap   string        // System.map for RIP symbols in reports
	KVMPath     string        // default /dev/kvm
	Console     io.Writer     // serial output; default os.Stdout
	Stdin       *os.File      // serial input; nil: none
	Log         *slog.Logger  // default slog.Default()
	// Devices run in order while the machine is built (see DeviceFunc).
	Devices []DeviceFunc
	// DSAPath names the DSA data path chosen for the guest and why (by
	// cmd/godvm from vmm/probe), e.g. "pv (forced by --dsa-path)"; the boot
	// trace prints it. "" when there is no DSA or nothing was chosen. The
	// paravirtual port (layout.PortPV64B) answers whatever this says.
	DSAPath string
	// Start is when godvm started (boot-timer reference); default: New's
	// start.
	Start time.Time
}

// FullCmdline assembles the guest command line: base, host, user.
func (c *Config) FullCmdline() string {
	parts := []string{BaseCmdline}
	parts = append(parts, c.HostCmdline...)
	if s := strings.TrimSpace(c.Cmdline); s != "" {
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func (c *Config) normalize() error {
	if c.Kernel == "" {
		return fmt.Errorf("no kernel given")
	}
	if c.CPUs == 0 {
		c.CPUs = layout.DefaultVCPUs
	}
	if c.CPUs < 1 || c.CPUs > layout.MaxVCPUs {
		return fmt.Errorf("--cpus %d: must be between 1 and %d", c.CPUs, layout.MaxVCPUs)
	}
	if c.Memory == 0 {
		c.Memory = layout.DefaultMemory
	}
	if c.Timeout < 0 {
		return fmt.Errorf("--timeout %v is negative", c.Timeout)
	}
	if c.KVMPath == "" {
		c.KVMPath = "/dev/kvm"
	}
	if c.Console == nil {
		c.Console = os.Stdout
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Start.IsZero() {
		c.Start = time.Now()
	}
	return nil
}

// ParseSize parses a memory size: a number with an optional unit. K, M, G
// and T (optionally followed by "B" or "iB") are powers of 1024; "B" alone
// is bytes; a bare number is MiB, as in QEMU's -m.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	u := strings.ToUpper(t)
	mult, unitNeeded := uint64(layout.MiB), false
	switch {
	case strings.HasSuffix(u, "IB"):
		u, unitNeeded = strings.TrimSuffix(u, "IB"), true
	case strings.HasSuffix(u, "B"):
		u, mult = strings.TrimSuffix(u, "B"), 1
	}
	if n := len(u); n > 0 {
		unit := map[byte]uint64{'K': layout.KiB, 'M': layout.MiB, 'G': layout.GiB, 'T': 1 << 40}[u[n-1]]
		switch {
		case unit != 0:
			mult, u = unit, u[:n-1]
		case unitNeeded:
			return 0, fmt.Errorf("invalid size %q (want e.g. 512M or 2G)", s)
		}
	}
	v, err := strconv.ParseUint(u, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("invalid size %q (want e.g. 512M or 2G)", s)
	}
	if v > (1<<63)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return v * mult, nil
}
