package legacy

import (
	"bytes"
	"testing"
	"time"
)

type irqLog struct{ levels []bool }

func (l *irqLog) set(v bool) { l.levels = append(l.levels, v) }

func rd(d interface{ Read(uint64, []byte) }, off uint64) byte {
	b := []byte{0}
	d.Read(off, b)
	return b[0]
}

func wr(d interface{ Write(uint64, []byte) }, off uint64, v byte) { d.Write(off, []byte{v}) }

func TestSerialTransmit(t *testing.T) {
	var out bytes.Buffer
	s := NewSerial(&out, nil)
	for _, c := range []byte("hi\n") {
		if rd(s, uartLSR)&lsrTHRE == 0 {
			t.Fatal("THR not empty")
		}
		wr(s, uartRBR, c)
	}
	if out.String() != "hi\n" || s.TxBytes() != 3 {
		t.Errorf("out %q tx %d", out.String(), s.TxBytes())
	}
	// Divisor latch access does not transmit.
	wr(s, uartLCR, lcrDLAB|3)
	wr(s, uartRBR, 1)
	wr(s, uartIER, 0)
	if rd(s, uartRBR) != 1 || out.Len() != 3 {
		t.Error("DLL write transmitted or not stored")
	}
	wr(s, uartLCR, 3)
	if rd(s, uartLCR) != 3 {
		t.Error("LCR")
	}
	wr(s, uartSCR, 0x5a)
	if rd(s, uartSCR) != 0x5a {
		t.Error("scratch")
	}
}

// Linux's 8250 autoconfig: loopback with RTS|OUT2 must show CTS|DCD (0x90).
func TestSerialLoopbackProbe(t *testing.T) {
	var out bytes.Buffer
	s := NewSerial(&out, nil)
	wr(s, uartMCR, mcrLoop|0x0a)
	if v := rd(s, uartMSR) & 0xf0; v != 0x90 {
		t.Errorf("loopback MSR %#x, want 0x90", v)
	}
	wr(s, uartRBR, 'x')
	if out.Len() != 0 || rd(s, uartLSR)&lsrDR == 0 || rd(s, uartRBR) != 'x' {
		t.Error("loopback byte not received")
	}
	wr(s, uartMCR, 0)
	if rd(s, uartMSR) != msrDCD|msrDSR|msrCTS {
		t.Error("modem status outside loopback")
	}
	wr(s, uartIIR, fcrEnable)
	if rd(s, uartIIR)&iirFIFO != iirFIFO {
		t.Error("16550A FIFO bits not reported")
	}
}

func TestSerialInterrupts(t *testing.T) {
	var out bytes.Buffer
	l := &irqLog{}
	s := NewSerial(&out, l.set)
	wr(s, uartMCR, mcrOUT2|mcrDTR|mcrRTS)
	if rd(s, uartIIR) != iirNoInt {
		t.Fatal("interrupt pending with IER=0")
	}
	// Enabling THRI with THR empty raises the line; reading IIR acks it.
	wr(s, uartIER, ierTHRI)
	if len(l.levels) != 1 || !l.levels[0] {
		t.Fatalf("levels %v", l.levels)
	}
	if rd(s, uartIIR) != iirTHRI {
		t.Error("IIR not THRI")
	}
	if l.levels[len(l.levels)-1] || rd(s, uartIIR) != iirNoInt {
		t.Error("THRI not acknowledged by IIR read")
	}
	// A transmitted byte re-arms THRI.
	wr(s, uartRBR, 'a')
	if !l.levels[len(l.levels)-1] {
		t.Error("THR write did not raise THRI")
	}
	rd(s, uartIIR)
	// Received data: RDI has priority over THRI and clears when drained.
	wr(s, uartIER, ierRDI|ierTHRI)
	if s.Input([]byte("ok")) != 2 {
		t.Fatal("input refused")
	}
	if rd(s, uartIIR) != iirRDI || !l.levels[len(l.levels)-1] {
		t.Error("RDI not pending")
	}
	if rd(s, uartRBR) != 'o' || rd(s, uartRBR) != 'k' {
		t.Error("input order")
	}
	if rd(s, uartLSR)&lsrDR != 0 {
		t.Error("DR after draining")
	}
	// OUT2 gates the line.
	s.Input([]byte("z"))
	wr(s, uartMCR, 0)
	if l.levels[len(l.levels)-1] {
		t.Error("IRQ asserted with OUT2 clear")
	}
	// Line changes are reported only on change.
	for i := 1; i < len(l.levels); i++ {
		if l.levels[i] == l.levels[i-1] {
			t.Errorf("redundant IRQ level report at %d: %v", i, l.levels)
		}
	}
}

