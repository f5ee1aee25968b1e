package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"godvm/devices/dsa"
	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/mediator"
)

// DSAMediatorScenario measures the mediated DSA (godvm dsa-server --vdev
// ... --vdev ...) without guests: in-process vfio-user clients, each with
// its own virtual DSA carved from one software parent, store 64-byte
// MEMMOVEs into their mapped portal pages (as a guest's MOVDIR64B would)
// and wait for the completion records. Reported: descriptors/s of one
// client alone, of two clients at once (aggregate and each), and the
// ratio two/one.
func DSAMediatorScenario() Scenario {
	return Scenario{
		Name:        "dsa-mediator",
		Description: "mediated DSA: descriptors/s of two vfio-user clients sharing one parent vs one alone (mapped portals, memmove 64 B)",
		Run:         runDSAMediator,
	}
}

// newMediatedRig is a portalRig on one virtual DSA of a mediator.
func newMediatedRig(v *mediator.VDev) (*portalRig, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, s, err := vfiouser.Socketpair()
	if err != nil {
		return nil, err
	}
	// Two clients, each with a spinning submitter, engine and portal
	// poller, on a small shared host: a completion can wait hundreds of
	// milliseconds for a CPU (seen: 400 ms at load 10 on 2 cores), so the
	// limit is generous; a descriptor lost would still fail the run.
	rig := &portalRig{b: v.Backend(), done: make(chan error, 1), limit: 30 * time.Second}
	go func() { rig.done <- v.Server().ServeConn(s) }()
	if rig.c, err = vfiouser.NewClient(a, "dsa", vfiouser.WithLogger(quiet)); err != nil {
		a.Close()
		<-rig.done
		return nil, err
	}
	fail := func(err error) (*portalRig, error) {
		rig.close()
		return nil, err
	}
	if rig.mem, err = guestmem.New([]guestmem.Spec{{GPA: 0, Size: 8 << 20}}); err != nil {
		return fail(err)
	}
	if err := vfio.MapAllRAM(rig.c, rig.mem); err != nil {
		return fail(err)
	}
	if err := rig.enable(); err != nil {
		return fail(err)
	}
	ri, err := rig.c.RegionInfo(2)
	if err != nil || !ri.Mappable() {
		return fail(fmt.Errorf("portal BAR not mappable (%+v, %v)", ri, err))
	}
	if rig.bar, err = rig.c.MapRegion(2, 0, ri.Size); err != nil {
		return fail(err)
	}
	return rig, nil
}

// mediatedRate runs rigs at once for dur and returns each one's
// descriptors/s.
func mediatedRate(rigs []*portalRig, dur time.Duration) ([]float64, error) {
	seqs := make([]int, len(rigs))
	for i, p := range rigs { // warm up: engines spinning, pages touched
		if err := p.run(2048, &seqs[i]); err != nil {
			return nil, err
		}
	}
	counts := make([]int, len(rigs))
	errs := make([]error, len(rigs))
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(dur)
	for i, p := range rigs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if err := p.run(256, &seqs[i]); err != nil {
					errs[i] = err
					return
				}
				counts[i] += 256
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	rates := make([]float64, len(rigs))
	for i := range rigs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		rates[i] = float64(counts[i]) / el
	}
	return rates, nil
}

func runDSAMediator(ctx context.Context, env *Env, r *Recorder) error {
	dur := time.Second
	if env.Quick {
		dur = 200 * time.Millisecond
	}
	// The parent: 2 WQs, 128 entries, 2 groups, 2 engines; each client a
	// DSA of 1 WQ (64 entries), 1 group, 1 engine.
	parent := dsa.Config{WQs: 2, WQSize: 2 * portalWQSize, Groups: 2, Engines: 2, Version: 0x100}
	m, err := mediator.New(parent, true, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer m.Close()
	var rigs []*portalRig
	defer func() {
		for _, p := range rigs {
			p.c.UnmapRegion(p.bar)
			p.c.Close()
			<-p.done
			p.mem.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		v, err := m.Add(mediator.VDevSpec{Socket: fmt.Sprintf("bench-%d", i), WQs: 1, WQSize: portalWQSize, Groups: 1, Engines: 1})
		if err != nil {
			return err
		}
		p, err := newMediatedRig(v)
		if err != nil {
			return fmt.Errorf("mediated DSA client %d: %w", i, err)
		}
		rigs = append(rigs, p)
	}
	r.Info("mediator parent", parent.String())
	if ctx.Err() != nil {
		return ctx.Err()
	}
	one, err := mediatedRate(rigs[:1], dur)
	if err != nil {
		return fmt.Errorf("one client: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	two, err := mediatedRate(rigs, dur)
	if err != nil {
		return fmt.Errorf("two clients: %w", err)
	}
	r.Add("mediated DSA, one client alone: descriptors/s (memmove 64 B)", "ops/s", one[0])
	r.Add("mediated DSA, two clients sharing one parent: aggregate descriptors/s", "ops/s", two[0]+two[1])
	r.Add("mediated DSA, two clients: client A descriptors/s", "ops/s", two[0])
	r.Add("mediated DSA, two clients: client B descriptors/s", "ops/s", two[1])
	r.Add("mediated DSA, aggregate two clients / one alone", "ratio", (two[0]+two[1])/one[0])
	return nil
}
