package vfiouser

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PortalPage is a shared-memory portal: a memfd page (or pages) the server
// offers through a sparse-mmap area, which the client maps into the guest as
// a KVM memory slot. A guest's 64-byte portal write (MOVDIR64B) then lands in
// memory without a VM exit; the server polls the page, takes every 64-byte
// slot whose first 8 bytes are non-zero (a DSA descriptor's PASID, flags and
// opcode: only a NOOP without flags, which asks for nothing, has them all
// zero), zeroes it and submits it. MOVDIR64B writes the 64 bytes at once; a
// writer without such a store (a test, a benchmark) writes the first 8
// bytes last, with an atomic store.
//
// Limits (stated, not hidden): the page has no back-pressure, so a guest
// that writes a slot again before the server consumed it loses the first
// descriptor (Linux idxd advances its portal offset by 64 bytes per
// submission, so this needs 64 unconsumed submissions), and ENQCMD's
// accept/retry answer cannot be given (always "accepted").
//
// Polling: a write to the page raises nothing, so the server must look.
// A pass checks the slot each 4 KiB page's submitter is expected to write
// next (idxd's 64-byte stride) and the ones after it while they are full;
// every fullEvery passes, and always before the poller sleeps, it checks
// every slot (in each page from the expected one on, so in submission
// order). Who polls:
//
//   - The device's idle engines, through TryPoll, while they spin for work
//     (dsabackend hands TryPoll to the DSA's engines): a descriptor written
//     while an engine is spinning is taken, submitted and run by that engine
//     within a microsecond, with no other thread involved.
//   - The page's own goroutine (Start), for the rest: it spins for Spin
//     after the last descriptor it took (not at all when Spin < 0), then
//     sleeps a tenth of the time since the last activity (a descriptor
//     taken, or an engine's pass), at least minSleep and at most MaxSleep:
//     the first descriptor after an idle period waits at most about a tenth
//     of that period longer, and the wake-ups per idle second fall to
//     1/MaxSleep (a wake-up costs about 0.1 ms of CPU on a VM).
//
// Only one pass runs at a time (TryPoll skips when another is running).
type PortalPage struct {
	fd      int
	mem     []byte
	submit  func(off uint64, d *[64]byte)
	stop    chan struct{}
	done    sync.WaitGroup
	next    []int // per 4 KiB page: the slot expected next (polling held)
	passes  uint64
	hot     uint64       // TryPoll passes (polling held)
	buf     [64]byte     // the descriptor being taken (polling held)
	polling atomic.Bool  // a pass is running
	lastHot atomic.Int64 // time (clock) of the last TryPoll pass
	lastHit atomic.Int64 // time (clock) of the last descriptor taken

	// Spin is how long the goroutine keeps polling after the last
	// descriptor before it starts sleeping (0: DefaultPortalSpin; < 0: no
	// spinning); MaxSleep the longest sleep between two of its passes when
	// idle (0: DefaultPortalMaxSleep). Set them before Start.
	Spin, MaxSleep time.Duration

	// Polls counts poll passes, Taken the descriptors consumed, Sleeps the
	// times the goroutine slept.
	Polls, Taken, Sleeps atomic.Uint64
}

// Polling policy defaults.
const (
	DefaultPortalSpin     = 50 * time.Microsecond
	DefaultPortalMaxSleep = 100 * time.Millisecond
	minSleep              = time.Millisecond // Go's timers do not sleep much less on a VM
	fullEvery             = 64               // passes
	hotEvery              = 16               // TryPoll passes between two reads of the clock
	yieldEvery            = 8                // empty passes between yields of the P while spinning
	slotsPerPage          = 4096 / 64
)

var clockBase = time.Now()

func clock() int64 { return int64(time.Since(clockBase)) }

