package e2e

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/testdev"
	"godvm/vmm/layout"
)

// iobarScratch is what the agent's iobar scenario leaves in the device's
// scratch register (written with outl, outb, outb and outw).
const iobarScratch = 0xc0de1b36

// TestIOBar attaches a vfio-user device whose only BAR is in I/O space
// (testdev.IOBar, served from this test process), as a third-party device
// with I/O BARs would be, and boots the test kernel with it. The guest
// kernel must see the host bridge forward godvm's PCI I/O window (and no
// other ports), enumerate the device, and find its BAR0 assigned inside
// that window; the agent's iobar scenario must also use the BAR (port reads and writes of every width, checked on
// both sides: the guest's KTAP diagnostics and the device's own state).
func TestIOBar(t *testing.T) {
	testKernel(t) // skips without /dev/kvm
	dev := testdev.NewIOBar()
	sock := filepath.Join(t.TempDir(), "iobar.sock")
	l, remove, err := vfiouser.ListenSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- vfiouser.NewServer(dev, slog.New(slog.NewTextHandler(io.Discard, nil))).Listen(l) }()
	t.Cleanup(func() {
		remove()
		if err := <-served; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("vfio-user server: %v", err)
		}
	})

	out := bootAgent(t, agentRun{Scenarios: []string{"boot", "iobar"}, BootLog: true, Args: []string{"--vfio-user", sock}})
	out.wantStatus(t, 0)
	out.KTAP.wantOK(t, "boot")
	console := out.Stdout

	// The host bridge's I/O window is godvm's, and only it.
	window := fmt.Sprintf("root bus resource [io  %#04x-%#04x window]", layout.PCIIOStart, layout.PCIIOStart+layout.PCIIOSize-1)
	if !strings.Contains(console, window) {
		t.Errorf("the guest does not report the host bridge's I/O window %q:\n%s", window, grepLines(console, "root bus resource"))
	}
	if n := strings.Count(console, "root bus resource [io "); n != 1 {
		t.Errorf("the guest sees %d I/O windows, want 1:\n%s", n, grepLines(console, "root bus resource"))
	}

	// The device and its I/O BAR, inside the window.
	id := regexp.MustCompile(`pci (\S+): \[1b36:0005\] type 00 class 0xff0000`).FindStringSubmatch(console)
	if id == nil {
		t.Fatalf("the guest did not enumerate the 1b36:0005 device:\n%s", grepLines(console, "pci "))
	}
	bdf := id[1]
	bar := regexp.MustCompile(regexp.QuoteMeta("pci "+bdf+": ") + `(?:BAR 0|reg 0x10:) \[io\s+0x([0-9a-f]+)-0x([0-9a-f]+)\]`).FindStringSubmatch(console)
	if bar == nil {
		t.Fatalf("no I/O BAR 0 for %s in the guest's enumeration:\n%s", bdf, grepLines(console, bdf))
	}
	start, _ := strconv.ParseUint(bar[1], 16, 64)
	end, _ := strconv.ParseUint(bar[2], 16, 64)
	if start < layout.PCIIOStart || end >= layout.PCIIOStart+layout.PCIIOSize || end-start+1 != testdev.IOBarSize {
		t.Errorf("%s BAR 0 [io %#x-%#x]: want %d ports inside %#x-%#x", bdf, start, end, testdev.IOBarSize,
			layout.PCIIOStart, layout.PCIIOStart+layout.PCIIOSize-1)
	}
	for _, bad := range []string{"can't claim", "no compatible bridge window", "failed to assign"} {
		if strings.Contains(console, bad) {
			t.Errorf("the guest could not keep the BARs godvm assigned (%q):\n%s", bad, grepLines(console, "pci "))
		}
	}
	t.Logf("guest console:\n%s\n%s", grepLines(console, "root bus resource"), grepLines(console, bdf))

	out.KTAP.wantOK(t, "iobar")
	want := map[string]string{
		"iobar_magic":   fmt.Sprintf("%#x", testdev.IOMagic),
		"iobar_scratch": fmt.Sprintf("%#x", iobarScratch),
		"iobar_invert":  fmt.Sprintf("%#x", ^uint32(iobarScratch)),
	}
	for k, v := range want {
		if got, ok := out.KTAP.Diag(k); !ok || got != v {
			t.Errorf("KTAP %s=%q, want %q (diagnostics %q)", k, got, v, out.KTAP.Diagnostics)
		}
	}
	if got := dev.Scratch(); got != iobarScratch {
		t.Errorf("the device's scratch register is %#x, want %#x", got, iobarScratch)
	}
	if reads, writes := dev.Accesses(); reads < 4 || writes < 4 {
		t.Errorf("the device served %d reads and %d writes of its I/O BAR, want at least 4 of each", reads, writes)
	}
}

// grepLines returns the console lines that contain s.
func grepLines(console, s string) string {
	var out []string
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
