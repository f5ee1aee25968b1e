// Package guestmem owns guest RAM: fd-backed (memfd) regions mapped into the
// VMM, addressed by guest-physical address. Every access is bounds-checked;
// an address outside guest RAM is an *AccessError, never a crash.
//
// Devices reach guest memory only through this type. The VMM uses Regions()
// to register KVM memory slots and the vfio-user client uses the fds to hand
// guest RAM to a server.
package guestmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Spec asks for one region of RAM at a guest-physical address.
type Spec struct {
	GPA  uint64
	Size uint64
}

// Region is one contiguous run of guest RAM.
type Region struct {
	GPA      uint64
	Size     uint64
	Fd       int    // backing file (memfd); -1 for anonymous test memory
	FdOffset uint64 // offset of this region in Fd
	host     []byte
}

// Host returns the VMM mapping of the region. It exists for the VMM (KVM
// memory slots) and for zero-copy I/O; devices use the accessors instead.
func (r *Region) Host() []byte { return r.host }

// End is the first guest-physical address after the region.
func (r *Region) End() uint64 { return r.GPA + r.Size }

// AccessError reports a guest-physical range that is not (wholly) RAM.
type AccessError struct {
	GPA uint64
	Len uint64
}

func (e *AccessError) Error() string {
	return fmt.Sprintf("guest address range %#x+%#x is outside guest memory", e.GPA, e.Len)
}

// IsAccessError reports whether err is (or wraps) an *AccessError and returns it.
func IsAccessError(err error) (*AccessError, bool) {
	var ae *AccessError
	ok := errors.As(err, &ae)
	return ae, ok
}

// Memory is the guest's RAM.
type Memory struct {
	regions []*Region // sorted by GPA, non-overlapping
	fd      int
	mapped  [][]byte
}

// New creates guest RAM for the given regions, all backed by one memfd
// (regions at consecutive offsets), mapped shared so that another process
// (a vfio-user server) can map the same pages.
func New(specs []Spec) (*Memory, error) {
	if len(specs) == 0 {
		return nil, errors.New("guestmem: no regions")
	}
	s := append([]Spec(nil), specs...)
	sort.Slice(s, func(i, j int) bool { return s[i].GPA < s[j].GPA })
	var total uint64
	for i, r := range s {
		if r.Size == 0 || r.Size%4096 != 0 || r.GPA%4096 != 0 {
			return nil, fmt.Errorf("guestmem: region %#x+%#x is not page aligned", r.GPA, r.Size)
		}
		if r.GPA+r.Size < r.GPA {
			return nil, fmt.Errorf("guestmem: region %#x+%#x wraps", r.GPA, r.Size)
		}
		if i > 0 && s[i-1].GPA+s[i-1].Size > r.GPA {
			return nil, fmt.Errorf("guestmem: regions %#x and %#x overlap", s[i-1].GPA, r.GPA)
		}
		total += r.Size
	}
	fd, err := unix.MemfdCreate("godvm-guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("guestmem: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(total)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("guestmem: cannot size guest RAM to %d bytes: %w", total, err)
	}
	m := &Memory{fd: fd}
	var off uint64
	for _, r := range s {
		b, err := unix.Mmap(fd, int64(off), int(r.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("guestmem: mmap %d bytes: %w", r.Size, err)
		}
		m.mapped = append(m.mapped, b)
		m.regions = append(m.regions, &Region{GPA: r.GPA, Size: r.Size, Fd: fd, FdOffset: off, host: b})
		off += r.Size
	}
	return m, nil
}

// FromBytes wraps caller-owned buffers as guest memory (tests, fuzzing and
// out-of-process servers that mapped a peer's fd). Regions must not overlap.
func FromBytes(regions ...Region) (*Memory, error) {
	m := &Memory{fd: -1}
	for i := range regions {
		r := regions[i]
		if r.host == nil {
			return nil, errors.New("guestmem: FromBytes region without memory; use NewRegion")
		}
		m.regions = append(m.regions, &r)
	}
	sort.Slice(m.regions, func(i, j int) bool { return m.regions[i].GPA < m.regions[j].GPA })
	for i := 1; i < len(m.regions); i++ {
		if m.regions[i-1].End() > m.regions[i].GPA {
			return nil, fmt.Errorf("guestmem: regions %#x and %#x overlap", m.regions[i-1].GPA, m.regions[i].GPA)
		}
	}
	return m, nil
}

// NewRegion describes caller-owned memory b at gpa (for FromBytes).
// fd/fdOffset may be -1/0 when the memory has no file behind it.
func NewRegion(gpa uint64, b []byte, fd int, fdOffset uint64) Region {
	return Region{GPA: gpa, Size: uint64(len(b)), Fd: fd, FdOffset: fdOffset, host: b}
}

// Close unmaps guest RAM made by New. Regions made by FromBytes are the caller's.
func (m *Memory) Close() error {
	for _, b := range m.mapped {
		unix.Munmap(b)
	}
	m.mapped = nil
	if m.fd >= 0 {
		unix.Close(m.fd)
		m.fd = -1
	}
	return nil
}

// Fd is the memfd behind all regions made by New (-1 otherwise).
func (m *Memory) Fd() int { return m.fd }

// Regions lists the RAM regions in address order.
func (m *Memory) Regions() []*Region { return m.regions }

// Size is the total amount of RAM.
func (m *Memory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += r.Size
	}
	return n
}