func TestSerialOverrun(t *testing.T) {
	s := NewSerial(&bytes.Buffer{}, nil)
	big := make([]byte, SerialRXMax+10)
	if n := s.Input(big); n != SerialRXMax {
		t.Errorf("took %d", n)
	}
	if rd(s, uartLSR)&lsrOE == 0 {
		t.Error("no overrun")
	}
	if rd(s, uartLSR)&lsrOE != 0 {
		t.Error("overrun not cleared by LSR read")
	}
	wr(s, uartIIR, 0x02) // FCR: clear RX FIFO
	if rd(s, uartLSR)&lsrDR != 0 {
		t.Error("FIFO not cleared")
	}
	s.Read(0, nil) // zero-length accesses are ignored
	s.Write(0, nil)
}

func TestCMOS(t *testing.T) {
	now := time.Date(2026, 11, 25, 16, 7, 59, 0, time.UTC)
	c := NewCMOS(func() time.Time { return now })
	get := func(reg byte) byte { wr(c, 0, reg|0x80); return rd(c, 1) }
	for reg, want := range map[byte]byte{0: 0x59, 2: 0x07, 4: 0x16, 6: 0x04, 7: 0x25, 8: 0x11, 9: 0x26, 0x32: 0x20, 0x0b: 0x02, 0x0d: 0x80} {
		if got := get(reg); got != want {
			t.Errorf("reg %#x = %#x, want %#x", reg, got, want)
		}
	}
	if get(0x0a)&0x80 != 0 {
		t.Error("UIP set")
	}
	wr(c, 0, 0x8d)
	if rd(c, 0) != 0x0d {
		t.Error("index readback (NMI bit stripped)")
	}
	wr(c, 0, 0x40)
	wr(c, 1, 0xab)
	if get(0x40) != 0xab {
		t.Error("CMOS RAM")
	}
	wr(c, 0, 0)
	wr(c, 1, 0x11) // setting the clock is ignored
	if get(0) != 0x59 {
		t.Error("seconds writable")
	}
	wr(c, 0, 0x0b)
	wr(c, 1, 0x06) // binary mode request: stays BCD/24h
	if get(0x0b)&0x06 != 0x02 {
		t.Error("status B")
	}
}

type stops struct {
	r []StopReason
	c []uint32
}

func (s *stops) Stop(r StopReason, c uint32) { s.r = append(s.r, r); s.c = append(s.c, c) }

func TestControlPorts(t *testing.T) {
	s := &stops{}
	DebugExit{s}.Write(0, []byte{0x2a, 0, 0, 0})
	DebugExit{s}.Write(0, []byte{0})
	PVPanic{s}.Write(0, []byte{2}) // crash loaded: not a panic
	PVPanic{s}.Write(0, []byte{1})
	if rd(PVPanic{s}, 0) != 3 {
		t.Error("pvpanic capabilities")
	}
	pc := &PM1aControl{S: s}
	pc.Write(0, []byte{0, 3 << 2})      // SLP_TYP 3 without SLP_EN
	pc.Write(0, []byte{0, 5<<2 | 1<<5}) // SLP_TYP 5 | SLP_EN
	if b := make([]byte, 2); true {
		pc.Read(0, b)
		if b[0]&1 == 0 || b[1]&(1<<5) != 0 {
			t.Errorf("PM1a_CNT reads % x", b)
		}
	}
	pc.Write(0, []byte{0, 1<<2 | 1<<5}) // S1 request: ignored
	I8042{s}.Write(0, []byte{0xd1})
	I8042{s}.Write(0, []byte{0xfe})
	want := []StopReason{StopDebugExit, StopDebugExit, StopPanic, StopPowerOff, StopReset}
	if len(s.r) != len(want) {
		t.Fatalf("stops %v", s.r)
	}
	for i := range want {
		if s.r[i] != want[i] {
			t.Errorf("stop %d: %v, want %v", i, s.r[i], want[i])
		}
	}
	if s.c[0] != 42 || s.c[1] != 0 {
		t.Errorf("debug-exit codes %v", s.c)
	}
	ev := &PM1aEvent{}
	ev.Write(2, []byte{0x21, 0x01})
	b := make([]byte, 4)
	ev.Read(0, b)
	if b[2] != 0x21 || b[3] != 0x01 {
		t.Errorf("PM1_EN % x", b)
	}
}

func TestBootTimer(t *testing.T) {
	bt := NewBootTimer(time.Now().Add(-time.Second))
	if _, ok := bt.Elapsed(); ok {
		t.Fatal("elapsed before write")
	}
	bt.Write(0, []byte{1})
	d1, ok := bt.Elapsed()
	time.Sleep(2 * time.Millisecond)
	bt.Write(0, []byte{1})
	d2, _ := bt.Elapsed()
	if !ok || d1 < time.Second || d1 != d2 {
		t.Errorf("boot timer %v %v %v", d1, d2, ok)
	}
}
