package virtio

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godvm/devices/pci"
)

func newImage(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

type blkRig struct {
	m    *machine
	d    *driver
	dev  *Device
	path string
}

func newBlkRig(t testing.TB, opts BlockOptions) *blkRig {
	t.Helper()
	m := newMachine(t)
	be, err := NewBlock(opts)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := addDevice(m.p, m.root, "blk", be, be.f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close(); be.Close() })
	d := m.probe(1)
	if st := d.init(FVersion1 | BlkFFlush | BlkFSegMax | d.features()&(BlkFRO|BlkFDiscard|BlkFWriteZeroes)); st&StatusDriverOK == 0 {
		t.Fatalf("status %#x", st)
	}
	return &blkRig{m, d, dev, opts.Path}
}

// req submits one request and returns (used len, status byte).
func (r *blkRig) req(typ uint32, sector uint64, out []byte, inLen uint32) (uint32, byte, []byte) {
	d := r.d
	hdr := d.alloc(16)
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	r.m.mem.WriteAt(h[:], hdr)
	segs := []seg{{hdr, 16, false}}
	if len(out) > 0 {
		a := d.alloc(uint64(len(out)))
		r.m.mem.WriteAt(out, a)
		segs = append(segs, seg{a, uint32(len(out)), false})
	}
	var in uint64
	if inLen > 0 {
		in = d.alloc(uint64(inLen))
		r.m.mem.Fill(in, uint64(inLen), 0xee)
		segs = append(segs, seg{in, inLen, true})
	}
	st := d.alloc(1)
	r.m.mem.WriteU8(st, 0xff)
	segs = append(segs, seg{st, 1, true})
	q := d.q[0]
	head := d.submit(q, segs)
	d.kick(q)
	u := d.waitUsed(q, 1)
	if u[0][0] != uint32(head) {
		r.m.t.Fatalf("used id %d, want %d", u[0][0], head)
	}
	s, _ := r.m.mem.ReadU8(st)
	var data []byte
	if inLen > 0 {
		data = make([]byte, inLen)
		r.m.mem.ReadAt(data, in)
	}
	return u[0][1], s, data
}

func TestBlockReadWriteFlush(t *testing.T) {
	path := newImage(t, 1<<20)
	r := newBlkRig(t, BlockOptions{Path: path, ID: "serial-1"})
	if f := r.d.features(); f&(FVersion1|BlkFFlush|BlkFDiscard) != FVersion1|BlkFFlush|BlkFDiscard || f&BlkFRO != 0 {
		t.Fatalf("features %#x", f)
	}
	if c := r.m.rd(r.d.devcfg, 8); c != 2048 {
		t.Fatalf("capacity %d sectors", c)
	}
	pattern := bytes.Repeat([]byte("godvm-virtio-blk"), 4096/16)
	n, st, _ := r.req(BlkTOut, 8, pattern, 0)
	if st != BlkSOK || n != 1 {
		t.Fatalf("write: status %d len %d", st, n)
	}
	if _, st, _ = r.req(BlkTFlush, 0, nil, 0); st != BlkSOK {
		t.Fatalf("flush status %d", st)
	}
	// The host sees the pattern in the file.
	img, _ := os.ReadFile(path)
	if !bytes.Equal(img[8*512:8*512+4096], pattern) {
		t.Fatal("pattern not in the image")
	}
	n, st, data := r.req(BlkTIn, 8, nil, 4096)
	if st != BlkSOK || n != 4097 || !bytes.Equal(data, pattern) {
		t.Fatalf("read back: status %d len %d", st, n)
	}
	n, st, data = r.req(BlkTGetID, 0, nil, 20)
	if st != BlkSOK || n != 21 || string(bytes.TrimRight(data, "\x00")) != "serial-1" {
		t.Fatalf("get id: %d %d %q", st, n, data)
	}
	// Out of range and partial sectors are I/O errors, not crashes.
	if _, st, _ = r.req(BlkTIn, 2047, nil, 1024); st != BlkSIOErr {
		t.Fatalf("read past end: status %d", st)
	}
	if _, st, _ = r.req(BlkTOut, 0, make([]byte, 100), 0); st != BlkSIOErr {
		t.Fatalf("partial sector write: status %d", st)
	}
	if _, st, _ = r.req(BlkTIn, 1<<60, nil, 512); st != BlkSIOErr {
		t.Fatalf("huge sector: status %d", st)
	}
	if _, st, _ = r.req(99, 0, nil, 0); st != BlkSUnsupp {
		t.Fatalf("unknown type: status %d", st)
	}
	// Write zeroes and discard.
	seg := make([]byte, 16)
	binary.LittleEndian.PutUint64(seg[0:], 8)
	binary.LittleEndian.PutUint32(seg[8:], 8)
	if _, st, _ = r.req(BlkTWriteZeroes, 0, seg, 0); st != BlkSOK {
		t.Fatalf("write zeroes: status %d", st)
	}
	img, _ = os.ReadFile(path)
	if !bytes.Equal(img[8*512:8*512+4096], make([]byte, 4096)) {
		t.Fatal("write zeroes left data")
	}
	if _, st, _ = r.req(BlkTDiscard, 0, seg, 0); st != BlkSOK {
		t.Fatalf("discard: status %d", st)
	}
	if r.d.status()&StatusNeedsReset != 0 {
		t.Fatal("device needs reset after valid requests")
	}
	// The queue vector fired (waitUsed consumed it); the config vector did not.
	if r.d.cfgVec.Count() != 0 {
		t.Fatal("config interrupt without a config change")
	}
}

