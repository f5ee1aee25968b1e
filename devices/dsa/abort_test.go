package dsa

import (
	"testing"
	"time"

	"godvm/guestmem"
)

// gate is an Interrupter that blocks the engine raising vector 1 until
// released, so descriptors pile up behind it in the WQ.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func (g *gate) Notify(v int) {
	if v == 1 {
		g.entered <- struct{}{}
		<-g.release
	}
}

func gatedRig(t *testing.T) (*rig, *gate) {
	ram := make([]byte, memSize)
	mem, err := guestmem.FromBytes(guestmem.NewRegion(0, ram, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{entered: make(chan struct{}, 1), release: make(chan struct{})}
	d, err := New(mem, Config{WQs: 1, WQSize: 16, Groups: 1, Engines: 1, Version: 0x100}, g)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	d.SetBusMaster(true)
	r := &rig{t: t, d: d, mem: mem, ram: ram, intr: newRecorder()}
	r.configWQ(0, 16, 0, kernelDWQ, 21, 5)
	r.configGroup(0, 1, 1)
	// commands without int_req: the gate only passes vector 1 through its channel
	r.w32(RegCmd, CmdEnableDevice<<20)
	r.w32(RegCmd, CmdEnableWQ<<20)
	if st := r.r32(RegCmdSts); st != 0 {
		t.Fatalf("enable %#x", st)
	}
	return r, g
}

func TestAbortWQDiscardsQueued(t *testing.T) {
	r, g := gatedRig(t)
	blocker := newDesc(OpNOOP, rcr|FlagRCI, crA, 0, 0, 0)
	put16(blocker, 36, 1)
	if !r.submit(0, blocker) {
		t.Fatal("blocker refused")
	}
	<-g.entered // the only engine is now stuck raising the interrupt
	for i := range 5 {
		if !r.submit(0, newDesc(OpNOOP, rcr, 0x3000+32*uint64(i), 0, 0, 0)) {
			t.Fatal("queued descriptor refused")
		}
	}
	if occ := r.r32(r.wqcfgOff(0)+24) & 0xffff; occ != 6 {
		t.Fatalf("occupancy %d, want 6", occ)
	}
	done := make(chan struct{})
	go func() {
		r.w32(RegCmd, CmdAbortWQ<<20|1)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Abort WQ returned while a descriptor was still in progress")
	case <-time.After(50 * time.Millisecond):
	}
	close(g.release)
	<-done
	if st := r.r32(RegCmdSts); st != 0 {
		t.Fatalf("Abort WQ %#x", st)
	}
	if r.ram[crA] != StatusSuccess {
		t.Fatal("the descriptor in progress must complete")
	}
	for i := range 5 {
		if s := r.ram[0x3000+32*i]; s != 0 {
			t.Fatalf("aborted descriptor %d wrote status %#x", i, s)
		}
	}
	if occ := r.r32(r.wqcfgOff(0)+24) & 0xffff; occ != 0 {
		t.Fatalf("occupancy %d after abort", occ)
	}
	// The WQ stays enabled and usable.
	if !r.submit(0, newDesc(OpNOOP, rcr, 0x3100, 0, 0, 0)) {
		t.Fatal("WQ unusable after abort")
	}
	r.w32(RegCmd, CmdDrainWQ<<20|1)
	if r.ram[0x3100] != StatusSuccess {
		t.Fatal("descriptor after abort not executed")
	}
}

func TestDrainWaitsForQueued(t *testing.T) {
	r, g := gatedRig(t)
	blocker := newDesc(OpNOOP, rcr|FlagRCI, crA, 0, 0, 0)
	put16(blocker, 36, 1)
	r.submit(0, blocker)
	<-g.entered
	for i := range 5 {
		r.submit(0, newDesc(OpNOOP, rcr, 0x3000+32*uint64(i), 0, 0, 0))
	}
	done := make(chan struct{})
	go func() {
		r.w32(RegCmd, CmdDisableWQ<<20|1) // disable = stop accepting, then drain
		close(done)
	}()
	time.Sleep(20 * time.Millisecond)
	if r.submit(0, newDesc(OpNOOP, rcr, 0x3100, 0, 0, 0)) {
		t.Fatal("WQ being disabled accepted a descriptor")
	}
	close(g.release)
	<-done
	for i := range 5 {
		if s := r.ram[0x3000+32*i]; s != StatusSuccess {
			t.Fatalf("queued descriptor %d status %#x: Disable WQ must let it complete", i, s)
		}
	}
	if r.r32(r.wqcfgOff(0)+24)>>30 != 0 {
		t.Fatal("WQ still enabled")
	}
}