func (m *Memory) find(gpa uint64) *Region {
	rs := m.regions
	i := sort.Search(len(rs), func(i int) bool { return rs[i].End() > gpa })
	if i < len(rs) && rs[i].GPA <= gpa {
		return rs[i]
	}
	return nil
}

// Contains reports whether [gpa, gpa+n) is RAM (possibly across adjacent regions).
func (m *Memory) Contains(gpa, n uint64) bool {
	for n > 0 {
		r := m.find(gpa)
		if r == nil {
			return false
		}
		k := min(n, r.End()-gpa)
		gpa += k
		n -= k
	}
	return true
}

// Slice returns the host view of [gpa, gpa+n), which must lie in one region.
// The slice aliases guest memory: the guest can change it at any time.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	r := m.find(gpa)
	if r == nil || n > r.End()-gpa {
		return nil, &AccessError{GPA: gpa, Len: n}
	}
	off := gpa - r.GPA
	return r.host[off : off+n : off+n], nil
}

// ReadAt copies guest memory at gpa into p.
func (m *Memory) ReadAt(p []byte, gpa uint64) error {
	return m.walk(gpa, uint64(len(p)), func(b []byte, done uint64) { copy(p[done:], b) })
}

// WriteAt copies p into guest memory at gpa.
func (m *Memory) WriteAt(p []byte, gpa uint64) error {
	return m.walk(gpa, uint64(len(p)), func(b []byte, done uint64) { copy(b, p[done:]) })
}

// walk checks the whole range first so that a failing access changes nothing.
func (m *Memory) walk(gpa, n uint64, f func(b []byte, done uint64)) error {
	if gpa+n < gpa || !m.Contains(gpa, n) {
		return &AccessError{GPA: gpa, Len: n}
	}
	var done uint64
	for done < n {
		r := m.find(gpa + done)
		off := gpa + done - r.GPA
		k := min(n-done, r.Size-off)
		f(r.host[off:off+k], done)
		done += k
	}
	return nil
}

// Fill sets [gpa, gpa+n) to v.
func (m *Memory) Fill(gpa, n uint64, v byte) error {
	return m.walk(gpa, n, func(b []byte, _ uint64) {
		for i := range b {
			b[i] = v
		}
	})
}

