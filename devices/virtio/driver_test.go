package virtio

// A virtio-pci driver written against the simulated machine: it finds the
// device through ECAM, parses the vendor capabilities, programs MSI-X,
// negotiates features, lays out split rings in guest memory, kicks through
// the ioeventfd the device registered and waits on the MSI-X vector's
// eventfd, exactly the path a guest kernel takes through KVM.

import (
	"encoding/binary"
	"testing"
	"time"

	"godvm/addr"
	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/devices/platform/fake"
	"godvm/guestmem"
)

const (
	memSize  = 64 << 20
	ecamBase = 0xe000_0000
)

type machine struct {
	t    testing.TB
	mem  *guestmem.Memory
	f    *fake.Platform
	p    *platform.Platform
	root *pci.Root
}

func newMachine(t testing.TB) *machine {
	t.Helper()
	mem, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: memSize}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	f, p := fake.New(mem)
	root, err := pci.NewRoot(p, pci.RootConfig{
		ECAM:  addr.Range{Base: ecamBase, Size: 0x1000_0000},
		Mem32: addr.Range{Base: 0xc000_0000, Size: 0x2000_0000},
		Mem64: addr.Range{Base: 0x10_0000_0000, Size: 0x10_0000_0000},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &machine{t: t, mem: mem, f: f, p: p, root: root}
}

func (m *machine) cfgRead(slot int, off uint32, n int) uint64 {
	b := make([]byte, 8)
	m.p.MMIO.Read(ecamBase+uint64(slot)<<15+uint64(off), b[:n])
	return binary.LittleEndian.Uint64(b)
}

func (m *machine) cfgWrite(slot int, off uint32, n int, v uint64) {
	b := binary.LittleEndian.AppendUint64(nil, v)
	m.p.MMIO.Write(ecamBase+uint64(slot)<<15+uint64(off), b[:n])
}

func (m *machine) rd(addr uint64, n int) uint64 {
	b := make([]byte, 8)
	if !m.p.MMIO.Read(addr, b[:n]) {
		m.t.Fatalf("MMIO read %#x: nothing there", addr)
	}
	return binary.LittleEndian.Uint64(b)
}

func (m *machine) wr(addr uint64, n int, v uint64) {
	b := binary.LittleEndian.AppendUint64(nil, v)
	if !m.p.MMIO.Write(addr, b[:n]) {
		m.t.Fatalf("MMIO write %#x: nothing there", addr)
	}
}

// drvQueue is the driver's view of one split queue.
type drvQueue struct {
	idx               int
	size              uint16
	desc, avail, used uint64
	notify            uint64
	vec               *fake.Vector
	kick              *platform.EventFD // the ioeventfd the device registered
	availIdx          uint16
	usedSeen          uint16
	free              uint16 // next descriptor to hand out (simple bump allocator)
}

type driver struct {
	m       *machine
	slot    int
	bar     uint64
	common  uint64
	isr     uint64
	devcfg  uint64
	notify  uint64
	mult    uint32
	vecBase int // index of this device's vector 0 in the fake platform
	cfgVec  *fake.Vector
	q       []*drvQueue
	bufNext uint64
}

// probe finds the device in slot and maps its capabilities.
func (m *machine) probe(slot int) *driver {
	t := m.t
	t.Helper()
	d := &driver{m: m, slot: slot, bufNext: 8 << 20}
	if id := m.cfgRead(slot, 0, 2); id != 0x1af4 {
		t.Fatalf("slot %d vendor %#x", slot, id)
	}
	lo, hi := m.cfgRead(slot, pci.RegBAR0, 4), m.cfgRead(slot, pci.RegBAR0+4, 4)
	d.bar = lo&^0xf | hi<<32
	if lo&6 != 4 {
		t.Fatalf("BAR0 not 64-bit: %#x", lo)
	}
	msixCap := uint32(0)
	for off := uint32(m.cfgRead(slot, pci.RegCapPtr, 1)); off != 0; off = uint32(m.cfgRead(slot, off+1, 1)) {
		switch m.cfgRead(slot, off, 1) {
		case pci.CapMSIX:
			msixCap = off
		case pci.CapVndr:
			typ := m.cfgRead(slot, off+3, 1)
			if bar := m.cfgRead(slot, off+4, 1); bar != 0 {
				t.Fatalf("virtio cap in BAR%d", bar)
			}
			o := m.cfgRead(slot, off+8, 4)
			switch typ {
			case capCommon:
				d.common = d.bar + o
			case capNotify:
				d.notify = d.bar + o
				d.mult = uint32(m.cfgRead(slot, off+16, 4))
			case capISR:
				d.isr = d.bar + o
			case capDevice:
				d.devcfg = d.bar + o
			}
		}
	}
	if d.common == 0 || d.notify == 0 || d.isr == 0 || d.devcfg == 0 || msixCap == 0 {
		t.Fatalf("missing capabilities: %+v msix %#x", d, msixCap)
	}
	// Vectors were allocated in order by NewMSIX; this device's are the
	// last (queues+1) ones created so far.
	nvec := int(m.cfgRead(slot, msixCap+2, 2)&0x7ff) + 1
	d.vecBase = len(m.f.Vectors) - nvec
	table := m.cfgRead(slot, msixCap+4, 4)
	tableAddr := d.bar + table&^7
	for v := 0; v < nvec; v++ {
		m.wr(tableAddr+uint64(v)*16, 8, 0xfee00000)
		m.wr(tableAddr+uint64(v)*16+8, 4, uint64(0x40+v))
		m.wr(tableAddr+uint64(v)*16+12, 4, 0)
	}
	m.cfgWrite(slot, msixCap+2, 2, pci.MSIXEnable)
	m.cfgWrite(slot, pci.RegCommand, 2, pci.CmdMemory|pci.CmdBusMaster)
	d.cfgVec = m.f.Vectors[d.vecBase]
	return d
}

// init runs the virtio initialization sequence with the given driver
// features and sets up every queue. It returns the final status.
func (d *driver) init(features uint64) uint8 {
	m := d.m
	m.wr(d.common+ccStatus, 1, 0)
	m.wr(d.common+ccStatus, 1, StatusAcknowledge)
	m.wr(d.common+ccStatus, 1, StatusAcknowledge|StatusDriver)
	m.wr(d.common+ccDrvFeatSel, 4, 0)
	m.wr(d.common+ccDrvFeat, 4, features&0xffffffff)
	m.wr(d.common+ccDrvFeatSel, 4, 1)
	m.wr(d.common+ccDrvFeat, 4, features>>32)
	m.wr(d.common+ccStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	if m.rd(d.common+ccStatus, 1)&StatusFeaturesOK == 0 {
		return uint8(m.rd(d.common+ccStatus, 1))
	}
	m.wr(d.common+ccConfigVec, 2, 0)
	nq := int(m.rd(d.common+ccNumQueues, 2))
	d.q = nil
	base := uint64(1 << 20)
	for i := 0; i < nq; i++ {
		m.wr(d.common+ccQueueSel, 2, uint64(i))
		size := uint16(m.rd(d.common+ccQueueSize, 2))
		q := &drvQueue{idx: i, size: size}
		q.desc = base
		q.avail = q.desc + 16*uint64(size)
		q.used = (q.avail + 6 + 2*uint64(size) + 4095) &^ 4095
		base = (q.used + 6 + 8*uint64(size) + 4095) &^ 4095
		m.mem.Fill(q.desc, base-q.desc, 0) // fresh rings, as a driver allocates them
		m.wr(d.common+ccQueueDesc, 4, q.desc&0xffffffff)
		m.wr(d.common+ccQueueDesc+4, 4, q.desc>>32)
		m.wr(d.common+ccQueueDriver, 8, q.avail)
		m.wr(d.common+ccQueueDevice, 8, q.used)
		m.wr(d.common+ccQueueVec, 2, uint64(i+1))
		if got := m.rd(d.common+ccQueueVec, 2); got != uint64(i+1) {
			d.m.t.Fatalf("queue %d vector %d", i, got)
		}
		q.notify = d.notify + m.rd(d.common+ccQueueNotify, 2)*uint64(d.mult)
		m.wr(d.common+ccQueueEnable, 2, 1)
		q.vec = m.f.Vectors[d.vecBase+i+1]
		for _, e := range m.f.IOEvents {
			if e.Addr == q.notify && e.Space == platform.MMIO {
				q.kick = e.Ev
			}
		}
		if q.kick == nil {
			d.m.t.Fatalf("no ioeventfd at %#x", q.notify)
		}
		d.q = append(d.q, q)
	}
	m.wr(d.common+ccStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	return uint8(m.rd(d.common+ccStatus, 1))
}

func (d *driver) features() uint64 {
	m := d.m
	m.wr(d.common+ccDevFeatSel, 4, 0)
	lo := m.rd(d.common+ccDevFeat, 4)
	m.wr(d.common+ccDevFeatSel, 4, 1)
	return lo | m.rd(d.common+ccDevFeat, 4)<<32
}

// alloc returns guest memory for a data buffer.
func (d *driver) alloc(n uint64) uint64 {
	a := d.bufNext
	d.bufNext = (d.bufNext + n + 63) &^ 63
	if d.bufNext > memSize {
		d.bufNext = 8 << 20
		a = d.bufNext
		d.bufNext += (n + 63) &^ 63
	}
	return a
}

type seg struct {
	addr  uint64
	n     uint32
	write bool
}

// submit writes a chain of descriptors and publishes it; it returns the
// head index.
func (d *driver) submit(q *drvQueue, segs []seg) uint16 {
	mem := d.m.mem
	head := q.free % q.size
	for i, s := range segs {
		idx := (head + uint16(i)) % q.size
		var b [16]byte
		binary.LittleEndian.PutUint64(b[0:], s.addr)
		binary.LittleEndian.PutUint32(b[8:], s.n)
		var fl uint16
		if s.write {
			fl |= DescFWrite
		}
		if i < len(segs)-1 {
			fl |= DescFNext
			binary.LittleEndian.PutUint16(b[14:], (idx+1)%q.size)
		}
		binary.LittleEndian.PutUint16(b[12:], fl)
		mem.WriteAt(b[:], q.desc+16*uint64(idx))
	}
	q.free += uint16(len(segs))
	d.publish(q, head)
	return head
}

// publish puts a head on the avail ring.
func (d *driver) publish(q *drvQueue, head uint16) {
	mem := d.m.mem
	mem.WriteU16(q.avail+4+2*uint64(q.availIdx%q.size), head)
	q.availIdx++
	mem.StoreU16Release(q.avail+2, q.availIdx)
}

// kick notifies the queue through its ioeventfd (what KVM does on the
// guest's notify write).
func (d *driver) kick(q *drvQueue) { q.kick.Signal() }

// waitUsed waits for the vector and returns the used elements that appeared.
func (d *driver) waitUsed(q *drvQueue, want int) [][2]uint32 {
	mem := d.m.mem
	var out [][2]uint32
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < want {
		idx, _ := mem.LoadU16Acquire(q.used + 2)
		for q.usedSeen != idx {
			e := q.used + 4 + 8*uint64(q.usedSeen%q.size)
			id, _ := mem.ReadU32(e)
			n, _ := mem.ReadU32(e + 4)
			out = append(out, [2]uint32{id, n})
			q.usedSeen++
		}
		if len(out) >= want {
			break
		}
		if time.Now().After(deadline) {
			d.m.t.Fatalf("queue %d: %d of %d completions after 5s", q.idx, len(out), want)
		}
		q.vec.EventFD().Wait(100)
	}
	return out
}

func (d *driver) status() uint8 { return uint8(d.m.rd(d.common+ccStatus, 1)) }
