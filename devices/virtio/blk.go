package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"godvm/devices/pci"
	"godvm/devices/platform"
)

// virtio-blk feature bits.
const (
	BlkFSegMax      = 1 << 2
	BlkFRO          = 1 << 5
	BlkFFlush       = 1 << 9
	BlkFDiscard     = 1 << 13
	BlkFWriteZeroes = 1 << 14
)

// virtio-blk request types and status values.
const (
	BlkTIn          = 0
	BlkTOut         = 1
	BlkTFlush       = 4
	BlkTGetID       = 8
	BlkTDiscard     = 11
	BlkTWriteZeroes = 13

	BlkSOK     = 0
	BlkSIOErr  = 1
	BlkSUnsupp = 2
)

const (
	sectorSize     = 512
	blkQueueSize   = 256
	blkSegMax      = blkQueueSize - 2
	blkIDLen       = 20
	blkMaxDiscard  = 1 << 22 // sectors per discard/write-zeroes segment
	blkConfigLen   = 60
	blkHeaderLen   = 16
	iovMax         = 1024
	maxDiscardSegs = 1
)

// BlockOptions configures a virtio-blk device.
type BlockOptions struct {
	Path     string // raw image file (or block device)
	ReadOnly bool
	ID       string // serial reported by GET_ID (at most 20 bytes); default from the file name
}

// ParseDiskFlag parses "--disk PATH[,readonly][,id=SERIAL]" and checks that
// the image exists (so a typo fails before a machine is built).
func ParseDiskFlag(s string) (BlockOptions, error) {
	parts := strings.Split(s, ",")
	o := BlockOptions{Path: parts[0]}
	if o.Path == "" {
		return o, fmt.Errorf("--disk %q: missing image path", s)
	}
	for _, p := range parts[1:] {
		switch {
		case p == "readonly" || p == "ro":
			o.ReadOnly = true
		case strings.HasPrefix(p, "id="):
			o.ID = strings.TrimPrefix(p, "id=")
			if len(o.ID) > blkIDLen {
				return o, fmt.Errorf("--disk %q: id longer than %d bytes", s, blkIDLen)
			}
		default:
			return o, fmt.Errorf("--disk %q: unknown option %q (want readonly or id=SERIAL)", s, p)
		}
	}
	st, err := os.Stat(o.Path)
	if err != nil {
		return o, fmt.Errorf("--disk: disk image %s: %w", o.Path, errors.Unwrap(err))
	}
	if st.IsDir() {
		return o, fmt.Errorf("--disk: disk image %s is a directory", o.Path)
	}
	return o, nil
}

// Block is the virtio-blk backend.
type Block struct {
	f       *os.File
	ro      bool
	size    uint64 // bytes usable (whole sectors)
	id      [blkIDLen]byte
	env     *Env
	scratch []byte
}

