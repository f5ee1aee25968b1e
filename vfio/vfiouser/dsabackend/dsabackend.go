// Package dsabackend serves the software DSA (devices/dsa) as a vfio-user
// Backend: region 7 is its PCI configuration space, region 0 BAR0 (registers,
// MSI-X table and PBA), region 2 the portal BAR. MSI-X vectors raised by the
// model are forwarded to the eventfds the client passed with SET_IRQS.
//
// With Mapped set, the whole portal BAR is also offered as one sparse-mmap
// area backed by a polled shared page (vfiouser.PortalPage), so a guest's
// portal writes reach the server without a VM exit; trapped REGION_WRITEs
// keep working either way. The engines poll that page while they spin for
// work (dsa.Device.SetIdlePoll), so a descriptor written while one spins is
// taken and run by it; the page's own goroutine covers the time they are
// parked (see vfiouser.PortalPage).
//
// The model takes its guest memory at construction, so the DSA function is
// rebuilt (fresh, reset state) whenever the client's DMA mappings change;
// godvm's client maps all RAM once before touching the device, so in
// practice this happens at connect and disconnect only.
package dsabackend

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"

	"godvm/devices/bus"
	"godvm/devices/dsa"
	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
)

// Backend is the DSA behind a vfio-user server.
type Backend struct {
	cfg    dsa.Config
	mapped bool
	log    *slog.Logger

	mu     sync.RWMutex // fn and its memory; writers rebuild
	fn     *dsa.Function
	host   vfiouser.Host
	fwd    *forwarder
	portal *vfiouser.PortalPage
}

// New builds the backend. mapped offers the portal BAR as shared memory.
func New(cfg dsa.Config, mapped bool, log *slog.Logger) (*Backend, error) {
	if log == nil {
		log = slog.Default()
	}
	b := &Backend{cfg: cfg, mapped: mapped, log: log}
	empty, _ := guestmem.FromBytes()
	if err := b.build(empty); err != nil {
		return nil, err
	}
	if mapped {
		p, err := vfiouser.NewPortalPage(int(cfg.PortalBARSize()), b.submitMapped)
		if err != nil {
			b.Close()
			return nil, err
		}
		// The engines poll the page while they spin for work (their
		// spin window, --dsa spin=...); the page's goroutine covers the
		// time they are parked: it sleeps (a tenth of the idle time,
		// 1 ms to 100 ms), and after it has taken descriptors itself it
		// spins for the same window, within the Go scheduler, until the
		// engine it woke is spinning again.
		p.Spin = cfg.SpinWindow()
		if p.Spin == 0 {
			p.Spin = -1
		}
		b.portal = p
		b.fn.Dev.SetIdlePoll(b.idlePoll)
		p.Start()
	}
	return b, nil
}

// build makes a fresh DSA function over mem (caller holds mu or is New).
func (b *Backend) build(mem *guestmem.Memory) error {
	if b.fn != nil {
		b.fn.Close()
		b.fn = nil
	}
	if b.fwd != nil {
		b.fwd.close()
		b.fwd = nil
	}
	fwd, err := newForwarder(b.cfg.Vectors(), b.trigger)
	if err != nil {
		return err
	}
	p := &platform.Platform{Mem: mem, PIO: &bus.Bus{}, MMIO: &bus.Bus{}, IRQ: fwd}
	fn, err := dsa.NewFunction(p, fwd, b.cfg)
	if err != nil {
		fwd.close()
		return fmt.Errorf("dsa-server: %w", err)
	}
	// The client emulates MSI-X (enable, masks) for its guest; here every
	// vector is enabled and unmasked so the model's interrupts always reach
	// the client's eventfds.
	armMSIX(fn)
	if b.portal != nil {
		fn.Dev.SetIdlePoll(b.idlePoll)
	}
	b.fn, b.fwd = fn, fwd
	return nil
}

func armMSIX(fn *dsa.Function) {
	cap := uint32(fn.MSIX.CapOffset())
	fn.ConfigWrite(cap+pci.MSIXCtl, []byte{0, pci.MSIXEnable >> 8})
	for v := 0; v < fn.MSIX.NumVectors(); v++ {
		fn.MSIX.Table().Write(uint64(v)*pci.MSIXEntrySize+12, []byte{0, 0, 0, 0})
	}
}

func (b *Backend) trigger(v int) {
	if h := b.host; h != nil {
		h.Trigger(vfio.PCIMSIXIRQIndex, uint32(v))
	}
}