func TestBlockReadOnly(t *testing.T) {
	path := newImage(t, 64<<10)
	os.WriteFile(path, bytes.Repeat([]byte{7}, 64<<10), 0o644)
	r := newBlkRig(t, BlockOptions{Path: path, ReadOnly: true})
	if r.d.features()&BlkFRO == 0 {
		t.Fatal("RO feature not offered")
	}
	if _, st, _ := r.req(BlkTOut, 0, make([]byte, 512), 0); st != BlkSIOErr {
		t.Fatalf("write to read-only disk: status %d", st)
	}
	_, st, data := r.req(BlkTIn, 0, nil, 512)
	if st != BlkSOK || data[0] != 7 {
		t.Fatal("read from read-only disk")
	}
	img, _ := os.ReadFile(path)
	if !bytes.Equal(img, bytes.Repeat([]byte{7}, 64<<10)) {
		t.Fatal("read-only image changed")
	}
}

func TestBlockMalformedNeedsReset(t *testing.T) {
	r := newBlkRig(t, BlockOptions{Path: newImage(t, 1<<20)})
	// A chain with only a status byte: no header.
	q := r.d.q[0]
	st := r.d.alloc(1)
	r.d.submit(q, []seg{{st, 1, true}})
	r.d.kick(q)
	deadline := 0
	for r.d.status()&StatusNeedsReset == 0 {
		if deadline++; deadline > 500 {
			t.Fatal("device not marked NEEDS_RESET")
		}
		r.d.cfgVec.EventFD().Wait(10)
	}
	// A reset brings it back.
	if s := r.d.init(FVersion1); s&StatusNeedsReset != 0 || s&StatusDriverOK == 0 {
		t.Fatalf("status after reset %#x", s)
	}
	if _, st, _ := r.req(BlkTIn, 0, nil, 512); st != BlkSOK {
		t.Fatal("device unusable after reset")
	}
}

func TestBlockBadInput(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.img"), nil, 0o644)
	t.Chdir(dir)
	if _, err := ParseDiskFlag("missing.img"); err == nil || !strings.Contains(err.Error(), "missing.img: no such file or directory") {
		t.Fatalf("missing image: %v", err)
	}
	if _, err := ParseDiskFlag(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("directory: %v", err)
	}
	if _, err := NewBlock(BlockOptions{Path: "/nonexistent/disk.img"}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing image: %v", err)
	}
	if _, err := NewBlock(BlockOptions{Path: t.TempDir()}); err == nil {
		t.Fatal("directory accepted")
	}
	for _, c := range []struct {
		in   string
		want BlockOptions
		bad  bool
	}{
		{in: "a.img", want: BlockOptions{Path: "a.img"}},
		{in: "a.img,readonly", want: BlockOptions{Path: "a.img", ReadOnly: true}},
		{in: "a.img,ro,id=xyz", want: BlockOptions{Path: "a.img", ReadOnly: true, ID: "xyz"}},
		{in: "", bad: true},
		{in: "a.img,rw", bad: true},
		{in: "a.img,id=123456789012345678901", bad: true},
	} {
		got, err := ParseDiskFlag(c.in)
		if (err != nil) != c.bad || (!c.bad && got != c.want) {
			t.Errorf("ParseDiskFlag(%q) = %+v, %v", c.in, got, err)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("multi-line error %q", err)
		}
	}
}

