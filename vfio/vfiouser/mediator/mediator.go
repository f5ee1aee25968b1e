// Package mediator serves several virtual DSAs from one parent DSA, one
// vfio-user socket per guest (godvm dsa-server --vdev ... --vdev ...).
//
// The parent is a pool of DSA resources: work queues, WQ entries, groups and
// engines. Each virtual device (VDev) is given a share of it at creation
// (its WQs map onto a contiguous range of the parent's WQs, its total WQ
// size onto that many of the parent's entries, and its groups and engines
// likewise) and shows its guest a complete DSA of exactly that shape: its
// own registers, groups, engines and WQs, which the stock idxd driver and
// accel-config configure as usual. What the guest configures is bounded by
// the share (WQCAP's total WQ size is the share, so Enable Device refuses
// more); its commands (Reset Device, Abort/Drain All, Disable/Reset WQ, ...)
// reach its share only; its reset, crash or disconnect resets its share and
// nothing else.
//
// With the software parent (--parent model) a share is served by its own
// instance of the DSA model (devices/dsa) whose engines run the share's
// descriptors, and whose memory is the vfio-user client's DMA mappings and
// nothing else: a descriptor that points outside them completes with a page
// fault and touches nothing. Interrupts go straight to the eventfds the
// client passed with SET_IRQS. With a real parent (--parent vfio=...) the
// same shares would map onto the hardware's WQs with one PASID per guest;
// docs/dsa-mediator.md has that design; OpenParent checks the device and
// says what is missing.
package mediator

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"

	"godvm/devices/dsa"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/dsabackend"
)

// DefaultParent is the software parent's shape when several --vdev share
// it: room for two guests of dsa.DefaultConfig's shape.
func DefaultParent() dsa.Config {
	return dsa.Config{WQs: 16, WQSize: 256, Groups: 8, Engines: 8, Version: 0x100}
}

// Share is the part of the parent a virtual DSA is given: parent WQs
// [FirstWQ, FirstWQ+WQs), WQSize entries, Groups groups and Engines
// engines starting at FirstGroup and FirstEngine.
type Share struct {
	FirstWQ, WQs         int
	WQSize               int
	FirstGroup, Groups   int
	FirstEngine, Engines int
}

func (s Share) String() string {
	return fmt.Sprintf("parent WQs %d-%d, %d entries, groups %d-%d, engines %d-%d",
		s.FirstWQ, s.FirstWQ+s.WQs-1, s.WQSize, s.FirstGroup, s.FirstGroup+s.Groups-1, s.FirstEngine, s.FirstEngine+s.Engines-1)
}

// VDevSpec is one --vdev: socket=PATH[,wqs=N][,wq-size=N][,groups=N][,engines=N].
// Zero counts take their default (see Mediator.Add).
type VDevSpec struct {
	Socket                       string
	WQs, WQSize, Groups, Engines int
}

// ParseVDev parses a --vdev value.
func ParseVDev(s string) (VDevSpec, error) {
	var v VDevSpec
	if strings.TrimSpace(s) == "" {
		return v, errors.New("--vdev: empty (want socket=PATH[,wqs=N][,wq-size=N])")
	}
	for _, kv := range strings.Split(s, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return v, fmt.Errorf("--vdev: %q is not key=value (keys: socket, wqs, wq-size, groups, engines)", kv)
		}
		var n *int
		switch k {
		case "socket", "path":
			if val == "" {
				return v, errors.New("--vdev: socket= is empty")
			}
			v.Socket = val
			continue
		case "wqs":
			n = &v.WQs
		case "wq-size", "wqsize", "wq_size":
			n = &v.WQSize
		case "groups":
			n = &v.Groups
		case "engines":
			n = &v.Engines
		default:
			return v, fmt.Errorf("--vdev: unknown key %q (keys: socket, wqs, wq-size, groups, engines)", k)
		}
		x, err := strconv.Atoi(val)
		if err != nil || x < 1 {
			return v, fmt.Errorf("--vdev: %s=%q is not a positive number", k, val)
		}
		*n = x
	}
	if v.Socket == "" {
		return v, errors.New("--vdev: socket=PATH is required")
	}
	return v, nil
}

// Mediator is a software parent DSA and the virtual DSAs carved from it.
type Mediator struct {
	parent dsa.Config
	mapped bool
	log    *slog.Logger

	mu    sync.Mutex
	used  Share // next free WQ/entry/group/engine (counts in the *s fields)
	vdevs []*VDev
}