// Close stops the device and the portal poller. The device first: its
// engines poll the portal page while they spin.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.fn != nil {
		b.fn.Close()
		b.fn = nil
	}
	if b.fwd != nil {
		b.fwd.close()
		b.fwd = nil
	}
	b.mu.Unlock()
	if b.portal != nil {
		b.portal.Close()
	}
	return nil
}

func (b *Backend) Attach(h vfiouser.Host) { b.host = h }

func (b *Backend) SetMemory(m *guestmem.Memory) {
	if m == nil {
		m, _ = guestmem.FromBytes()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.build(m); err != nil {
		b.log.Error("dsa-server: rebuilding the device", "err", err)
	}
}

// dmwrRegion is the device-specific region through which ENQCMD/ENQCMDS
// reach the portal BAR with their accept/Retry answer (vfio.DMWrRegionType):
// a REGION_WRITE to the portal BAR itself is a posted write (MOVDIR64B),
// which a shared WQ ignores.
const dmwrRegion = vfio.PCINumRegions

func (b *Backend) Info() vfio.DeviceInfo {
	return vfio.DeviceInfo{Flags: vfio.DeviceFlagReset | vfio.DeviceFlagPCI, NumRegions: dmwrRegion + 1, NumIRQs: vfio.PCINumIRQs}
}

func (b *Backend) RegionInfo(index uint32) (vfio.RegionInfo, error) {
	rw := uint32(vfio.RegionFlagRead | vfio.RegionFlagWrite)
	switch index {
	case vfio.PCIConfigRegionIndex:
		return vfio.RegionInfo{Index: index, Flags: rw, Size: pci.ConfigSize}, nil
	case 0:
		return vfio.RegionInfo{Index: index, Flags: rw, Size: dsa.BAR0Size}, nil
	case 2:
		ri := vfio.RegionInfo{Index: index, Flags: rw, Size: b.cfg.PortalBARSize()}
		if b.portal != nil {
			ri.Flags |= vfio.RegionFlagMmap
			ri.Areas = []vfio.Area{{Offset: 0, Size: ri.Size}}
		}
		return ri, nil
	case dmwrRegion:
		return vfio.DMWrRegionInfo(dmwrRegion, 2, b.cfg.PortalBARSize()), nil
	}
	if index < vfio.PCINumRegions {
		return vfio.RegionInfo{Index: index}, nil
	}
	return vfio.RegionInfo{}, errors.New("dsa-server: no such region")
}

func (b *Backend) RegionFD(index uint32) (int, uint64, bool) {
	if index == 2 && b.portal != nil {
		return b.portal.FD(), 0, true
	}
	return -1, 0, false
}

func (b *Backend) IRQInfo(index uint32) (vfio.IRQInfo, error) {
	switch {
	case index == vfio.PCIMSIXIRQIndex:
		return vfio.IRQInfo{Index: index, Flags: vfio.IRQFlagEventFD | vfio.IRQFlagNoResize, Count: uint32(b.cfg.Vectors())}, nil
	case index < vfio.PCINumIRQs:
		return vfio.IRQInfo{Index: index}, nil
	}
	return vfio.IRQInfo{}, errors.New("dsa-server: no such IRQ index")
}

func (b *Backend) ReadRegion(index uint32, off uint64, p []byte) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	switch index {
	case vfio.PCIConfigRegionIndex:
		for len(p) > 0 { // config space takes widths 1, 2 and 4
			n := chunk(off, len(p))
			b.fn.ConfigRead(uint32(off), p[:n])
			off, p = off+uint64(n), p[n:]
		}
	case 0:
		b.fn.Dev.BAR0().Read(off, p)
	case 2:
		b.fn.Dev.Portals().Read(off, p)
	default:
		return errors.New("dsa-server: region not readable")
	}
	return nil
}

// chunk picks the largest naturally aligned access (≤4) at off.
func chunk(off uint64, n int) int {
	switch {
	case n >= 4 && off%4 == 0:
		return 4
	case n >= 2 && off%2 == 0:
		return 2
	}
	return 1
}

