package legacy

import (
	"sync"
	"time"
)

// CMOS register numbers.
const (
	rtcSeconds  = 0x00
	rtcMinutes  = 0x02
	rtcHours    = 0x04
	rtcWeekday  = 0x06
	rtcDay      = 0x07
	rtcMonth    = 0x08
	rtcYear     = 0x09
	rtcStatusA  = 0x0a
	rtcStatusB  = 0x0b
	rtcStatusC  = 0x0c
	rtcStatusD  = 0x0d
	rtcCentury  = 0x32
	statusA     = 0x26 // 32.768 kHz divider, 1024 Hz rate, UIP clear
	statusB24h  = 0x02 // 24-hour mode, BCD, no interrupts
	statusDVRT  = 0x80 // valid RAM and time
	cmosRegMask = 0x7f
)

// CMOS is the MC146818 RTC and CMOS RAM at ports 0x70 (index, bit 7 = NMI
// disable) and 0x71 (data). Time registers read the host's clock (UTC, BCD,
// 24-hour); other registers are 128 bytes of RAM.
type CMOS struct {
	mu    sync.Mutex
	index uint8
	ram   [128]byte
	now   func() time.Time
}

// NewCMOS makes an RTC reading now (time.Now when nil).
func NewCMOS(now func() time.Time) *CMOS {
	if now == nil {
		now = time.Now
	}
	c := &CMOS{now: now}
	c.ram[rtcStatusA] = statusA
	c.ram[rtcStatusB] = statusB24h
	c.ram[rtcStatusD] = statusDVRT
	return c
}

func bcd(v int) uint8 { return uint8(v/10<<4 | v%10) }

func (c *CMOS) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = 0xff
	}
	if len(data) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if off == 0 {
		data[0] = c.index
		return
	}
	t := c.now().UTC()
	switch c.index {
	case rtcSeconds:
		data[0] = bcd(t.Second())
	case rtcMinutes:
		data[0] = bcd(t.Minute())
	case rtcHours:
		data[0] = bcd(t.Hour())
	case rtcWeekday:
		data[0] = bcd(int(t.Weekday()) + 1)
	case rtcDay:
		data[0] = bcd(t.Day())
	case rtcMonth:
		data[0] = bcd(int(t.Month()))
	case rtcYear:
		data[0] = bcd(t.Year() % 100)
	case rtcCentury:
		data[0] = bcd(t.Year() / 100)
	case rtcStatusC:
		data[0] = 0 // no interrupt flags; reading clears them
	default:
		data[0] = c.ram[c.index]
	}
}

func (c *CMOS) Write(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if off == 0 {
		c.index = data[0] & cmosRegMask
		return
	}
	switch c.index {
	case rtcSeconds, rtcMinutes, rtcHours, rtcWeekday, rtcDay, rtcMonth, rtcYear, rtcCentury,
		rtcStatusC, rtcStatusD:
		// the clock follows the host; setting it is ignored
	case rtcStatusA:
		c.ram[rtcStatusA] = data[0] & 0x7f // UIP is read-only
	case rtcStatusB:
		// keep BCD/24h as the guest asks but the time is always
		// produced in the format NewCMOS set; Linux reads B first.
		c.ram[rtcStatusB] = data[0]&^0x06 | statusB24h
	default:
		c.ram[c.index] = data[0]
	}
}