func TestFeatureNegotiation(t *testing.T) {
	r := newBlkRig(t, BlockOptions{Path: newImage(t, 1<<20)})
	// Without VERSION_1 the device refuses FEATURES_OK.
	if st := r.d.init(BlkFFlush); st&StatusFeaturesOK != 0 {
		t.Fatalf("legacy driver accepted: %#x", st)
	}
	// Features the device did not offer are refused.
	if st := r.d.init(FVersion1 | 1<<40); st&StatusFeaturesOK != 0 {
		t.Fatalf("unoffered feature accepted: %#x", st)
	}
	// An out-of-range MSI-X vector reads back as NO_VECTOR.
	r.m.wr(r.d.common+ccConfigVec, 2, 100)
	if v := r.m.rd(r.d.common+ccConfigVec, 2); v != NoVector {
		t.Fatalf("config vector %#x", v)
	}
	// Queue select beyond the queues: size 0.
	r.m.wr(r.d.common+ccQueueSel, 2, 5)
	if r.m.rd(r.d.common+ccQueueSize, 2) != 0 {
		t.Fatal("queue 5 has a size")
	}
}

// Notifications never reach the vCPU loop: each queue's notify address has
// an ioeventfd, which follows BAR0 when the guest moves it; with memory
// decode off there is none.
func TestIOEventsFollowBAR(t *testing.T) {
	r := newBlkRig(t, BlockOptions{Path: newImage(t, 1<<20)})
	m, d := r.m, r.d
	find := func(addr uint64) int {
		n := 0
		for _, e := range m.f.IOEvents {
			if e.Addr == addr && e.Size == 2 && e.DataMatch == nil && e.Ev == r.dev.KickFD(0) {
				n++
			}
		}
		return n
	}
	old := d.q[0].notify
	if find(old) != 1 || r.dev.NotifyAddr(0) != old {
		t.Fatalf("ioeventfd at %#x: %d registrations (notify addr %#x)", old, find(old), r.dev.NotifyAddr(0))
	}
	m.cfgWrite(1, pci.RegCommand, 2, pci.CmdBusMaster)
	if find(old) != 0 || r.dev.NotifyAddr(0) != 0 {
		t.Fatal("ioeventfd left behind with memory decode off")
	}
	newBar := uint64(0x10_4000_0000)
	m.cfgWrite(1, pci.RegBAR0, 4, newBar&0xffffffff)
	m.cfgWrite(1, pci.RegBAR0+4, 4, newBar>>32)
	m.cfgWrite(1, pci.RegCommand, 2, pci.CmdMemory|pci.CmdBusMaster)
	moved := old - d.bar + newBar
	if find(moved) != 1 || find(old) != 0 || len(m.f.IOEvents) != 1 {
		t.Fatalf("ioeventfds after the move: %+v", m.f.IOEvents)
	}
	// The device still works at its new address, through the vCPU-exit
	// path too (a write to the notify register when no ioeventfd caught it).
	d.bar, d.common, d.devcfg = newBar, d.common-d.bar+newBar, d.devcfg-d.bar+newBar
	if c := m.rd(d.devcfg, 8); c != 2048 {
		t.Fatalf("capacity at the new BAR: %d", c)
	}
	q := d.q[0]
	st := d.alloc(1)
	hdr := d.alloc(16)
	m.mem.WriteAt(make([]byte, 16), hdr)
	m.mem.WriteU32(hdr, BlkTFlush)
	d.submit(q, []seg{{hdr, 16, false}, {st, 1, true}})
	m.wr(moved, 2, 0)
	d.waitUsed(q, 1)
	if s, _ := m.mem.ReadU8(st); s != BlkSOK {
		t.Fatalf("flush status %d", s)
	}
}

