package virtio

import (
	"errors"

	"golang.org/x/sys/unix"

	"godvm/devices/pci"
	"godvm/devices/platform"
)

const rngQueueSize = 64

// maxRNGRequest bounds the entropy handed out per request (Linux asks for
// at most a page or so at a time).
const maxRNGRequest = 64 << 10

// RNG is the virtio-rng backend: each request's writable buffers are filled
// from the host's getrandom(2).
type RNG struct {
	env *Env
	buf []byte
}

// AddRNG places a virtio-rng device on root.
func AddRNG(p *platform.Platform, root *pci.Root) error {
	_, err := addDevice(p, root, "virtio-rng", &RNG{}, nil)
	return err
}

func (r *RNG) DeviceType() uint16                  { return IDRNG }
func (r *RNG) Features() uint64                    { return 0 }
func (r *RNG) QueueMaxSizes() []uint16             { return []uint16{rngQueueSize} }
func (r *RNG) ReadConfig(off uint64, data []byte)  { clear(data) }
func (r *RNG) WriteConfig(off uint64, data []byte) {}
func (r *RNG) Activate(env *Env) error             { r.env = env; return nil }
func (r *RNG) Reset()                              { r.env = nil }

func (r *RNG) Kick(qi int) error {
	q := r.env.Queues[qi]
	defer r.env.Interrupt(qi)
	for {
		c, err := q.Pop()
		if err != nil || c == nil {
			return err
		}
		n := min(c.WLen, maxRNGRequest)
		if cap(r.buf) < int(n) {
			r.buf = make([]byte, n)
		}
		b := r.buf[:n]
		got := 0
		for got < len(b) {
			k, err := unix.Getrandom(b[got:], 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				break
			}
			got += k
		}
		w := c.Writer(r.env.Mem)
		if _, err := w.Write(b[:got]); err != nil {
			return &ChainError{Head: c.Head, Reason: "virtio-rng buffer", Err: err}
		}
		if err := q.Push(c.Head, w.Written); err != nil {
			return err
		}
	}
}
