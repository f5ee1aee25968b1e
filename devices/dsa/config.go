package dsa

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Config is the shape of a software DSA. The capability registers are derived
// from it (see caps.go), so what the guest reads is always consistent with
// what the model enforces.
type Config struct {
	WQs     int // number of work queues, 1..16 (WQCAP[23:16]); MSI-X vectors = WQs+1
	WQSize  int // total WQ size shared by all WQs, 1..1024 (WQCAP[15:0])
	Groups  int // number of groups, 1..8 (GRPCAP[7:0])
	Engines int // number of engines, 1..16 (ENGCAP[7:0])
	// Version is 0x100 (DSA 1.0, Sapphire Rapids) or 0x200 (DSA 2.0: 64-byte
	// WQCFG entries with per-WQ OPCFG). Other 2.0 features are not modelled.
	Version uint32
	// IntHandles advertises Request/Release Interrupt Handle (CMDCAP bits
	// 13/14). The driver then asks for a handle per WQ vector; the model hands
	// out the MSI-X index itself.
	IntHandles bool
	// Spin is how long an idle engine (and, behind dsa-server, the mapped
	// portal poller) keeps polling for work before it parks: a descriptor
	// that arrives within it starts in well under a microsecond, one that
	// arrives later pays an OS thread wake-up. 0 means DefaultSpin; a
	// negative value parks at once. Not a register: the guest cannot see it.
	Spin time.Duration
}

// spin is the engines' spin window.
func (c Config) spin() time.Duration {
	switch {
	case c.Spin == 0:
		return DefaultSpin
	case c.Spin < 0:
		return 0
	}
	return c.Spin
}

// SpinWindow is the spin window in effect (Spin, with its default applied).
func (c Config) SpinWindow() time.Duration { return c.spin() }

// DefaultConfig is a Sapphire-Rapids-like DSA 1.0: 8 WQs sharing 128 entries,
// 4 groups, 4 engines.
func DefaultConfig() Config {
	return Config{WQs: 8, WQSize: 128, Groups: 4, Engines: 4, Version: 0x100}
}

// Limits of the model (not of the architecture).
const (
	MaxWQs     = 16
	MaxWQSize  = 1024
	MaxGroups  = 8
	MaxEngines = 16
	// MaxSpin bounds Config.Spin: an idle engine must park eventually.
	MaxSpin = 100 * time.Millisecond
)

// Validate reports the first problem with c as a one-line error.
func (c Config) Validate() error {
	switch {
	case c.WQs < 1 || c.WQs > MaxWQs:
		return fmt.Errorf("dsa: wqs=%d out of range 1..%d", c.WQs, MaxWQs)
	case c.WQSize < c.WQs || c.WQSize > MaxWQSize:
		return fmt.Errorf("dsa: wq-size=%d out of range %d..%d (at least one entry per WQ)", c.WQSize, c.WQs, MaxWQSize)
	case c.Groups < 1 || c.Groups > MaxGroups:
		return fmt.Errorf("dsa: groups=%d out of range 1..%d", c.Groups, MaxGroups)
	case c.Engines < 1 || c.Engines > MaxEngines:
		return fmt.Errorf("dsa: engines=%d out of range 1..%d", c.Engines, MaxEngines)
	case c.Version != 0x100 && c.Version != 0x200:
		return fmt.Errorf("dsa: version=%x.%x unsupported (1.0 or 2.0)", c.Version>>8, c.Version&0xff)
	case c.Spin > MaxSpin:
		return fmt.Errorf("dsa: spin=%v too long (at most %v)", c.Spin, MaxSpin)
	}
	return nil
}

// Vectors is the MSI-X table size: one per WQ plus the misc vector 0.
func (c Config) Vectors() int { return c.WQs + 1 }

// PortalBARSize is BAR2's size: 4 pages per WQ rounded up to a power of two.
func (c Config) PortalBARSize() uint64 {
	n := uint64(c.WQs) * PortalStride
	return 1 << (64 - bits.LeadingZeros64(n-1))
}

// String renders c in the --dsa syntax (ParseConfig(c.String()) == c).
func (c Config) String() string {
	s := fmt.Sprintf("wqs=%d,wq-size=%d,groups=%d,engines=%d,version=%d.%d",
		c.WQs, c.WQSize, c.Groups, c.Engines, c.Version>>8, c.Version&0xff)
	if c.IntHandles {
		s += ",int-handles=on"
	}
	switch {
	case c.Spin < 0:
		s += ",spin=off"
	case c.Spin > 0:
		s += ",spin=" + c.Spin.String()
	}
	return s
}

// ParseConfig parses the value of --dsa: a comma-separated list of key=value
// pairs over DefaultConfig, e.g. "wqs=8,wq-size=128,groups=4,engines=4,version=1.0".
// Keys: wqs, wq-size, groups, engines, version (1.0|2.0), int-handles (on|off),
// spin (a duration such as 20us; off or 0: park at once).
// An empty string (or "on") gives the default device.
func ParseConfig(s string) (Config, error) {
	c := DefaultConfig()
	s = strings.TrimSpace(s)
	if s == "" || s == "on" || s == "default" {
		return c, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return c, fmt.Errorf("dsa: %q is not key=value (keys: wqs, wq-size, groups, engines, version, int-handles, spin)", kv)
		}
		num := func() (int, error) {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("dsa: %s=%q is not a number", k, v)
			}
			return n, nil
		}
		var err error
		switch k {
		case "wqs":
			c.WQs, err = num()
		case "wq-size", "wqsize", "wq_size":
			c.WQSize, err = num()
		case "groups":
			c.Groups, err = num()
		case "engines":
			c.Engines, err = num()
		case "version":
			switch v {
			case "1", "1.0", "0x100":
				c.Version = 0x100
			case "2", "2.0", "0x200":
				c.Version = 0x200
			default:
				err = fmt.Errorf("dsa: version=%q unsupported (1.0 or 2.0)", v)
			}
		case "int-handles":
			switch v {
			case "on", "1", "true", "yes":
				c.IntHandles = true
			case "off", "0", "false", "no":
				c.IntHandles = false
			default:
				err = fmt.Errorf("dsa: int-handles=%q must be on or off", v)
			}
		case "spin":
			switch v {
			case "off", "0":
				c.Spin = -1
			default:
				d, perr := time.ParseDuration(v)
				switch {
				case perr != nil || d < 0:
					err = fmt.Errorf("dsa: spin=%q is not a duration (e.g. 50us, or off)", v)
				case d == 0:
					c.Spin = -1
				default:
					c.Spin = d
				}
			}
		default:
			err = fmt.Errorf("dsa: unknown key %q (keys: wqs, wq-size, groups, engines, version, int-handles, spin)", k)
		}
		if err != nil {
			return c, err
		}
	}
	return c, c.Validate()
}
