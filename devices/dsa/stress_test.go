package dsa

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentSubmission: several submitters on two WQs in two groups;
// every descriptor completes, with its interrupt, and the data is right.
// With two engines per group each engine copies its descriptor out of the
// group's ring; with one, the engine runs it in its ring slot, which
// submitters waiting for room fill again the moment it retires. Run with
// -race.
func TestConcurrentSubmission(t *testing.T) {
	for _, perGroup := range []int{2, 1} {
		t.Run(fmt.Sprintf("engines-per-group=%d", perGroup), func(t *testing.T) {
			testConcurrentSubmission(t, perGroup)
		})
	}
}

func testConcurrentSubmission(t *testing.T, perGroup int) {
	r := newRig(t, Config{WQs: 2, WQSize: 64, Groups: 2, Engines: 2 * perGroup, Version: 0x100})
	r.configWQ(0, 32, 0, kernelDWQ, 21, 5)
	r.configWQ(1, 32, 0, kernelDWQ, 21, 5)
	engs := uint64(1)<<perGroup - 1
	r.configGroup(0, 1, engs)
	r.configGroup(1, 2, engs<<perGroup)
	if st := r.cmd(CmdEnableDevice, 0); st != 0 {
		t.Fatal(st)
	}
	for wq := range 2 {
		if st := r.cmd(CmdEnableWQ, uint32(wq)); st != 0 {
			t.Fatal(st)
		}
	}
	r.intr.reset()
	const per, n = 200, 1024
	fillRand(r.ram[srcA:srcA+n], 11)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wq := g % 2
			for i := range per {
				k := uint64(g*per + i)
				d := newDesc(OpMemMove, rcr|FlagRCI, 0x200000+32*k, srcA, 0x300000+k*n, n)
				put16(d, 36, uint16(wq+1))
				for !r.submit(wq, d) {
					// full WQ: the posted write was dropped; the real driver
					// never overfills (it bounds in-flight descriptors by the
					// WQ size), so wait and resubmit
					r.d.wqs[wq].mu.Lock()
					r.d.wqs[wq].waitRoomLocked(31) // occupancy < 32
					r.d.wqs[wq].mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	r.drain(0)
	r.drain(1)
	for k := range 4 * per {
		if s := r.ram[0x200000+32*k]; s != StatusSuccess {
			t.Fatalf("descriptor %d status %#x", k, s)
		}
		if !bytes.Equal(r.ram[0x300000+k*n:0x300000+(k+1)*n], r.ram[srcA:srcA+n]) {
			t.Fatalf("descriptor %d data", k)
		}
	}
	if got := r.intr.count(1) + r.intr.count(2); got != 4*per {
		t.Fatalf("%d completion interrupts, want %d", got, 4*per)
	}
	// Disable Device with work in flight, then Reset Device: no deadlock.
	for i := range 100 {
		r.submit(i%2, newDesc(OpMemMove, 0, 0, srcA, 0x300000+uint64(i)*8192, 8192))
	}
	if st := r.cmd(CmdAbortAll, 0); st != 0 {
		t.Fatal(st)
	}
	for i := range 100 {
		r.submit(i%2, newDesc(OpMemMove, 0, 0, srcA, 0x300000+uint64(i)*8192, 8192))
	}
	if st := r.cmd(CmdDisableDevice, 0); st != 0 {
		t.Fatal(st)
	}
	if st := r.cmd(CmdResetDevice, 0); st != 0 {
		t.Fatal(st)
	}
	for wq := range 2 {
		if v := r.r32(r.wqcfgOff(wq) + 24); v != 0 {
			t.Fatalf("WQ %d dword 6 after reset %#x", wq, v)
		}
	}
}

func TestRunner(t *testing.T) {
	ram := make([]byte, memSize)
	mem := mustMem(t, ram)
	fillRand(ram[srcA:srcA+8192], 12)
	descs := [][64]byte{
		*newDesc(OpMemMove, rcr, crA, srcA, dstA, 8192),
		*newDesc(OpCRCGen, rcr, crB, srcA, 0, 8192),
	}
	if err := RunDescriptors(mem, 2, descs); err != nil {
		t.Fatal(err)
	}
	if ram[crA] != StatusSuccess || ram[crB] != StatusSuccess || !bytes.Equal(ram[dstA:dstA+8192], ram[srcA:srcA+8192]) {
		t.Fatalf("statuses %#x %#x", ram[crA], ram[crB])
	}
	if st := Execute(mem, newDesc(OpMemMove, rcr, crA, outOf, dstA, 64)); st != StatusPageFault {
		t.Fatalf("Execute status %#x", st)
	}
	if _, err := NewRunner(mem, 0); err == nil {
		t.Fatal("0 engines accepted")
	}
	r, err := NewRunner(mem, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Submit(newDesc(OpMemMove, 0, 0, outOf, dstA, 64))
	r.Wait()
	if e, ok := r.SWErrors(); !ok || e.Code != StatusPageFault || e.FaultAddr != outOf {
		t.Fatalf("SWErrors %+v %v", e, ok)
	}
}