// NewPortalPage creates size bytes (a multiple of 4096) of portal memory.
func NewPortalPage(size int, submit func(off uint64, d *[64]byte)) (*PortalPage, error) {
	if size <= 0 || size%4096 != 0 {
		return nil, fmt.Errorf("vfio-user: portal size %d is not a multiple of 4096", size)
	}
	fd, err := unix.MemfdCreate("godvm-dsa-portal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, err
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// The fd goes to the client, which could ftruncate it: the poller's next
	// load from the vanished page would be a SIGBUS that kills the server.
	// Sealing the size (and the seals themselves) makes ftruncate fail with
	// EPERM instead; the client still maps it read/write as it must.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vfio-user: sealing the portal memfd: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &PortalPage{fd: fd, mem: mem, submit: submit}, nil
}

// FD is the memfd to offer the client (offset 0).
func (p *PortalPage) FD() int { return p.fd }

// Start begins polling.
func (p *PortalPage) Start() {
	p.stop = make(chan struct{})
	p.done.Add(1)
	go p.loop()
}

func (p *PortalPage) word(off int) *uint64 { return (*uint64)(unsafe.Pointer(&p.mem[off])) }

// Poll takes every pending descriptor once; it returns how many it took
// (0 when another pass is running).
func (p *PortalPage) Poll() int { return p.pass(true, p.submit) }

// TryPoll is a quick pass (the expected slot of each page, every slot now
// and then) for a device's idle engine, submitting with submit instead of
// the page's function (the caller may hold locks that one takes); 0 when
// another pass is running.
func (p *PortalPage) TryPoll(submit func(off uint64, d *[64]byte)) int {
	if !p.polling.CompareAndSwap(false, true) {
		return 0
	}
	// The time of the engines' passes, for the page's goroutine (which
	// neither spins nor sleeps long while they poll): read the clock
	// every hotEvery passes, not on each (a pass is a few loads).
	if p.hot++; p.hot%hotEvery == 0 {
		p.lastHot.Store(clock())
	}
	return p.passLocked(false, submit)
}

// pass runs one pass unless another is running.
func (p *PortalPage) pass(full bool, submit func(off uint64, d *[64]byte)) int {
	if !p.polling.CompareAndSwap(false, true) {
		return 0
	}
	return p.passLocked(full, submit)
}

// passLocked is pass once the caller has set p.polling; it clears it.
func (p *PortalPage) passLocked(full bool, submit func(off uint64, d *[64]byte)) int {
	defer p.polling.Store(false)
	p.passes++
	if p.passes%fullEvery == 0 {
		full = true
	}
	n := p.poll(full, submit)
	if n > 0 {
		p.lastHit.Store(clock())
	}
	return n
}

// poll is one pass: the expected slot of each page (and the ones after it
// while they are full), or with full every slot.
func (p *PortalPage) poll(full bool, submit func(off uint64, d *[64]byte)) int {
	p.Polls.Add(1)
	if p.next == nil {
		p.next = make([]int, (len(p.mem)+4095)/4096)
	}
	n := 0
	for pg := range p.next {
		base := pg * 4096
		slots := min(slotsPerPage, (len(p.mem)-base)/64)
		first := p.next[pg]
		for i := 0; i < slots; i++ {
			s := (first + i) % slots
			if !p.take(base+64*s, submit) {
				if !full {
					break // the hot path stops at the first empty slot
				}
				continue
			}
			p.next[pg] = (s + 1) % slots
			n++
		}
	}
	return n
}

// take consumes the descriptor in the slot at off, if there is one.
func (p *PortalPage) take(off int, submit func(off uint64, d *[64]byte)) bool {
	if atomic.LoadUint64(p.word(off)) == 0 {
		return false
	}
	// Copy until two reads agree (a writer that stored the first 8 bytes
	// before the rest may still be writing). Into the page's buffer (the
	// pass holds p.polling): submit's pointer would move a local to the
	// heap, one allocation per descriptor.
	d := &p.buf
	var again [64]byte
	for {
		for w := 0; w < 8; w++ {
			*(*uint64)(unsafe.Pointer(&d[8*w])) = atomic.LoadUint64(p.word(off + 8*w))
		}
		for w := 0; w < 8; w++ {
			*(*uint64)(unsafe.Pointer(&again[8*w])) = atomic.LoadUint64(p.word(off + 8*w))
		}
		if *d == again {
			break
		}
	}
	for w := 0; w < 8; w++ {
		atomic.StoreUint64(p.word(off+8*w), 0)
	}
	p.Taken.Add(1)
	submit(uint64(off), d)
	return true
}

func (p *PortalPage) loop() {
	defer p.done.Done()
	spin, maxSleep := p.Spin, p.MaxSleep
	if spin == 0 {
		spin = DefaultPortalSpin
	}
	if maxSleep <= 0 {
		maxSleep = DefaultPortalMaxSleep
	}
	last := clock() // the last descriptor this goroutine took
	forceFull := true
	for iter := 1; ; iter++ {
		select {
		case <-p.stop:
			return
		default:
		}
		n := p.pass(forceFull, p.submit)
		forceFull = false
		now := clock()
		if n > 0 {
			last = now
			continue
		}
		// Spin only while no engine polls the page: an engine that spins
		// takes a descriptor within a microsecond, and a third goroutine
		// spinning beside it and its submitter takes a core from one of
		// them (on a 2-core host, most of the descriptor rate).
		if spin > 0 && now-last < int64(spin) && now-p.lastHot.Load() >= int64(spin) {
			if iter%yieldEvery == 0 {
				runtime.Gosched()
			}
			continue
		}
		// Idle here. Sleep short while anything happened lately (an
		// engine that polls now may park soon and leave the page to
		// this goroutine), longer and longer after that.
		idle := time.Duration(now - max(last, p.lastHit.Load(), p.lastHot.Load()))
		p.Sleeps.Add(1)
		time.Sleep(min(max(idle/10, minSleep), maxSleep))
		forceFull = true
	}
}

// Close stops polling and frees the page. A pass that an engine is running
// (TryPoll) finishes first; later ones do nothing.
func (p *PortalPage) Close() error {
	if p.stop != nil {
		close(p.stop)
		p.done.Wait()
		p.stop = nil
	}
	for !p.polling.CompareAndSwap(false, true) {
		runtime.Gosched()
	}
	// polling stays set: no pass touches the page any more.
	if p.mem != nil {
		unix.Munmap(p.mem)
		p.mem = nil
	}
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
	return nil
}
