package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"godvm/devices/pci"
	"godvm/devices/platform"
)

// virtio-console feature bits.
const ConsoleFEmergWrite = 1 << 2

const (
	consoleQueueSize = 128
	consoleRx        = 0 // receiveq (port 0): host -> guest
	consoleTx        = 1 // transmitq (port 0): guest -> host
	consoleConfigLen = 12
)

// ConsoleOptions configures the virtio-console device (one port, hvc0 in
// the guest).
type ConsoleOptions struct {
	Output io.Writer // guest output goes here (a file or the terminal)
	Input  *os.File  // optional: host input for the guest
}

// ParseConsoleFlag parses a --virtio-console value: "stdout" (output to
// the terminal), "stdio" (terminal output and input) or a file path (output
// appended to that file). The returned closer (nil for the terminal) closes
// the file.
func ParseConsoleFlag(s string) (ConsoleOptions, io.Closer, error) {
	switch s {
	case "":
		return ConsoleOptions{}, nil, errors.New("--virtio-console: empty value (want stdout, stdio or a file path)")
	case "stdout":
		return ConsoleOptions{Output: os.Stdout}, nil, nil
	case "stdio":
		return ConsoleOptions{Output: os.Stdout, Input: os.Stdin}, nil, nil
	}
	f, err := os.OpenFile(s, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return ConsoleOptions{}, nil, fmt.Errorf("--virtio-console: %w", err)
	}
	return ConsoleOptions{Output: f}, f, nil
}

// Console is the virtio-console backend.
type Console struct {
	opts    ConsoleOptions
	mu      sync.Mutex // output writes (emergency writes come from vCPU threads)
	env     *Env
	rxWait  bool // input pending but no receive buffers: stop polling input
	inEOF   bool
	buf     []byte
	scratch [4096]byte
}

// NewConsole makes the backend.
func NewConsole(o ConsoleOptions) (*Console, error) {
	if o.Output == nil {
		return nil, errors.New("virtio-console: no output")
	}
	return &Console{opts: o}, nil
}

// AddConsole places a virtio-console device on root.
func AddConsole(p *platform.Platform, root *pci.Root, o ConsoleOptions) error {
	be, err := NewConsole(o)
	if err != nil {
		return err
	}
	_, err = addDevice(p, root, "virtio-console", be, nil)
	return err
}

func (c *Console) DeviceType() uint16      { return IDConsole }
func (c *Console) Features() uint64        { return ConsoleFEmergWrite }
func (c *Console) QueueMaxSizes() []uint16 { return []uint16{consoleQueueSize, consoleQueueSize} }

func (c *Console) ReadConfig(off uint64, data []byte) {
	var cfg [consoleConfigLen]byte
	binary.LittleEndian.PutUint16(cfg[0:], 80)
	binary.LittleEndian.PutUint16(cfg[2:], 25)
	binary.LittleEndian.PutUint32(cfg[4:], 1)
	for i := range data {
		if o := off + uint64(i); o < consoleConfigLen {
			data[i] = cfg[o]
		} else {
			data[i] = 0
		}
	}
}

// WriteConfig implements emerg_wr: a write at offset 8 outputs one
// character.
func (c *Console) WriteConfig(off uint64, data []byte) {
	if off == 8 && len(data) >= 1 {
		c.write(data[:1])
	}
}

func (c *Console) write(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.opts.Output.Write(b); err != nil {
		slog.Warn("virtio-console: output", "err", err)
	}
}

func (c *Console) Activate(env *Env) error {
	c.env = env
	c.rxWait = false
	return nil
}

func (c *Console) Reset() { c.env = nil }

func (c *Console) Kick(qi int) error {
	switch qi {
	case consoleTx:
		return c.transmit()
	case consoleRx:
		c.rxWait = false // new buffers: poll input again
	}
	return nil
}

func (c *Console) transmit() error {
	q := c.env.Queues[consoleTx]
	defer c.env.Interrupt(consoleTx)
	for {
		ch, err := q.Pop()
		if err != nil || ch == nil {
			return err
		}
		n := min(ch.RLen, 1<<20)
		if cap(c.buf) < int(n) {
			c.buf = make([]byte, n)
		}
		b := c.buf[:n]
		if _, err := io.ReadFull(ch.Reader(c.env.Mem), b); err != nil {
			return &ChainError{Head: ch.Head, Reason: "virtio-console output", Err: err}
		}
		c.write(b)
		if err := q.Push(ch.Head, 0); err != nil {
			return err
		}
	}
}

// PollFDs waits for host input while the guest has receive buffers.
func (c *Console) PollFDs() []int32 {
	if c.opts.Input == nil || c.inEOF || c.rxWait || c.env == nil || c.env.Queues[consoleRx] == nil {
		return nil
	}
	return []int32{int32(c.opts.Input.Fd())}
}

// Ready moves available host input into one receive buffer.
func (c *Console) Ready(fd int32) error {
	q := c.env.Queues[consoleRx]
	ch, err := q.Pop()
	if err != nil {
		return err
	}
	if ch == nil {
		c.rxWait = true
		return nil
	}
	n := min(ch.WLen, uint64(len(c.scratch)))
	k, rerr := unix.Read(int(fd), c.scratch[:n])
	if k < 0 {
		k = 0
	}
	if k == 0 && (rerr == nil || !errors.Is(rerr, unix.EAGAIN)) {
		c.inEOF = true
	}
	w := ch.Writer(c.env.Mem)
	if _, err := w.Write(c.scratch[:k]); err != nil {
		return &ChainError{Head: ch.Head, Reason: "virtio-console input", Err: err}
	}
	if err := q.Push(ch.Head, w.Written); err != nil {
		return err
	}
	c.env.Interrupt(consoleRx)
	return nil
}