// NewBlock opens the image.
func NewBlock(o BlockOptions) (*Block, error) {
	flags := os.O_RDWR
	if o.ReadOnly {
		flags = os.O_RDONLY
	}
	f, err := os.OpenFile(o.Path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("disk image: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk image: %w", err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("disk image %s is a directory", o.Path)
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk image: %w", err)
	}
	b := &Block{f: f, ro: o.ReadOnly, size: uint64(end) &^ (sectorSize - 1)}
	id := o.ID
	if id == "" {
		id = filepath.Base(o.Path)
	}
	copy(b.id[:], id)
	return b, nil
}

// AddBlock creates a virtio-blk device for o and places it on root. The
// function it returns stops the device (its worker finishes the request in
// hand first), flushes the image to stable storage and closes it: the VMM
// calls it once the guest has stopped, however it stopped.
func AddBlock(p *platform.Platform, root *pci.Root, o BlockOptions) (func() error, error) {
	be, err := NewBlock(o)
	if err != nil {
		return nil, err
	}
	d, err := addDevice(p, root, "virtio-blk "+filepath.Base(o.Path), be, be.f)
	if err != nil {
		return nil, err
	}
	return func() error {
		derr := d.Close()
		if err := be.Close(); err != nil {
			return err
		}
		return derr
	}, nil
}

func addDevice(p *platform.Platform, root *pci.Root, name string, be Backend, closer io.Closer) (*Device, error) {
	d, err := New(p, name, be)
	if err != nil {
		if closer != nil {
			closer.Close()
		}
		return nil, err
	}
	if _, err := root.Add(name, d); err != nil {
		d.Close()
		if closer != nil {
			closer.Close()
		}
		return nil, err
	}
	return d, nil
}

// Close flushes a writable image to stable storage (fsync) and closes it.
func (b *Block) Close() error {
	var err error
	if !b.ro {
		if e := b.f.Sync(); e != nil {
			err = fmt.Errorf("disk image %s: %w", b.f.Name(), e)
		}
	}
	if e := b.f.Close(); e != nil && err == nil {
		err = fmt.Errorf("disk image %s: %w", b.f.Name(), e)
	}
	return err
}

func (b *Block) DeviceType() uint16      { return IDBlock }
func (b *Block) QueueMaxSizes() []uint16 { return []uint16{blkQueueSize} }

func (b *Block) Features() uint64 {
	f := uint64(BlkFSegMax | BlkFFlush)
	if b.ro {
		f |= BlkFRO
	} else {
		f |= BlkFDiscard | BlkFWriteZeroes
	}
	return f
}

func (b *Block) config() [blkConfigLen]byte {
	var c [blkConfigLen]byte
	le := binary.LittleEndian
	le.PutUint64(c[0:], b.size/sectorSize)
	le.PutUint32(c[12:], blkSegMax)
	le.PutUint32(c[36:], blkMaxDiscard) // max_discard_sectors
	le.PutUint32(c[40:], maxDiscardSegs)
	le.PutUint32(c[44:], 1)             // discard_sector_alignment
	le.PutUint32(c[48:], blkMaxDiscard) // max_write_zeroes_sectors
	le.PutUint32(c[52:], maxDiscardSegs)
	c[56] = 1 // write_zeroes_may_unmap
	return c
}

func (b *Block) ReadConfig(off uint64, data []byte) {
	c := b.config()
	for i := range data {
		if o := off + uint64(i); o < blkConfigLen {
			data[i] = c[o]
		} else {
			data[i] = 0
		}
	}
}

func (b *Block) WriteConfig(off uint64, data []byte) {} // writeback toggle not offered

func (b *Block) Activate(env *Env) error {
	b.env = env
	return nil
}

func (b *Block) Reset() { b.env = nil }

// Kick serves every available request, then interrupts once.
func (b *Block) Kick(qi int) error {
	q := b.env.Queues[qi]
	defer b.env.Interrupt(qi)
	for {
		c, err := q.Pop()
		if err != nil || c == nil {
			return err
		}
		n, err := b.handle(c)
		if err != nil {
			return err
		}
		if err := q.Push(c.Head, n); err != nil {
			return err
		}
	}
}

// handle performs one request and returns the bytes written to the chain.
// Driver errors (a chain without header or status byte) are *ChainErrors;
// host I/O errors become VIRTIO_BLK_S_IOERR.
func (b *Block) handle(c *Chain) (uint32, error) {
	mem := b.env.Mem
	if c.RLen < blkHeaderLen || c.WLen < 1 {
		return 0, &ChainError{Head: c.Head, Reason: fmt.Sprintf("virtio-blk request with %d readable, %d writable bytes", c.RLen, c.WLen)}
	}
	r := c.Reader(mem)
	var hdr [blkHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, &ChainError{Head: c.Head, Reason: "virtio-blk header", Err: err}
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	w := c.Writer(mem)
	dataIn := c.WLen - 1
	status := byte(BlkSOK)
	switch typ {
	case BlkTIn:
		if !b.inRange(sector, dataIn) || dataIn%sectorSize != 0 {
			status = BlkSIOErr
			break
		}
		segs, err := w.Segments(dataIn)
		if err != nil {
			return 0, &ChainError{Head: c.Head, Reason: "virtio-blk data", Err: err}
		}
		if err := b.rw(segs, sector*sectorSize, false); err != nil {
			status = BlkSIOErr
		}
	case BlkTOut:
		n := c.RLen - blkHeaderLen
		if b.ro || !b.inRange(sector, n) || n%sectorSize != 0 {
			status = BlkSIOErr
			break
		}
		segs, err := r.Segments(n)
		if err != nil {
			return 0, &ChainError{Head: c.Head, Reason: "virtio-blk data", Err: err}
		}
		if err := b.rw(segs, sector*sectorSize, true); err != nil {
			status = BlkSIOErr
		}
	case BlkTFlush:
		if err := b.f.Sync(); err != nil {
			status = BlkSIOErr
		}
	case BlkTGetID:
		n := min(dataIn, blkIDLen)
		if _, err := w.Write(b.id[:n]); err != nil {
			return 0, &ChainError{Head: c.Head, Reason: "virtio-blk id", Err: err}
		}
	case BlkTDiscard, BlkTWriteZeroes:
		if b.ro {
			status = BlkSUnsupp
			break
		}
		status = b.discard(r, c.RLen-blkHeaderLen, typ == BlkTWriteZeroes)
	default:
		status = BlkSUnsupp
	}
	// The status byte is the last writable byte.
	if rem := w.Remaining(); rem > 1 {
		if _, err := w.Segments(rem - 1); err != nil {
			return 0, &ChainError{Head: c.Head, Reason: "virtio-blk status", Err: err}
		}
		if typ != BlkTIn {
			w.Written -= uint32(rem - 1) // skipped, not written
		}
	}
	if _, err := w.Write([]byte{status}); err != nil {
		return 0, &ChainError{Head: c.Head, Reason: "virtio-blk status", Err: err}
	}
	if typ == BlkTIn && status != BlkSOK {
		return 1, nil
	}
	return w.Written, nil
}

func (b *Block) inRange(sector, n uint64) bool {
	if sector > b.size/sectorSize {
		return false
	}
	off := sector * sectorSize
	return off+n >= off && off+n <= b.size
}

// rw moves segs to or from the image at off, in batches of IOV_MAX.
func (b *Block) rw(segs [][]byte, off uint64, write bool) error {
	for len(segs) > 0 {
		batch := segs[:min(len(segs), iovMax)]
		var n int
		var err error
		if write {
			n, err = unix.Pwritev(int(b.f.Fd()), batch, int64(off))
		} else {
			n, err = unix.Preadv(int(b.f.Fd()), batch, int64(off))
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		off += uint64(n)
		// Drop what was done; a partial transfer continues mid-segment.
		for n > 0 {
			if n >= len(segs[0]) {
				n -= len(segs[0])
				segs = segs[1:]
			} else {
				segs[0] = segs[0][n:]
				n = 0
			}
		}
	}
	return nil
}

// discard handles DISCARD and WRITE_ZEROES segments (sector u64, count u32,
// flags u32).
func (b *Block) discard(r *ChainReader, n uint64, zero bool) byte {
	if n == 0 || n%16 != 0 || n/16 > maxDiscardSegs {
		return BlkSUnsupp
	}
	for i := uint64(0); i < n/16; i++ {
		var seg [16]byte
		if _, err := io.ReadFull(r, seg[:]); err != nil {
			return BlkSIOErr
		}
		sector := binary.LittleEndian.Uint64(seg[0:])
		count := uint64(binary.LittleEndian.Uint32(seg[8:]))
		flags := binary.LittleEndian.Uint32(seg[12:])
		if count > blkMaxDiscard || !b.inRange(sector, count*sectorSize) || flags&^1 != 0 || (!zero && flags != 0) {
			return BlkSUnsupp
		}
		off, length := int64(sector*sectorSize), int64(count*sectorSize)
		if length == 0 {
			continue
		}
		fd := int(b.f.Fd())
		if zero {
			mode := uint32(unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE)
			if flags&1 != 0 {
				mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
			}
			if err := unix.Fallocate(fd, mode, off, length); err != nil {
				if err := b.writeZeros(off, length); err != nil {
					return BlkSIOErr
				}
			}
		} else {
			// Discard is a hint: a file system without hole punching just
			// keeps the data.
			unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		}
	}
	return BlkSOK
}

func (b *Block) writeZeros(off, n int64) error {
	if b.scratch == nil {
		b.scratch = make([]byte, 1<<20)
	}
	for n > 0 {
		k := min(n, int64(len(b.scratch)))
		if _, err := b.f.WriteAt(b.scratch[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}