// What Linux negotiates: EVENT_IDX and indirect descriptors. Requests in
// indirect tables complete; the device publishes avail_event and honours
// used_event (no interrupt until the driver's threshold is crossed).
func TestBlockEventIdxIndirect(t *testing.T) {
	path := newImage(t, 1<<20)
	m := newMachine(t)
	be, err := NewBlock(BlockOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := addDevice(m.p, m.root, "blk", be, be.f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close(); be.Close() })
	d := m.probe(1)
	if st := d.init(FVersion1 | FEventIdx | FIndirectDesc | BlkFFlush); st&StatusDriverOK == 0 {
		t.Fatalf("status %#x", st)
	}
	q := d.q[0]
	usedEvent := q.avail + 4 + 2*uint64(q.size)
	availEvent := q.used + 4 + 8*uint64(q.size)
	// submit writes one OUT request of 1 KiB as an indirect table.
	submit := func(sector uint64, fillByte byte) {
		hdr, data, st, table := d.alloc(16), d.alloc(1024), d.alloc(1), d.alloc(48)
		var h [16]byte
		binary.LittleEndian.PutUint32(h[0:], BlkTOut)
		binary.LittleEndian.PutUint64(h[8:], sector)
		m.mem.WriteAt(h[:], hdr)
		m.mem.Fill(data, 1024, fillByte)
		for i, s := range []seg{{hdr, 16, false}, {data, 1024, false}, {st, 1, true}} {
			var b [16]byte
			binary.LittleEndian.PutUint64(b[0:], s.addr)
			binary.LittleEndian.PutUint32(b[8:], s.n)
			fl := uint16(0)
			if s.write {
				fl |= DescFWrite
			}
			if i < 2 {
				fl |= DescFNext
				binary.LittleEndian.PutUint16(b[14:], uint16(i+1))
			}
			binary.LittleEndian.PutUint16(b[12:], fl)
			m.mem.WriteAt(b[:], table+16*uint64(i))
		}
		head := q.free % q.size
		q.free++
		var b [16]byte
		binary.LittleEndian.PutUint64(b[0:], table)
		binary.LittleEndian.PutUint32(b[8:], 48)
		binary.LittleEndian.PutUint16(b[12:], DescFIndirect)
		m.mem.WriteAt(b[:], q.desc+16*uint64(head))
		d.publish(q, head)
	}
	usedIdx := func() uint16 { v, _ := m.mem.LoadU16Acquire(q.used + 2); return v }

	// Interrupt wanted for the next completion.
	m.mem.WriteU16(usedEvent, 0)
	submit(0, 0xaa)
	d.kick(q)
	if n, _ := q.vec.EventFD().Wait(5000); n == 0 {
		t.Fatal("no interrupt with used_event = 0")
	}
	if usedIdx() != 1 {
		t.Fatalf("used idx %d", usedIdx())
	}
	if ev, _ := m.mem.ReadU16(availEvent); ev != 1 {
		t.Fatalf("avail_event %d, want 1", ev)
	}
	// Suppressed: used_event far ahead.
	m.mem.WriteU16(usedEvent, 10)
	submit(2, 0xbb)
	d.kick(q)
	for i := 0; usedIdx() != 2; i++ {
		if i > 500 {
			t.Fatal("second request not completed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if n := q.vec.Count(); n != 0 {
		t.Fatalf("%d interrupts despite used_event", n)
	}
	img, _ := os.ReadFile(path)
	if img[0] != 0xaa || img[1023] != 0xaa || img[1024] != 0xbb || img[2047] != 0xbb {
		t.Fatal("indirect writes did not reach the image")
	}
}

// Resets racing with request processing: no deadlock, no race, and the
// device works afterwards.
func TestBlockResetWhileBusy(t *testing.T) {
	r := newBlkRig(t, BlockOptions{Path: newImage(t, 4<<20)})
	d, m := r.d, r.m
	for round := 0; round < 20; round++ {
		q := d.q[0]
		for i := 0; i < 16; i++ {
			hdr, st := d.alloc(16), d.alloc(1)
			m.mem.WriteAt(make([]byte, 16), hdr)
			m.mem.WriteU32(hdr, BlkTIn)
			data := d.alloc(4096)
			d.submit(q, []seg{{hdr, 16, false}, {data, 4096, true}, {st, 1, true}})
		}
		d.kick(q)
		if round%2 == 0 {
			time.Sleep(time.Duration(round) * 50 * time.Microsecond)
		}
		if st := d.init(FVersion1 | BlkFFlush); st&StatusDriverOK == 0 {
			t.Fatalf("round %d: status %#x", round, st)
		}
	}
	if _, st, _ := r.req(BlkTIn, 0, nil, 512); st != BlkSOK {
		t.Fatal("device unusable after resets")
	}
}