func (b *Backend) WriteRegion(index uint32, off uint64, p []byte) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	switch index {
	case vfio.PCIConfigRegionIndex:
		for len(p) > 0 {
			n := chunk(off, len(p))
			b.fn.ConfigWrite(uint32(off), p[:n])
			off, p = off+uint64(n), p[n:]
		}
		// A function-level reset (or a client that forwards MSI-X control
		// writes) leaves the model's MSI-X disabled; the client owns MSI-X
		// emulation, so keep the server side armed.
		if !b.fn.MSIX.Enabled() {
			armMSIX(b.fn)
		}
	case 0:
		b.fn.Dev.BAR0().Write(off, p)
	case 2:
		if len(p) != 64 {
			return errors.New("dsa-server: portal writes are 64 bytes")
		}
		b.fn.Dev.Portals().Write64B(off, (*[64]byte)(p), bus.MOVDIR64B)
	case dmwrRegion:
		if len(p) != 64 {
			return errors.New("dsa-server: DMWr writes are 64 bytes")
		}
		off, supervisor := vfio.DMWrTarget(off, b.cfg.PortalBARSize())
		kind := bus.ENQCMD
		if supervisor {
			kind = bus.ENQCMDS
		}
		if !b.fn.Dev.Portals().Write64B(off, (*[64]byte)(p), kind) {
			return unix.EAGAIN // Retry
		}
	default:
		return errors.New("dsa-server: region not writable")
	}
	return nil
}

// idlePoll is the engines' pass over the mapped portal while they spin.
// It runs on an engine's goroutine: a rebuild (SetMemory) holds b.mu while
// it closes the device and waits for its engines, so it must not wait for
// b.mu (TryRLock), and it submits without taking it again.
func (b *Backend) idlePoll() int {
	if !b.mu.TryRLock() {
		return 0
	}
	defer b.mu.RUnlock()
	if b.fn == nil {
		return 0
	}
	return b.portal.TryPoll(b.submitLocked)
}

func (b *Backend) submitLocked(off uint64, d *[64]byte) {
	b.fn.Dev.Portals().Write64B(off, d, bus.MOVDIR64B)
}

func (b *Backend) submitMapped(off uint64, d *[64]byte) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.fn != nil {
		b.fn.Dev.Portals().Write64B(off, d, bus.MOVDIR64B)
	}
}

func (b *Backend) Reset() error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	b.fn.Dev.Reset()
	b.fn.MSIX.Reset()
	armMSIX(b.fn)
	return nil
}

// forwarder is the model's platform.Interrupts: one local eventfd per vector,
// drained by a goroutine that triggers the client's vector.
type forwarder struct {
	vecs []*fwdVector
	stop *platform.EventFD
	done chan struct{}
	next int
}

type fwdVector struct{ ev *platform.EventFD }

func (v *fwdVector) EventFD() *platform.EventFD              { return v.ev }
func (v *fwdVector) Update(platform.MSIMessage, bool) error  { return nil }
func (v *fwdVector) Close() error                            { return nil }
func (f *forwarder) SetIRQLine(gsi uint32, level bool) error { return nil }

func newForwarder(n int, trigger func(v int)) (*forwarder, error) {
	f := &forwarder{done: make(chan struct{})}
	var err error
	if f.stop, err = platform.NewEventFD(); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		ev, err := platform.NewEventFD()
		if err != nil {
			f.closeFDs()
			return nil, err
		}
		f.vecs = append(f.vecs, &fwdVector{ev})
	}
	go f.loop(trigger)
	return f, nil
}

func (f *forwarder) NewMSIVector() (platform.MSIVector, error) {
	if f.next >= len(f.vecs) {
		return nil, errors.New("dsa-server: out of MSI-X vectors")
	}
	f.next++
	return f.vecs[f.next-1], nil
}

func (f *forwarder) loop(trigger func(v int)) {
	defer close(f.done)
	pfds := make([]unix.PollFd, len(f.vecs)+1)
	pfds[0] = unix.PollFd{Fd: int32(f.stop.Fd()), Events: unix.POLLIN}
	for i, v := range f.vecs {
		pfds[i+1] = unix.PollFd{Fd: int32(v.ev.Fd()), Events: unix.POLLIN}
	}
	for {
		if _, err := unix.Poll(pfds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if pfds[0].Revents != 0 {
			return
		}
		for i, v := range f.vecs {
			if pfds[i+1].Revents != 0 {
				if n, _ := v.ev.Read(); n > 0 {
					trigger(i)
				}
			}
		}
	}
}

func (f *forwarder) close() {
	f.stop.Signal()
	<-f.done
	f.closeFDs()
}

func (f *forwarder) closeFDs() {
	for _, v := range f.vecs {
		v.ev.Close()
	}
	f.stop.Close()
}

var _ vfiouser.Backend = (*Backend)(nil)
