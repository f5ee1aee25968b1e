package bench

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"godvm/devices/dsa"
	"godvm/devices/pci"
	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/dsabackend"
)

// The software DSA behind a vfio-user server (what `godvm dsa-server`
// runs), in this process: a client over a socket pair maps the server's
// portal BAR (the polled shared page) and stores descriptors into it as a
// guest's MOVDIR64B into a memory slot would, with no exit and no message
// per descriptor; the server's poller takes them, the engine runs them and
// writes completion records into the client's memory.

const (
	portalWQSize = 64
	portalWindow = 32 // descriptors in flight (< the WQ size and the 64 slots of a portal page)
	portalCR     = 0x100000
	portalSrc    = 0x200000
	portalDst    = 0x300000
)

type portalRig struct {
	b    *dsabackend.Backend
	c    *vfiouser.Client
	mem  *guestmem.Memory
	bar  []byte
	done chan error
	// limit is how long run waits for one completion record (0: 2 s).
	limit time.Duration
}

func newPortalRig() (*portalRig, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := dsa.Config{WQs: 1, WQSize: portalWQSize, Groups: 1, Engines: 1, Version: 0x100}
	b, err := dsabackend.New(cfg, true, quiet)
	if err != nil {
		return nil, err
	}
	a, s, err := vfiouser.Socketpair()
	if err != nil {
		b.Close()
		return nil, err
	}
	rig := &portalRig{b: b, done: make(chan error, 1)}
	srv := vfiouser.NewServer(b, quiet)
	go func() { rig.done <- srv.ServeConn(s) }()
	if rig.c, err = vfiouser.NewClient(a, "dsa", vfiouser.WithLogger(quiet)); err != nil {
		a.Close()
		<-rig.done
		b.Close()
		return nil, err
	}
	if rig.mem, err = guestmem.New([]guestmem.Spec{{GPA: 0, Size: 8 << 20}}); err != nil {
		rig.close()
		return nil, err
	}
	if err := vfio.MapAllRAM(rig.c, rig.mem); err != nil {
		rig.close()
		return nil, err
	}
	if err := rig.enable(); err != nil {
		rig.close()
		return nil, err
	}
	ri, err := rig.c.RegionInfo(2)
	if err != nil || !ri.Mappable() {
		rig.close()
		return nil, fmt.Errorf("portal BAR not mappable (%+v, %v)", ri, err)
	}
	if rig.bar, err = rig.c.MapRegion(2, 0, ri.Size); err != nil {
		rig.close()
		return nil, err
	}
	return rig, nil
}

func (p *portalRig) w(region uint32, off, v uint64, n int) error {
	return p.c.WriteRegion(region, off, binary.LittleEndian.AppendUint64(nil, v)[:n])
}

// enable configures a kernel dedicated WQ 0 in group 0 as idxd does
// (commands complete synchronously inside the register write).
func (p *portalRig) enable() error {
	const dedicated, prio, priv = 1, 10 << 4, 1 << 29
	steps := []struct {
		region uint32
		off, v uint64
		n      int
	}{
		{vfio.PCIConfigRegionIndex, pci.RegCommand, pci.CmdMemory | pci.CmdBusMaster, 2},
		{0, dsa.WQCFGOffset, portalWQSize, 4},
		{0, dsa.WQCFGOffset + 8, dedicated | prio | priv, 4},
		{0, dsa.WQCFGOffset + 12, 21 | 5<<5, 4},
		{0, dsa.GRPCFGOffset, 1, 8},
		{0, dsa.GRPCFGOffset + 32, 1, 8},
		{0, dsa.GRPCFGOffset + 40, 1 | 1<<3 | 64<<20, 8},
		{0, dsa.RegCmd, dsa.CmdEnableDevice << 20, 4},
		{0, dsa.RegCmd, dsa.CmdEnableWQ << 20, 4},
	}
	for _, s := range steps {
		if err := p.w(s.region, s.off, s.v, s.n); err != nil {
			return err
		}
		if s.off == dsa.RegCmd && s.region == 0 {
			var b [4]byte
			if err := p.c.ReadRegion(0, dsa.RegCmdSts, b[:]); err != nil {
				return err
			}
			if st := binary.LittleEndian.Uint32(b[:]); st != 0 {
				return fmt.Errorf("DSA command %#x: CMDSTS %#x", s.v, st)
			}
		}
	}
	return nil
}

func (p *portalRig) close() {
	if p.bar != nil {
		p.c.UnmapRegion(p.bar)
	}
	p.c.Close()
	<-p.done
	p.b.Close()
	if p.mem != nil {
		p.mem.Close()
	}
}

