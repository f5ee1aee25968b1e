package virtio

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/sys/unix"

	"godvm/devices/pci"
	"godvm/devices/platform"
)

// virtio-net feature bits and constants.
const (
	NetFMAC     = 1 << 5
	NetFStatus  = 1 << 16
	netLinkUp   = 1
	netQueueLen = 256
	netRx       = 0
	netTx       = 1
	netCfgLen   = 10 // mac[6], status u16, max_virtqueue_pairs u16
)

// NetOptions configures a virtio-net device.
type NetOptions struct {
	Tap string           // tap interface name; created if it does not exist
	MAC net.HardwareAddr // guest MAC; random locally administered if nil
}

// ParseNetFlag parses "--net tap=NAME[,mac=xx:xx:xx:xx:xx:xx]".
func ParseNetFlag(s string) (NetOptions, error) {
	var o NetOptions
	for _, p := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(p, "=")
		switch {
		case !ok:
			return o, fmt.Errorf("--net %q: %q is not key=value (want tap=NAME[,mac=MAC])", s, p)
		case k == "tap":
			if v == "" || len(v) >= unix.IFNAMSIZ {
				return o, fmt.Errorf("--net %q: tap name must be 1 to %d bytes", s, unix.IFNAMSIZ-1)
			}
			o.Tap = v
		case k == "mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return o, fmt.Errorf("--net %q: bad mac %q", s, v)
			}
			if mac[0]&1 != 0 {
				return o, fmt.Errorf("--net %q: mac %s is a multicast address", s, v)
			}
			o.MAC = mac
		default:
			return o, fmt.Errorf("--net %q: unknown option %q (want tap=NAME[,mac=MAC])", s, k)
		}
	}
	if o.Tap == "" {
		return o, fmt.Errorf("--net %q: missing tap=NAME", s)
	}
	return o, nil
}

// RandomMAC returns a random locally administered unicast MAC.
func RandomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	rand.Read(m)
	m[0] = m[0]&^1 | 2
	return m
}

// Net is the virtio-net backend over a tap device.
type Net struct {
	tap    *Tap
	mac    net.HardwareAddr
	env    *Env
	rxWait bool // tap has data but the guest has no receive buffers
	// Counters (for benchmarks and diagnostics; worker goroutine only).
	RxPackets, TxPackets, RxDropped, TxDropped uint64
}

// NewNet opens (or creates) the tap.
func NewNet(o NetOptions) (*Net, error) {
	t, err := OpenTap(o.Tap)
	if err != nil {
		return nil, err
	}
	mac := o.MAC
	if mac == nil {
		mac = RandomMAC()
	}
	return &Net{tap: t, mac: mac}, nil
}

// AddNet places a virtio-net device on root.
func AddNet(p *platform.Platform, root *pci.Root, o NetOptions) error {
	be, err := NewNet(o)
	if err != nil {
		return err
	}
	_, err = addDevice(p, root, "virtio-net "+o.Tap, be, be.tap)
	return err
}

// Close closes the tap.
func (n *Net) Close() error { return n.tap.Close() }

func (n *Net) DeviceType() uint16      { return IDNet }
func (n *Net) Features() uint64        { return NetFMAC | NetFStatus }
func (n *Net) QueueMaxSizes() []uint16 { return []uint16{netQueueLen, netQueueLen} }

func (n *Net) ReadConfig(off uint64, data []byte) {
	var c [netCfgLen]byte
	copy(c[:6], n.mac)
	binary.LittleEndian.PutUint16(c[6:], netLinkUp)
	binary.LittleEndian.PutUint16(c[8:], 1)
	for i := range data {
		if o := off + uint64(i); o < netCfgLen {
			data[i] = c[o]
		} else {
			data[i] = 0
		}
	}
}

func (n *Net) WriteConfig(off uint64, data []byte) {}

func (n *Net) Activate(env *Env) error {
	n.env = env
	n.rxWait = false
	return nil
}

func (n *Net) Reset() { n.env = nil }

func (n *Net) Kick(qi int) error {
	switch qi {
	case netTx:
		return n.transmit()
	case netRx:
		n.rxWait = false
	}
	return nil
}

func (n *Net) transmit() error {
	q := n.env.Queues[netTx]
	defer n.env.Interrupt(netTx)
	for {
		c, err := q.Pop()
		if err != nil || c == nil {
			return err
		}
		if c.RLen < vnetHdrLen || c.RLen > vnetHdrLen+65550 {
			return &ChainError{Head: c.Head, Reason: fmt.Sprintf("virtio-net tx of %d bytes", c.RLen)}
		}
		segs, err := c.Reader(n.env.Mem).Segments(c.RLen)
		if err != nil {
			return &ChainError{Head: c.Head, Reason: "virtio-net tx", Err: err}
		}
		if len(segs) > iovMax {
			n.TxDropped++
		} else if _, err := unix.Writev(n.tap.Fd(), segs); err != nil {
			n.TxDropped++ // tap queue full or link down: the packet is lost, as on a wire
		} else {
			n.TxPackets++
		}
		if err := q.Push(c.Head, 0); err != nil {
			return err
		}
	}
}

// PollFDs waits on the tap while the guest has receive buffers.
func (n *Net) PollFDs() []int32 {
	if n.rxWait || n.env == nil || n.env.Queues[netRx] == nil {
		return nil
	}
	return []int32{int32(n.tap.Fd())}
}

// Ready moves packets from the tap into receive buffers until either runs
// out.
func (n *Net) Ready(int32) error {
	q := n.env.Queues[netRx]
	got := 0
	defer func() {
		if got > 0 {
			n.env.Interrupt(netRx)
		}
	}()
	for {
		c, err := q.Pop()
		if err != nil {
			return err
		}
		if c == nil {
			n.rxWait = true
			return nil
		}
		if c.WLen < vnetHdrLen {
			return &ChainError{Head: c.Head, Reason: fmt.Sprintf("virtio-net rx buffer of %d bytes", c.WLen)}
		}
		segs, err := c.Writer(n.env.Mem).Segments(c.WLen)
		if err != nil {
			return &ChainError{Head: c.Head, Reason: "virtio-net rx", Err: err}
		}
		if len(segs) > iovMax {
			segs = segs[:iovMax]
		}
		k, err := unix.Readv(n.tap.Fd(), segs)
		if errors.Is(err, unix.EINTR) {
			q.Unpop()
			continue
		}
		if err != nil || k <= 0 {
			q.Unpop() // nothing to read (EAGAIN): give the buffer back
			return nil
		}
		// num_buffers is 1 without VIRTIO_NET_F_MRG_RXBUF.
		w := c.Writer(n.env.Mem)
		if _, err := w.Segments(10); err != nil {
			return &ChainError{Head: c.Head, Reason: "virtio-net rx", Err: err}
		}
		if _, err := w.Write([]byte{1, 0}); err != nil {
			return &ChainError{Head: c.Head, Reason: "virtio-net rx", Err: err}
		}
		if err := q.Push(c.Head, uint32(k)); err != nil {
			return err
		}
		n.RxPackets++
		got++
	}
}
