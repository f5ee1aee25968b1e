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
// memory without a VM exit; the server polls the page, takes every non-zero
// 64-byte slot, zeroes it and submits it.
//
// Limits (stated, not hidden): the page has no back-pressure, so a guest
// that writes a slot again before the server consumed it loses the first
// descriptor (Linux idxd advances its portal offset by 64 bytes per
// submission, so this needs 64 unconsumed submissions), and ENQCMD's
// accept/retry answer cannot be given (always "accepted").
type PortalPage struct {
	fd     int
	mem    []byte
	submit func(off uint64, d *[64]byte)
	stop   chan struct{}
	done   sync.WaitGroup
	// Polls counts poll passes, Taken the descriptors consumed.
	Polls, Taken atomic.Uint64
}

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

// Poll takes every pending descriptor once; it returns how many it took.
func (p *PortalPage) Poll() int {
	p.Polls.Add(1)
	n := 0
	var d, again [64]byte
	for off := 0; off < len(p.mem); off += 64 {
		any := false
		for w := 0; w < 8; w++ {
			if atomic.LoadUint64(p.word(off+8*w)) != 0 {
				any = true
				break
			}
		}
		if !any {
			continue
		}
		// Copy until two reads agree: the writer's 64 bytes are complete.
		for {
			for w := 0; w < 8; w++ {
				*(*uint64)(unsafe.Pointer(&d[8*w])) = atomic.LoadUint64(p.word(off + 8*w))
			}
			for w := 0; w < 8; w++ {
				*(*uint64)(unsafe.Pointer(&again[8*w])) = atomic.LoadUint64(p.word(off + 8*w))
			}
			if d == again {
				break
			}
		}
		for w := 0; w < 8; w++ {
			atomic.StoreUint64(p.word(off+8*w), 0)
		}
		p.Taken.Add(1)
		p.submit(uint64(off), &d)
		n++
	}
	return n
}

// Polling policy: spin (yielding) for spinWindow after the last descriptor,
// then sleep in growing steps up to maxSleep. Idle cost: ~1/maxSleep wakeups
// per second; added latency after an idle period: at most maxSleep.
const (
	spinWindow = time.Millisecond
	minSleep   = 10 * time.Microsecond
	maxSleep   = 100 * time.Microsecond
)

func (p *PortalPage) loop() {
	defer p.done.Done()
	last := time.Now()
	sleep := minSleep
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		if p.Poll() > 0 {
			last, sleep = time.Now(), minSleep
			continue
		}
		if time.Since(last) < spinWindow {
			runtime.Gosched()
			continue
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, maxSleep)
	}
}

// Close stops polling and frees the page.
func (p *PortalPage) Close() error {
	if p.stop != nil {
		close(p.stop)
		p.done.Wait()
		p.stop = nil
	}
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
