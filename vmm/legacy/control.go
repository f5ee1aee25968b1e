package legacy

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// StopReason is why the guest asked to stop.
type StopReason int

const (
	StopPowerOff  StopReason = iota + 1 // ACPI S5
	StopReset                           // keyboard controller (0xcf9 is the PCI root's)
	StopPanic                           // pvpanic
	StopDebugExit                       // debug-exit port (Code is the value)
)

func (r StopReason) String() string {
	switch r {
	case StopPowerOff:
		return "poweroff"
	case StopReset:
		return "reset"
	case StopPanic:
		return "panic"
	case StopDebugExit:
		return "debug-exit"
	}
	return "unknown"
}

// Stopper receives the guest's requests to end the VM. Stop may be called
// more than once and from several vCPU threads; the first call wins.
type Stopper interface {
	Stop(reason StopReason, code uint32)
}

// StopFunc adapts a function to Stopper.
type StopFunc func(StopReason, uint32)

func (f StopFunc) Stop(r StopReason, c uint32) { f(r, c) }

func fill(data []byte, v byte) {
	for i := range data {
		data[i] = v
	}
}

func le(data []byte) uint32 {
	var b [4]byte
	copy(b[:], data)
	return binary.LittleEndian.Uint32(b[:])
}

// DebugExit is the test-result port (0xf4): the written value is the result,
// 0 = pass.
type DebugExit struct{ S Stopper }

func (d DebugExit) Read(off uint64, data []byte) { fill(data, 0xff) }
func (d DebugExit) Write(off uint64, data []byte) {
	if off == 0 && len(data) > 0 {
		d.S.Stop(StopDebugExit, le(data))
	}
}

// BootTimer records when the guest first writes port 0xf5.
type BootTimer struct {
	start time.Time
	at    atomic.Int64 // ns since start; 0 = not yet
}

// NewBootTimer measures from start (process start).
func NewBootTimer(start time.Time) *BootTimer { return &BootTimer{start: start} }

func (b *BootTimer) Read(off uint64, data []byte) { fill(data, 0xff) }
func (b *BootTimer) Write(off uint64, data []byte) {
	d := time.Since(b.start)
	if d <= 0 {
		d = 1
	}
	b.at.CompareAndSwap(0, int64(d))
}

// Elapsed is the time from start to the first write; ok is false before it.
func (b *BootTimer) Elapsed() (d time.Duration, ok bool) {
	v := b.at.Load()
	return time.Duration(v), v != 0
}

// PVPanic is QEMU's ISA pvpanic device (0x505): reads show the supported
// events, a write with bit 0 reports a guest panic.
type PVPanic struct{ S Stopper }

const (
	pvpanicPanicked     = 1 << 0
	pvpanicCrashLoaded  = 1 << 1
	pvpanicCapabilities = pvpanicPanicked | pvpanicCrashLoaded
)

func (p PVPanic) Read(off uint64, data []byte) {
	fill(data, 0)
	if len(data) > 0 {
		data[0] = pvpanicCapabilities
	}
}
func (p PVPanic) Write(off uint64, data []byte) {
	if len(data) > 0 && data[0]&pvpanicPanicked != 0 {
		p.S.Stop(StopPanic, 0)
	}
}

// PM1a control and event register bits.
const (
	pm1SCIEn    = 1 << 0
	pm1SlpTyp   = 7 << 10
	pm1SlpEn    = 1 << 13
	S5SleepType = 5 // the DSDT's \_S5 package is {5, 5}
)

// PM1aEvent is the ACPI PM1a event block (0x600): PM1_STS (write 1 to clear)
// and PM1_EN.
type PM1aEvent struct {
	mu       sync.Mutex
	sts, en  uint16
	regBytes [4]byte
}

func (p *PM1aEvent) Read(off uint64, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	binary.LittleEndian.PutUint16(p.regBytes[0:], p.sts)
	binary.LittleEndian.PutUint16(p.regBytes[2:], p.en)
	fill(data, 0)
	if off < 4 {
		copy(data, p.regBytes[off:])
	}
}

func (p *PM1aEvent) Write(off uint64, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, b := range data {
		o := off + uint64(i)
		switch o {
		case 0, 1:
			p.sts &^= uint16(b) << (8 * o)
		case 2, 3:
			sh := 8 * (o - 2)
			p.en = p.en&^(0xff<<sh) | uint16(b)<<sh
		}
	}
}

// PM1aControl is the ACPI PM1a control block (0x604): SLP_EN with SLP_TYP 5
// powers off. SCI_EN always reads 1 (the machine is always in ACPI mode).
type PM1aControl struct {
	S   Stopper
	mu  sync.Mutex
	val uint16
}

func (p *PM1aControl) Read(off uint64, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], p.val|pm1SCIEn)
	fill(data, 0)
	if off < 2 {
		copy(data, b[off:])
	}
}

func (p *PM1aControl) Write(off uint64, data []byte) {
	p.mu.Lock()
	for i, b := range data {
		o := off + uint64(i)
		if o < 2 {
			sh := 8 * o
			p.val = p.val&^(0xff<<sh) | uint16(b)<<sh
		}
	}
	v := p.val
	p.val &^= pm1SlpEn // write-only bit
	p.mu.Unlock()
	if v&pm1SlpEn != 0 && (v&pm1SlpTyp)>>10 == S5SleepType {
		p.S.Stop(StopPowerOff, 0)
	}
}

// I8042 is the keyboard controller's command/status port (0x64), only as
// far as reset goes: writing 0xfe resets the machine. Status reads 0 (no
// data, input buffer empty); there is no keyboard.
type I8042 struct{ S Stopper }

const i8042CmdReset = 0xfe

func (k I8042) Read(off uint64, data []byte) { fill(data, 0) }
func (k I8042) Write(off uint64, data []byte) {
	if len(data) > 0 && data[0] == i8042CmdReset {
		k.S.Stop(StopReset, 0)
	}
}

// Sink swallows writes and reads v (port 0x80, the POST/io_delay port).
type Sink struct{ V byte }

func (s Sink) Read(off uint64, data []byte)  { fill(data, s.V) }
func (s Sink) Write(off uint64, data []byte) {}
