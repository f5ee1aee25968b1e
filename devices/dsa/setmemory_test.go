package dsa

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestSetMemory switches the device's memory view while descriptors run:
// every descriptor completes against one view or the other (never a torn
// mix), the device stays enabled, and once SetMemory returns the engines
// no longer write to the old view.
func TestSetMemory(t *testing.T) {
	r := newRig(t, Config{WQs: 1, WQSize: 32, Groups: 1, Engines: 2, Version: 0x100})
	r.setupDWQ(32)
	ramB := make([]byte, memSize)
	memB := mustMem(t, ramB)

	const n = 4096
	const src, dst, crs = 0x10000, 0x100000, 0x200000
	for i := 0; i < 4096; i++ {
		r.ram[src+i] = byte(i*7 + 1)
		ramB[src+i] = byte(i*7 + 2)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // submitter: memmove 64 B per descriptor
		defer wg.Done()
		for i := 0; i < n && !stop.Load(); i++ {
			d := newDesc(OpMemMove, FlagCRAV|FlagRCR, crs+uint64(i%1024)*32, src+uint64(i%64)*64, dst+uint64(i%1024)*64, 64)
			for !r.submit(0, d) && !stop.Load() {
			}
		}
	}()
	r.d.SetMemory(memB)
	// From here on the old view must not change: snapshot and compare.
	snap := append([]byte(nil), r.ram...)
	wg.Wait()
	r.drain(0)
	for i := range snap {
		if snap[i] != r.ram[i] {
			t.Fatalf("old memory written at %#x after SetMemory returned", i)
		}
	}
	// The device kept its state: a descriptor now runs against view B.
	d := newDesc(OpMemMove, FlagCRAV|FlagRCR, 0x300000, src, 0x310000, 256)
	if !r.submit(0, d) {
		t.Fatal("device lost its state across SetMemory")
	}
	r.drain(0)
	if ramB[0x300000] != StatusSuccess {
		t.Fatalf("status %#x in view B", ramB[0x300000])
	}
	for i := 0; i < 256; i++ {
		if ramB[0x310000+i] != ramB[src+i] {
			t.Fatalf("copy in view B wrong at %d", i)
		}
	}
	// nil: no memory, every access faults; the old views are untouched.
	r.d.SetMemory(nil)
	snapB := append([]byte(nil), ramB...)
	r.submit(0, newDesc(OpMemMove, FlagCRAV|FlagRCR, 0x300000, src, 0x320000, 256))
	r.drain(0)
	for i := range snapB {
		if snapB[i] != ramB[i] {
			t.Fatalf("view B written at %#x after SetMemory(nil)", i)
		}
	}
}
