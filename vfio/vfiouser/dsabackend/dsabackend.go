// Package dsabackend serves the software DSA (devices/dsa) as a vfio-user
// Backend: region 7 is its PCI configuration space, region 0 BAR0 (registers,
// MSI-X table and PBA), region 2 the portal BAR. The client emulates MSI-X
// for its guest (enable, masks, the table); an interrupt the model raises
// signals the eventfd the client passed with SET_IRQS for that vector
// directly (Server.Trigger), with no MSI-X model or goroutine in between.
//
// With Mapped set, the whole portal BAR is also offered as one sparse-mmap
// area backed by a polled shared page (vfiouser.PortalPage), so a guest's
// portal writes reach the server without a VM exit; trapped REGION_WRITEs
// keep working either way. The engines poll that page while they spin for
// work (dsa.Device.SetIdlePoll), so a descriptor written while one spins is
// taken and run by it; the page's own goroutine covers the time they are
// parked (see vfiouser.PortalPage).
//
// The device is built once; when the client's DMA mappings change the
// model's memory view is switched (dsa.Device.SetMemory), its state kept.
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
	log    *slog.Logger
	layout vfiouser.PCILayout

	fn     *dsa.Function
	host   vfiouser.Host
	portal *vfiouser.PortalPage
	dead   *platform.EventFD // behind the unused MSI-X model's vectors
	closed sync.Once
}

// New builds the backend. mapped offers the portal BAR as shared memory.
func New(cfg dsa.Config, mapped bool, log *slog.Logger) (*Backend, error) {
	if log == nil {
		log = slog.Default()
	}
	b := &Backend{cfg: cfg, log: log}
	b.layout = vfiouser.PCILayout{
		Name:       "dsa-server",
		Regions:    map[uint32]uint64{vfio.PCIConfigRegionIndex: pci.ConfigSize, 0: dsa.BAR0Size, 2: cfg.PortalBARSize()},
		Mmap:       map[uint32]vfio.Area{2: {Offset: 0, Size: cfg.PortalBARSize()}},
		Extra:      map[uint32]vfio.RegionInfo{dmwrRegion: vfio.DMWrRegionInfo(dmwrRegion, 2, cfg.PortalBARSize())},
		MSIX:       cfg.Vectors(),
		NumRegions: dmwrRegion + 1,
	}
	dead, err := platform.NewEventFD()
	if err != nil {
		return nil, err
	}
	b.dead = dead
	empty, _ := guestmem.FromBytes()
	nv := noVectors{dead}
	p := &platform.Platform{Mem: empty, PIO: &bus.Bus{}, MMIO: &bus.Bus{}, IRQ: nv}
	fn, err := dsa.NewFunction(p, nv, cfg)
	if err != nil {
		dead.Close()
		return nil, fmt.Errorf("dsa-server: %w", err)
	}
	// The MSI-X capability and table stay in configuration space and BAR0
	// for the client to find; interrupts bypass them.
	fn.Dev.SetInterrupter(clientVectors{b})
	b.fn = fn
	if mapped {
		p, err := vfiouser.NewPortalPage(int(cfg.PortalBARSize()), b.submitMapped)
		if err != nil {
			fn.Close()
			dead.Close()
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
		fn.Dev.SetIdlePoll(b.idlePoll)
		p.Start()
	}
	return b, nil
}

// Device is the model behind the backend (tests, the mediator).
func (b *Backend) Device() *dsa.Device { return b.fn.Dev }

// clientVectors is the model's Interrupter: vector v signals the client's
// SET_IRQS eventfd for MSI-X vector v (nothing if none is bound).
type clientVectors struct{ b *Backend }

func (c clientVectors) Notify(v int) {
	if h := c.b.host; h != nil {
		h.Trigger(vfio.PCIMSIXIRQIndex, uint32(v))
	}
}

// noVectors gives the PCI glue's MSI-X model vectors that lead nowhere
// (one eventfd nobody signals or waits on): the model's interrupts go to
// clientVectors instead.
type noVectors struct{ ev *platform.EventFD }

func (n noVectors) NewMSIVector() (platform.MSIVector, error) { return noVector(n), nil }
func (noVectors) SetIRQLine(uint32, bool) error               { return nil }

type noVector struct{ ev *platform.EventFD }

func (n noVector) EventFD() *platform.EventFD           { return n.ev }
func (noVector) Update(platform.MSIMessage, bool) error { return nil }
func (noVector) Close() error                           { return nil }

// Close stops the device and the portal poller. The device first: its
// engines poll the portal page while they spin. Safe to call more than once.
func (b *Backend) Close() error {
	b.closed.Do(func() {
		b.fn.Close()
		if b.portal != nil {
			b.portal.Close()
		}
		b.dead.Close()
	})
	return nil
}

func (b *Backend) Attach(h vfiouser.Host) { b.host = h }

// SetMemory switches the model to the client's current DMA mappings (nil:
// none); when it returns no engine touches the previous ones.
func (b *Backend) SetMemory(m *guestmem.Memory) { b.fn.Dev.SetMemory(m) }

// dmwrRegion is the device-specific region through which ENQCMD/ENQCMDS
// reach the portal BAR with their accept/Retry answer (vfio.DMWrRegionType):
// a REGION_WRITE to the portal BAR itself is a posted write (MOVDIR64B),
// which a shared WQ ignores.
const dmwrRegion = vfio.PCINumRegions

func (b *Backend) Info() vfio.DeviceInfo { return b.layout.Info() }

func (b *Backend) RegionInfo(index uint32) (vfio.RegionInfo, error) {
	return b.layout.RegionInfo(index, b.portal != nil)
}

func (b *Backend) RegionFD(index uint32) (int, uint64, bool) {
	if index == 2 && b.portal != nil {
		return b.portal.FD(), 0, true
	}
	return -1, 0, false
}

func (b *Backend) IRQInfo(index uint32) (vfio.IRQInfo, error) { return b.layout.IRQInfo(index) }

func (b *Backend) ReadRegion(index uint32, off uint64, p []byte) error {
	switch index {
	case vfio.PCIConfigRegionIndex:
		vfiouser.ConfigAccess(off, p, b.fn.ConfigRead)
	case 0:
		b.fn.Dev.BAR0().Read(off, p)
	case 2:
		b.fn.Dev.Portals().Read(off, p)
	default:
		return errors.New("dsa-server: region not readable")
	}
	return nil
}

func (b *Backend) WriteRegion(index uint32, off uint64, p []byte) error {
	switch index {
	case vfio.PCIConfigRegionIndex:
		vfiouser.ConfigAccess(off, p, b.fn.ConfigWrite)
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
func (b *Backend) idlePoll() int { return b.portal.TryPoll(b.submitMapped) }

func (b *Backend) submitMapped(off uint64, d *[64]byte) {
	b.fn.Dev.Portals().Write64B(off, d, bus.MOVDIR64B)
}

func (b *Backend) Reset() error {
	b.fn.Dev.Reset()
	b.fn.MSIX.Reset()
	return nil
}

// ClientGone resets the device when its client disconnects (crashed or
// not): the next client finds a device in its reset state, as after an
// FLR, and nothing of the previous one's configuration or work.
func (b *Backend) ClientGone() { b.Reset() }

var (
	_ vfiouser.Backend        = (*Backend)(nil)
	_ vfiouser.ClientResetter = (*Backend)(nil)
)