func (m *Memory) ReadU8(gpa uint64) (uint8, error) {
	b, err := m.Slice(gpa, 1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (m *Memory) ReadU16(gpa uint64) (uint16, error) {
	var b [2]byte
	err := m.ReadAt(b[:], gpa)
	return binary.LittleEndian.Uint16(b[:]), err
}

func (m *Memory) ReadU32(gpa uint64) (uint32, error) {
	var b [4]byte
	err := m.ReadAt(b[:], gpa)
	return binary.LittleEndian.Uint32(b[:]), err
}

func (m *Memory) ReadU64(gpa uint64) (uint64, error) {
	var b [8]byte
	err := m.ReadAt(b[:], gpa)
	return binary.LittleEndian.Uint64(b[:]), err
}

func (m *Memory) WriteU8(gpa uint64, v uint8) error { return m.WriteAt([]byte{v}, gpa) }

func (m *Memory) WriteU16(gpa uint64, v uint16) error {
	return m.WriteAt(binary.LittleEndian.AppendUint16(nil, v), gpa)
}

func (m *Memory) WriteU32(gpa uint64, v uint32) error {
	return m.WriteAt(binary.LittleEndian.AppendUint32(nil, v), gpa)
}

func (m *Memory) WriteU64(gpa uint64, v uint64) error {
	return m.WriteAt(binary.LittleEndian.AppendUint64(nil, v), gpa)
}

// word returns the aligned 32-bit word of guest RAM containing gpa.
func (m *Memory) word(gpa uint64) (*uint32, error) {
	b, err := m.Slice(gpa&^3, 4)
	if err != nil {
		return nil, err
	}
	return (*uint32)(unsafe.Pointer(&b[0])), nil
}

// LoadU16Acquire reads an aligned 16-bit value with acquire ordering
// (virtqueue indexes the guest publishes).
func (m *Memory) LoadU16Acquire(gpa uint64) (uint16, error) {
	if gpa&1 != 0 {
		return 0, &AccessError{GPA: gpa, Len: 2}
	}
	w, err := m.word(gpa)
	if err != nil {
		return 0, err
	}
	return uint16(atomic.LoadUint32(w) >> ((gpa & 2) * 8)), nil
}

// StoreU16Release writes an aligned 16-bit value with release ordering: all
// earlier writes to guest memory are visible before it. The other half of the
// containing word is preserved even if the guest writes it concurrently.
func (m *Memory) StoreU16Release(gpa uint64, v uint16) error {
	if gpa&1 != 0 {
		return &AccessError{GPA: gpa, Len: 2}
	}
	w, err := m.word(gpa)
	if err != nil {
		return err
	}
	shift := (gpa & 2) * 8
	for {
		old := atomic.LoadUint32(w)
		nw := old&^(0xffff<<shift) | uint32(v)<<shift
		if atomic.CompareAndSwapUint32(w, old, nw) {
			return nil
		}
	}
}

// LoadU32Acquire reads an aligned 32-bit value with acquire ordering.
func (m *Memory) LoadU32Acquire(gpa uint64) (uint32, error) {
	if gpa&3 != 0 {
		return 0, &AccessError{GPA: gpa, Len: 4}
	}
	w, err := m.word(gpa)
	if err != nil {
		return 0, err
	}
	return atomic.LoadUint32(w), nil
}

// StoreU32Release writes an aligned 32-bit value after all earlier writes.
func (m *Memory) StoreU32Release(gpa uint64, v uint32) error {
	if gpa&3 != 0 {
		return &AccessError{GPA: gpa, Len: 4}
	}
	w, err := m.word(gpa)
	if err != nil {
		return err
	}
	atomic.StoreUint32(w, v)
	return nil
}

// StoreU8Release writes one byte after all earlier writes are visible (the
// DSA completion record's status byte is written last this way).
func (m *Memory) StoreU8Release(gpa uint64, v uint8) error {
	w, err := m.word(gpa)
	if err != nil {
		return err
	}
	shift := (gpa & 3) * 8
	for {
		old := atomic.LoadUint32(w)
		nw := old&^(0xff<<shift) | uint32(v)<<shift
		if atomic.CompareAndSwapUint32(w, old, nw) {
			return nil
		}
	}
}
