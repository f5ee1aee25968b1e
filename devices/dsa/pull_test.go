package dsa

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"godvm/guestmem"
)

// Runner.Pull: every descriptor made by fill runs once, in order, through
// the WQ, with the engines submitting all but the first batch themselves.
func TestPull(t *testing.T) {
	for _, c := range []struct {
		name           string
		engines, size  int
		spin           time.Duration
		n, batch       int
		shrinkFirst    bool // engines whose spin window has shrunk to nothing
		wantEnginesFed bool
	}{
		{name: "1engine", engines: 1, size: 64, n: 1000, batch: 16, wantEnginesFed: true},
		{name: "2engines", engines: 2, size: 128, n: 1000, batch: 64, wantEnginesFed: true},
		{name: "batch-larger-than-wq", engines: 1, size: 16, n: 500, batch: 64, wantEnginesFed: true},
		{name: "one", engines: 1, size: 16, n: 1, batch: 8},
		{name: "shrunk-window", engines: 1, size: 64, spin: 4 * time.Microsecond, n: 1000, batch: 16, shrinkFirst: true, wantEnginesFed: true},
		{name: "no-spin", engines: 1, size: 32, spin: -1, n: 300, batch: 16},
	} {
		t.Run(c.name, func(t *testing.T) {
			ram := make([]byte, 8<<20)
			mem, err := guestmem.FromBytes(guestmem.NewRegion(0, ram, -1, 0))
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewRunnerWith(mem, RunnerOptions{Engines: c.engines, WQSize: c.size, Spin: c.spin})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			const src, dst, crs = 0, 1 << 20, 6 << 20
			fillRand(ram[:1<<20], 3)
			if c.shrinkFirst {
				// Spins that run out halve the window: after a few
				// lonely descriptors the engine parks at once.
				for range 8 {
					r.Submit(newDesc(OpNOOP, 0, 0, 0, 0, 0))
					time.Sleep(2 * time.Millisecond)
				}
			}
			calls := 0
			goroutines := map[string]bool{} // where fill ran
			done := make(chan struct{})
			go func() {
				defer close(done)
				// Descriptor i copies 64 bytes to its own place and
				// writes its own completion record.
				r.Pull(0, c.n, c.batch, func(i int, d *[64]byte) {
					if i != calls {
						t.Errorf("fill(%d) after %d calls", i, calls)
					}
					calls++
					var b [64]byte
					goroutines[string(bytes.Fields(b[:runtime.Stack(b[:], false)])[1])] = true
					*d = *newDesc(OpMemMove, FlagCRAV|FlagRCR, uint64(crs+32*i), uint64(src+64*i), uint64(dst+64*i), 64)
				})
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("Pull of %d descriptors did not return in 20 s (%d made)", c.n, calls)
			}
			if calls != c.n {
				t.Errorf("fill called %d times, want %d", calls, c.n)
			}
			// The caller makes the first batch; engines that spin make
			// the rest.
			if fed := len(goroutines) > 1; fed != c.wantEnginesFed {
				t.Errorf("fill ran on %d goroutines; want engines feeding themselves: %v", len(goroutines), c.wantEnginesFed)
			}
			for i := range c.n {
				if st := ram[crs+32*i]; st != StatusSuccess {
					t.Fatalf("descriptor %d: status %#x", i, st)
				}
			}
			if !bytes.Equal(ram[dst:dst+64*c.n], ram[src:src+64*c.n]) {
				t.Error("destination differs from source")
			}
			if n := binary.LittleEndian.Uint64(ram[dst+64*c.n:]); n != 0 {
				t.Errorf("bytes written past the last descriptor's destination: %#x", n)
			}
			if w := r.d.wqs[0]; w.occupancy() != 0 {
				t.Errorf("occupancy %d after Pull", w.occupancy())
			}
			if r.d.idlePoll.Load() != nil {
				t.Error("idle poller still set after Pull")
			}
		})
	}
}

// A Pull after another one, and after pushed descriptors, on the same
// Runner: the poller of the first is gone, the second's takes over.
func TestPullRepeated(t *testing.T) {
	ram := make([]byte, 4<<20)
	mem, err := guestmem.FromBytes(guestmem.NewRegion(0, ram, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRunnerWith(mem, RunnerOptions{WQSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const cr = 2 << 20
	total := 0
	for round := range 20 {
		n := 1 + round*37%200
		if round%3 == 2 {
			for i := range n {
				r.Submit(newDesc(OpFill, FlagCRAV|FlagRCR, uint64(cr+32*(total+i)), uint64(round), uint64(64*(total+i)), 64))
			}
			r.Wait()
		} else {
			base := total
			r.Pull(0, n, 8, func(i int, d *[64]byte) {
				*d = *newDesc(OpFill, FlagCRAV|FlagRCR, uint64(cr+32*(base+i)), uint64(round), uint64(64*(base+i)), 64)
			})
		}
		for i := range n {
			if st := ram[cr+32*(total+i)]; st != StatusSuccess {
				t.Fatalf("round %d descriptor %d: status %#x", round, i, st)
			}
			if got := ram[64*(total+i)]; got != byte(round) {
				t.Fatalf("round %d descriptor %d: filled %#x", round, i, got)
			}
		}
		total += n
	}
	if total*32 > 2<<20 {
		panic(fmt.Sprint("test too large: ", total))
	}
}