// New makes a mediator over a software parent of shape parent. mapped
// offers each guest's portal BAR as shared memory (see dsabackend).
func New(parent dsa.Config, mapped bool, log *slog.Logger) (*Mediator, error) {
	if err := parent.Validate(); err != nil {
		return nil, fmt.Errorf("parent: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Mediator{parent: parent, mapped: mapped, log: log}, nil
}

// Parent returns the parent's shape.
func (m *Mediator) Parent() dsa.Config { return m.parent }

// VDevs returns the virtual devices in creation order.
func (m *Mediator) VDevs() []*VDev {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*VDev(nil), m.vdevs...)
}

// Add carves a share for spec out of what is left of the parent. Unset
// counts default to: WQs 8 (or what is left, if less), the other counts in
// proportion to the parent's per WQ (at least one each).
func (m *Mediator) Add(spec VDevSpec) (*VDev, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, u := m.parent, m.used
	left := Share{WQs: p.WQs - u.WQs, WQSize: p.WQSize - u.WQSize, Groups: p.Groups - u.Groups, Engines: p.Engines - u.Engines}
	if left.WQs == 0 || left.Groups == 0 || left.Engines == 0 || left.WQSize == 0 {
		return nil, fmt.Errorf("vdev %s: the parent (%s) is fully assigned", spec.Socket, p)
	}
	s := Share{WQs: spec.WQs, WQSize: spec.WQSize, Groups: spec.Groups, Engines: spec.Engines}
	if s.WQs == 0 {
		s.WQs = min(dsa.DefaultConfig().WQs, left.WQs)
	}
	prop := func(total int) int { return max(1, total*s.WQs/p.WQs) }
	if s.WQSize == 0 {
		s.WQSize = min(prop(p.WQSize), left.WQSize)
	}
	if s.Groups == 0 {
		s.Groups = min(prop(p.Groups), left.Groups, s.WQs)
	}
	if s.Engines == 0 {
		s.Engines = min(prop(p.Engines), left.Engines)
	}
	switch {
	case s.WQs > left.WQs:
		return nil, fmt.Errorf("vdev %s: wqs=%d but only %d of the parent's %d WQs are left", spec.Socket, s.WQs, left.WQs, p.WQs)
	case s.WQSize > left.WQSize:
		return nil, fmt.Errorf("vdev %s: wq-size=%d but only %d of the parent's %d WQ entries are left", spec.Socket, s.WQSize, left.WQSize, p.WQSize)
	case s.WQSize < s.WQs:
		return nil, fmt.Errorf("vdev %s: wq-size=%d is less than one entry per WQ (wqs=%d)", spec.Socket, s.WQSize, s.WQs)
	case s.Groups > left.Groups:
		return nil, fmt.Errorf("vdev %s: groups=%d but only %d of the parent's %d groups are left", spec.Socket, s.Groups, left.Groups, p.Groups)
	case s.Engines > left.Engines:
		return nil, fmt.Errorf("vdev %s: engines=%d but only %d of the parent's %d engines are left", spec.Socket, s.Engines, left.Engines, p.Engines)
	}
	s.FirstWQ, s.FirstGroup, s.FirstEngine = u.WQs, u.Groups, u.Engines
	cfg := dsa.Config{WQs: s.WQs, WQSize: s.WQSize, Groups: s.Groups, Engines: s.Engines,
		Version: p.Version, IntHandles: p.IntHandles, Spin: p.Spin}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("vdev %s: %w", spec.Socket, err)
	}
	b, err := dsabackend.New(cfg, m.mapped, m.log)
	if err != nil {
		return nil, fmt.Errorf("vdev %s: %w", spec.Socket, err)
	}
	v := &VDev{Index: len(m.vdevs), Spec: spec, Share: s, Config: cfg, backend: b,
		log: m.log.With("vdev", len(m.vdevs))}
	v.server = vfiouser.NewServer(b, v.log)
	m.used.WQs += s.WQs
	m.used.WQSize += s.WQSize
	m.used.Groups += s.Groups
	m.used.Engines += s.Engines
	m.vdevs = append(m.vdevs, v)
	return v, nil
}

// Close stops every virtual device.
func (m *Mediator) Close() {
	for _, v := range m.VDevs() {
		v.backend.Close()
	}
}

// VDev is one guest's virtual DSA.
type VDev struct {
	Index  int
	Spec   VDevSpec
	Share  Share
	Config dsa.Config // the shape its guest sees

	backend *dsabackend.Backend
	server  *vfiouser.Server
	log     *slog.Logger
}

// Server is the vfio-user server of this guest's device.
func (v *VDev) Server() *vfiouser.Server { return v.server }

// Backend is the device model behind it.
func (v *VDev) Backend() *dsabackend.Backend { return v.backend }

// Serve serves clients on l, one after another, until l closes.
func (v *VDev) Serve(l net.Listener) error { return v.server.Listen(l) }
