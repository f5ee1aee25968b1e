package dsa

import (
	"os"
	"os/exec"
	"regexp"
	"testing"

	"golang.org/x/sys/unix"

	"godvm/guestmem"
)

// Operations whose result is only in the completion record must request one,
// and a Drain must request a record or an interrupt: otherwise the
// descriptor is refused with Invalid Flags, the bitmask naming the flag that
// should have been 1 (SPEC Tables 8-2 and 8-3).
func TestRequiredCompletionFlags(t *testing.T) {
	r := opsRig(t)
	cases := []struct {
		name string
		d    *[64]byte
		bad  uint32 // invalid-flags bitmask; 0: accepted
	}{
		{"compare without RCR", newDesc(OpCompare, FlagCRAV, crA, srcA, dstA, 64), FlagRCR},
		{"compare pattern without RCR", newDesc(OpCompVal, FlagCRAV, crA, srcA, 0, 64), FlagRCR},
		{"create delta without RCR", func() *[64]byte {
			d := newDesc(OpCRDelta, FlagCRAV, crA, srcA, dstA, 64)
			put64(d, 40, listA)
			put32(d, 48, 80)
			return d
		}(), FlagRCR},
		{"CRC generation without RCR", newDesc(OpCRCGen, FlagCRAV, crA, srcA, 0, 64), FlagRCR},
		{"copy with CRC without RCR", newDesc(OpCopyCRC, FlagCRAV, crA, srcA, dstA, 64), FlagRCR},
		{"drain without RCR or RCI", newDesc(OpDrain, FlagCRAV, crA, 0, 0, 0), FlagRCR | FlagRCI},
		{"drain with RCR", newDesc(OpDrain, rcr, crA, 0, 0, 0), 0},
		{"compare with RCR", newDesc(OpCompare, rcr, crA, srcA, dstA, 64), 0},
		{"memmove without RCR (no result to report)", newDesc(OpMemMove, FlagCRAV, crA, srcA, dstA, 64), 0},
	}
	for _, c := range cases {
		clear(r.ram[crA : crA+32])
		r.run(c.d)
		got := r.cr(crA)
		if c.bad == 0 {
			if got.status != 0 && got.status != StatusSuccess {
				t.Errorf("%s: status %#x, want success", c.name, got.status)
			}
			continue
		}
		flags := uint32(got.extra[0]) | uint32(got.extra[1])<<8 | uint32(got.extra[2])<<16
		if got.status != StatusInvalFlags || flags != c.bad {
			t.Errorf("%s: status %#x invalid flags %#x, want %#x with %#x", c.name, got.status, flags, StatusInvalFlags, c.bad)
		}
	}
	// A Drain that asks only for an interrupt (what idxd submits after
	// handles are revoked) is fine: no record, one interrupt.
	r.intr.reset()
	clear(r.ram[crA : crA+32])
	d := newDesc(OpDrain, FlagRCI, 0, 0, 0, 0)
	put16(d, 36, 1)
	r.run(d)
	if r.intr.count(1) != 1 || swerr(r)[0]&1 != 0 {
		t.Fatalf("drain with RCI only: %d interrupts, SWERROR % x", r.intr.count(1), swerr(r))
	}
}

// Invalid Flags reported through SWERROR (no completion record address)
// carries the bitmask in qword 1 bits 63:32, with Error Info Valid (bit 7).
func TestSWErrorInvalidFlags(t *testing.T) {
	r := opsRig(t)
	r.run(newDesc(OpMemMove, 1<<15|1<<20, 0, srcA, dstA, 8))
	q := swerr(r)
	if q[0]&1 == 0 || q[0]>>8&0xff != StatusInvalFlags || q[0]>>7&1 != 1 || q[1]>>32 != 1<<15|1<<20 {
		t.Fatalf("SWERROR % x: want code 0x11, error info valid, invalid flags %#x", q, 1<<15|1<<20)
	}
	r.w64(RegSWErr, 3)
	// The missing RCR of a compare is reported the same way.
	r.run(newDesc(OpCompare, 0, 0, srcA, dstA, 64))
	if q := swerr(r); q[0]>>8&0xff != StatusInvalFlags || q[1]>>32 != FlagRCR {
		t.Fatalf("SWERROR % x: want invalid flags %#x", q, FlagRCR)
	}
	r.w64(RegSWErr, 3)
	// Other codes leave the field and bit 7 clear.
	r.run(newDesc(OpMemMove, 0, 0, outOf, dstA, 64))
	if q := swerr(r); q[0]>>8&0xff != StatusPageFault || q[0]>>7&1 != 0 || q[1]>>32 != 0 {
		t.Fatalf("page fault SWERROR % x", q)
	}
}

// isolated runs the calling test again in a child process and reports its
// result, so that a crash (a SIGBUS the test provokes) fails this test
// instead of killing the package's run. It returns true in the child, which
// then runs the test's body.
func isolated(t *testing.T) bool {
	t.Helper()
	if os.Getenv("GODVM_ISOLATED_TEST") == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "GODVM_ISOLATED_TEST="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a child process: %v\n%s", t.Name(), err, out)
	}
	return false
}

// Guest memory that is a file the device does not own (a vfio-user client's
// memfd behind `godvm dsa-server`) can shrink while descriptors run. An
// access past the new end is a SIGBUS; the engine must turn it into a
// page-fault completion, not die.
func TestMemoryShrunkUnderDevice(t *testing.T) {
	if !isolated(t) {
		return
	}
	const size = 1 << 20
	fd, err := unix.MemfdCreate("shrinking-guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	ram, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(ram)
	mem, err := guestmem.FromBytes(guestmem.NewRegion(0, ram, fd, 0))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	d, err := New(mem, DefaultConfig(), rec)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.SetBusMaster(true)
	r := &rig{t: t, d: d, mem: mem, ram: ram, intr: rec}
	r.setupDWQ(32)
	// The file shrinks to its first 64 KiB; the mapping stays 1 MiB.
	if err := unix.Ftruncate(fd, 64<<10); err != nil {
		t.Fatal(err)
	}
	const cr, src, gone = 0x1000, 0x2000, 0x80000
	r.run(newDesc(OpMemMove, rcr, cr, src, gone, 4096))
	if c := r.cr(cr); c.status != StatusPageFault|StatusFaultWrite || c.fault != gone {
		t.Fatalf("memmove into the vanished part: CR %+v, want a write page fault at %#x", c, gone)
	}
	clear(r.ram[cr : cr+32])
	r.run(newDesc(OpCompare, rcr, cr, gone, src, 4096))
	if c := r.cr(cr); c.status != StatusPageFault || c.fault != gone {
		t.Fatalf("compare from the vanished part: CR %+v, want a read page fault at %#x", c, gone)
	}
	// A completion record there goes to SWERROR as a record page fault.
	r.run(newDesc(OpNOOP, rcr, gone, 0, 0, 0))
	if q := swerr(r); q[0]&1 == 0 || q[0]>>8&0xff != StatusCRFault || q[2] != gone {
		t.Fatalf("record in the vanished part: SWERROR % x", q)
	}
	// The device still works.
	clear(r.ram[cr : cr+32])
	r.run(newDesc(OpMemMove, rcr, cr, src, src+0x4000, 64))
	if c := r.cr(cr); c.status != StatusSuccess {
		t.Fatalf("memmove inside the file afterwards: CR %+v", c)
	}
}
