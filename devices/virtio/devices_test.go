package virtio

import (
	"bytes"
	"os"
	"testing"
	"time"

	"godvm/internal/proc"
)

func TestRNG(t *testing.T) {
	m := newMachine(t)
	if err := AddRNG(m.p, m.root); err != nil {
		t.Fatal(err)
	}
	d := m.probe(1)
	if m.cfgRead(1, 2, 2) != 0x1044 || m.cfgRead(1, 0x2e, 2) != 0x44 {
		t.Fatalf("device id %#x", m.cfgRead(1, 2, 2))
	}
	if st := d.init(FVersion1); st&StatusDriverOK == 0 {
		t.Fatalf("status %#x", st)
	}
	q := d.q[0]
	a := d.alloc(256)
	m.mem.Fill(a, 256, 0)
	head := d.submit(q, []seg{{a, 128, true}, {a + 128, 128, true}})
	d.kick(q)
	u := d.waitUsed(q, 1)
	if u[0] != [2]uint32{uint32(head), 256} {
		t.Fatalf("used %v", u)
	}
	b := make([]byte, 256)
	m.mem.ReadAt(b, a)
	if bytes.Count(b, []byte{0}) > 32 {
		t.Fatalf("not random: %x", b)
	}
	// A read-only buffer only: nothing written, still completed.
	d.submit(q, []seg{{a, 16, false}})
	d.kick(q)
	if u := d.waitUsed(q, 1); u[0][1] != 0 {
		t.Fatalf("used len %d", u[0][1])
	}
}

func TestConsole(t *testing.T) {
	m := newMachine(t)
	out := &proc.Buffer{}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	be, err := NewConsole(ConsoleOptions{Output: out, Input: pr})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := addDevice(m.p, m.root, "console", be, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close() // stop the worker before the pipe closes
	d := m.probe(1)
	if st := d.init(FVersion1 | ConsoleFEmergWrite); st&StatusDriverOK == 0 {
		t.Fatalf("status %#x", st)
	}
	if m.rd(d.devcfg+4, 4) != 1 {
		t.Fatal("max_nr_ports")
	}
	// Guest output.
	tx := d.q[consoleTx]
	a := d.alloc(64)
	m.mem.WriteAt([]byte("hello from hvc0\n"), a)
	d.submit(tx, []seg{{a, 16, false}})
	d.kick(tx)
	d.waitUsed(tx, 1)
	// Emergency write.
	m.wr(d.devcfg+8, 4, '!')
	if got := out.String(); got != "hello from hvc0\n!" {
		t.Fatalf("output %q", got)
	}
	// Host input into a receive buffer.
	rx := d.q[consoleRx]
	in := d.alloc(64)
	d.submit(rx, []seg{{in, 64, true}})
	d.kick(rx)
	pw.Write([]byte("ls\n"))
	u := d.waitUsed(rx, 1)
	b := make([]byte, 3)
	m.mem.ReadAt(b, in)
	if u[0][1] != 3 || string(b) != "ls\n" {
		t.Fatalf("input %q (%d)", b, u[0][1])
	}
	// Input with no receive buffer waits for one.
	pw.Write([]byte("x"))
	time.Sleep(20 * time.Millisecond)
	d.submit(rx, []seg{{in, 64, true}})
	d.kick(rx)
	if u := d.waitUsed(rx, 1); u[0][1] != 1 {
		t.Fatalf("late input %v", u)
	}
	if _, _, err := ParseConsoleFlag(""); err == nil {
		t.Fatal("empty --virtio-console accepted")
	}
	if _, _, err := ParseConsoleFlag("/nonexistent/dir/out"); err == nil {
		t.Fatal("bad path accepted")
	}
}

// The PCI_CFG capability reaches BAR0 through configuration space alone.
func TestPCICfgWindow(t *testing.T) {
	m := newMachine(t)
	if err := AddRNG(m.p, m.root); err != nil {
		t.Fatal(err)
	}
	var capOff uint32
	for off := uint32(m.cfgRead(1, 0x34, 1)); off != 0; off = uint32(m.cfgRead(1, off+1, 1)) {
		if m.cfgRead(1, off, 1) == 0x09 && m.cfgRead(1, off+3, 1) == capPCICfg {
			capOff = off
		}
	}
	if capOff == 0 || m.cfgRead(1, capOff+2, 1) != 20 {
		t.Fatal("no VIRTIO_PCI_CAP_PCI_CFG capability")
	}
	// Read num_queues (2 bytes at common+0x12).
	m.cfgWrite(1, capOff+4, 1, 0)
	m.cfgWrite(1, capOff+8, 4, offCommon+ccNumQueues)
	m.cfgWrite(1, capOff+12, 4, 2)
	if n := m.cfgRead(1, capOff+16, 2); n != 1 {
		t.Fatalf("num_queues through the window = %d", n)
	}
	// Write device_status = ACKNOWLEDGE (1 byte), read it back directly.
	m.cfgWrite(1, capOff+8, 4, offCommon+ccStatus)
	m.cfgWrite(1, capOff+12, 4, 1)
	m.cfgWrite(1, capOff+16, 1, StatusAcknowledge)
	d := m.probe(1)
	if st := d.status(); st != StatusAcknowledge {
		t.Fatalf("status %#x after a write through the window", st)
	}
	// Bad lengths, misaligned offsets and other BARs do nothing.
	m.cfgWrite(1, capOff+12, 4, 3)
	m.cfgWrite(1, capOff+16, 4, 0)
	m.cfgWrite(1, capOff+8, 4, barSize)
	m.cfgWrite(1, capOff+12, 4, 4)
	m.cfgRead(1, capOff+16, 4)
	m.cfgWrite(1, capOff+4, 1, 2)
	m.cfgRead(1, capOff+16, 4)
	if st := d.status(); st != StatusAcknowledge {
		t.Fatalf("status %#x changed by invalid window accesses", st)
	}
}

func TestNewNeedsPlatform(t *testing.T) {
	if _, err := New(nil, "x", &RNG{}); err == nil {
		t.Fatal("nil platform accepted")
	}
	m := newMachine(t)
	p := *m.p
	p.IOEv = nil // notifies then reach the device through MMIO exits
	dev, err := New(&p, "rng", &RNG{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := m.root.Add("rng", dev); err != nil {
		t.Fatal(err)
	}
	if len(m.f.IOEvents) != 0 {
		t.Fatal("ioevents registered without IOEv")
	}
}