// run submits n 64-byte MEMMOVEs through the mapped portal, at most
// portalWindow in flight, and returns when all have completed.
func (p *portalRig) run(n int, seq *int) error {
	var d [64]byte
	le := binary.LittleEndian
	le.PutUint32(d[4:], uint32(dsa.FlagCRAV|dsa.FlagRCR)|uint32(dsa.OpMemMove)<<24)
	le.PutUint64(d[16:], portalSrc)
	le.PutUint32(d[32:], 64)
	crOf := func(i int) uint64 { return portalCR + uint64(crStride*(i%portalWindow)) }
	// The records as the guest sees them: a load of its own memory per
	// poll, not a guest-memory lookup (which would cost the client more
	// than the engine spends on the descriptor).
	crs, err := p.mem.Slice(portalCR, crStride*portalWindow)
	if err != nil {
		return err
	}
	status := func(i int) byte {
		w := atomic.LoadUint32((*uint32)(unsafe.Pointer(&crs[crStride*(i%portalWindow)])))
		return byte(w)
	}
	wait := func(i int) error {
		t0 := time.Now()
		for spins := 0; ; spins++ {
			if st := status(i); st != 0 {
				if st != dsaOK {
					return fmt.Errorf("mapped portal: completion status %#x", st)
				}
				return nil
			}
			if spins%64 == 63 {
				runtime.Gosched()
				if limit := cmp.Or(p.limit, 2*time.Second); time.Since(t0) > limit {
					return fmt.Errorf("mapped portal: no completion record after %v", limit)
				}
			}
		}
	}
	start := *seq
	for i := start; i < start+n; i++ {
		if i-portalWindow >= start {
			if err := wait(i - portalWindow); err != nil {
				return err
			}
		}
		atomic.StoreUint32((*uint32)(unsafe.Pointer(&crs[crStride*(i%portalWindow)])), 0)
		le.PutUint64(d[8:], crOf(i))
		le.PutUint64(d[24:], portalDst+uint64(64*(i%portalWindow)))
		// The guest's MOVDIR64B into the next slot of the WQ's portal
		// page (idxd advances 64 bytes per descriptor). Go has no 64-byte
		// store: bytes 8-63 first, then the first 8 bytes (what the
		// poller looks at) with an atomic store.
		slot := p.bar[dsa.PortalPage+64*(i%64):][:64]
		copy(slot[8:], d[8:])
		atomic.StoreUint64((*uint64)(unsafe.Pointer(&slot[0])), le.Uint64(d[:8]))
	}
	for i := max(start, start+n-portalWindow); i < start+n; i++ {
		if err := wait(i); err != nil {
			return err
		}
	}
	*seq = start + n
	return nil
}

// latency submits one 64-byte MEMMOVE at a time through the mapped portal,
// gap apart, and returns the median time from the portal write to its
// completion record.
func (p *portalRig) latency(n int, gap time.Duration, seq *int) (time.Duration, error) {
	m := Metric{}
	for k := 0; k < n; k++ {
		if gap > 0 {
			time.Sleep(gap)
		}
		t0 := time.Now()
		if err := p.run(1, seq); err != nil {
			return 0, err
		}
		m.Values = append(m.Values, float64(time.Since(t0)))
	}
	m.Summarise()
	return time.Duration(m.Median), nil
}

// portalThroughput reports descriptors/s through the mapped portal, the
// latency of one descriptor (engine spinning, and after 200 ms idle) and
// the server side's idle CPU (poller and engine parked) afterwards.
func portalThroughput(ctx context.Context, r *Recorder, dur time.Duration) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	p, err := newPortalRig()
	if err != nil {
		return fmt.Errorf("vfio-user DSA: %w", err)
	}
	defer p.close()
	seq := 0
	_, nsPerOp, err := ThroughputN(64, dur, func(n int) error { return p.run(n, &seq) })
	if err != nil {
		return err
	}
	r.Add("descriptors/s through a mapped vfio-user portal (memmove 64 B)", "ops/s", 1e9/nsPerOp)
	warm, err := p.latency(2000, 0, &seq)
	if err != nil {
		return err
	}
	cold, err := p.latency(5, 200*time.Millisecond, &seq)
	if err != nil {
		return err
	}
	r.Add("mapped portal write → completion record, engine spinning", "µs", warm.Seconds()*1e6)
	r.Add("mapped portal write → completion record, after 200 ms idle", "µs", cold.Seconds()*1e6)
	// The page's poller sleeps a tenth of the idle time so far (up to
	// 100 ms): measured once it has been idle for a second.
	r.Add("idle CPU, vfio-user DSA server with mapped portal", "ms/s", idleCPU(time.Second, time.Second))
	return nil
}
