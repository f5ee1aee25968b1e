package pci

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"

	"godvm/devices/bus"
	"godvm/devices/platform"
)

// MSI-X capability layout (relative to the capability) and bits.
const (
	MSIXCtl       = 0x02 // message control
	MSIXTableReg  = 0x04 // table offset | BIR
	MSIXPBAReg    = 0x08 // PBA offset | BIR
	MSIXEnable    = 1 << 15
	MSIXFuncMask  = 1 << 14
	MSIXEntrySize = 16
	MSIXMaxVecs   = 2048
	msixVecMasked = 1 // vector control bit 0
)

// MSIXConfig places an MSI-X table and PBA in a device's BARs.
type MSIXConfig struct {
	Vectors     int    // 1..2048
	TableBAR    int    // BIR of the table
	TableOffset uint32 // 8-byte aligned offset in that BAR
	PBABAR      int
	PBAOffset   uint32
	// External: the vectors' eventfds are signalled outside the model (a
	// VFIO or vfio-user device interrupts through them directly). See
	// MSIX for what that changes.
	External bool
}

type msixEntry struct {
	addr uint64
	data uint32
	ctl  uint32
}

// MSIX is an MSI-X capability with its table and pending-bit array. Each
// vector is backed by a platform.MSIVector: the guest's table and control
// writes become Update(msg, masked) calls (in the VMM: a KVM GSI route plus
// an irqfd), so an unmasked vector's eventfd interrupts the guest directly.
//
// Emulated devices call Notify(v): an unmasked vector's eventfd is
// signalled; a masked one (vector mask, function mask) sets its pending bit
// and is delivered, and the bit cleared, when it is unmasked. While MSI-X is
// disabled, Notify drops the interrupt (INTx is not emulated).
//
// External vectors (passthrough): the device signals the eventfd itself, so
// the model cannot see an interrupt as it happens. A masked vector is
// detached from the guest (Update with masked=true removes the irqfd, so the
// signal stays in the eventfd counter, and KVM delivers it when the irqfd is
// attached again on unmask). Pending bits are reconstructed when the guest
// reads the PBA: the counter of each masked vector is drained into its
// pending bit, and unmasking a vector with its bit set re-signals the
// eventfd. Limitation: the PBA only shows interrupts that arrived before the
// read, and the device's own PBA (in hardware) is never consulted.
type MSIX struct {
	mu       sync.Mutex
	cs       *ConfigSpace
	cap      uint16
	cfg      MSIXConfig
	entries  []msixEntry
	pending  []uint64
	vecs     []platform.MSIVector
	detached []bool                // last masked state passed to Update
	lastMsg  []platform.MSIMessage // last message passed to Update
	enabled  bool
	fmask    bool
}

// NewMSIX allocates cfg.Vectors vectors from irq and adds the MSI-X
// capability to cs. The caller routes accesses to the table and the PBA in
// its BARs to Table() and PBA() (Mux helps).
func NewMSIX(irq platform.Interrupts, cs *ConfigSpace, cfg MSIXConfig) (*MSIX, error) {
	if irq == nil {
		return nil, fmt.Errorf("pci: %s: MSI-X without a platform interrupt controller", cs.name)
	}
	if cfg.Vectors < 1 || cfg.Vectors > MSIXMaxVecs {
		return nil, fmt.Errorf("pci: %s: %d MSI-X vectors (1..%d)", cs.name, cfg.Vectors, MSIXMaxVecs)
	}
	if cfg.TableBAR < 0 || cfg.TableBAR >= NumBARs || cfg.PBABAR < 0 || cfg.PBABAR >= NumBARs ||
		cfg.TableOffset&7 != 0 || cfg.PBAOffset&7 != 0 {
		return nil, fmt.Errorf("pci: %s: bad MSI-X placement (table BAR%d+%#x, PBA BAR%d+%#x)",
			cs.name, cfg.TableBAR, cfg.TableOffset, cfg.PBABAR, cfg.PBAOffset)
	}
	m := &MSIX{
		cs:       cs,
		cfg:      cfg,
		entries:  make([]msixEntry, cfg.Vectors),
		pending:  make([]uint64, (cfg.Vectors+63)/64),
		vecs:     make([]platform.MSIVector, cfg.Vectors),
		detached: make([]bool, cfg.Vectors),
		lastMsg:  make([]platform.MSIMessage, cfg.Vectors),
	}
	for i := range m.entries {
		m.entries[i].ctl = msixVecMasked
		v, err := irq.NewMSIVector()
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("pci: %s: MSI-X vector %d: %w", cs.name, i, err)
		}
		m.vecs[i] = v
		m.detached[i] = true
	}
	body := make([]byte, 10)
	le := binary.LittleEndian
	le.PutUint16(body[0:], uint16(cfg.Vectors-1))
	le.PutUint32(body[2:], cfg.TableOffset|uint32(cfg.TableBAR))
	le.PutUint32(body[6:], cfg.PBAOffset|uint32(cfg.PBABAR))
	mask := make([]byte, 10)
	le.PutUint16(mask[0:], MSIXEnable|MSIXFuncMask)
	off, err := cs.AddCapability(CapMSIX, body, mask)
	if err != nil {
		m.Close()
		return nil, err
	}
	m.cap = off
	cs.OnWrite(off+MSIXCtl, 2, func(uint16, []byte) { m.controlChanged() })
	return m, nil
}

// CapOffset is the capability's offset in configuration space.
func (m *MSIX) CapOffset() uint16 { return m.cap }

// NumVectors is the table size.
func (m *MSIX) NumVectors() int { return len(m.entries) }

// TableSize and PBASize are the byte sizes of the two structures.
func (m *MSIX) TableSize() uint64 { return uint64(len(m.entries)) * MSIXEntrySize }
func (m *MSIX) PBASize() uint64   { return uint64(len(m.pending)) * 8 }

// Vector returns vector v's platform vector (its eventfd is what a
// passthrough device is given).
func (m *MSIX) Vector(v int) platform.MSIVector {
	if v < 0 || v >= len(m.vecs) {
		return nil
	}
	return m.vecs[v]
}

// Enabled reports the MSI-X Enable bit.
func (m *MSIX) Enabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled
}

// Masked reports whether vector v is masked (by its own mask bit, the
// function mask, or MSI-X being disabled).
func (m *MSIX) Masked(v int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.entries) {
		return true
	}
	return m.maskedLocked(v)
}

// Pending reports vector v's pending bit.
func (m *MSIX) Pending(v int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.entries) {
		return false
	}
	return m.pending[v/64]&(1<<(v%64)) != 0
}

// Message returns the address/data the guest programmed for vector v.
func (m *MSIX) Message(v int) platform.MSIMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.entries) {
		return platform.MSIMessage{}
	}
	return platform.MSIMessage{Addr: m.entries[v].addr, Data: m.entries[v].data}
}

func (m *MSIX) maskedLocked(v int) bool {
	return !m.enabled || m.fmask || m.entries[v].ctl&msixVecMasked != 0
}

// Notify raises vector v: delivered now if unmasked, made pending if masked,
// dropped while MSI-X is disabled or for a vector number out of range.
func (m *MSIX) Notify(v int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.entries) || !m.enabled {
		return
	}
	if m.maskedLocked(v) {
		m.pending[v/64] |= 1 << (v % 64)
		return
	}
	if err := m.vecs[v].EventFD().Signal(); err != nil {
		slog.Warn("pci: MSI-X signal", "dev", m.cs.name, "vector", v, "err", err)
	}
}

func (m *MSIX) controlChanged() {
	ctl := m.cs.U16(m.cap + MSIXCtl)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.enabled = ctl&MSIXEnable != 0
	m.fmask = ctl&MSIXFuncMask != 0
	for v := range m.entries {
		m.syncLocked(v)
	}
}

// syncLocked pushes vector v's state to the platform and delivers a pending
// interrupt that has become deliverable.
func (m *MSIX) syncLocked(v int) {
	e := &m.entries[v]
	masked := m.maskedLocked(v)
	msg := platform.MSIMessage{Addr: e.addr, Data: e.data}
	// Each Update costs the VMM a routing-table resubmission and an irqfd
	// (de)assignment: skip the ones that change nothing. A masked vector's
	// message does not matter until it is unmasked.
	if masked != m.detached[v] || (!masked && msg != m.lastMsg[v]) {
		if err := m.vecs[v].Update(msg, masked); err != nil {
			slog.Warn("pci: MSI-X route update", "dev", m.cs.name, "vector", v, "err", err)
		}
		m.detached[v], m.lastMsg[v] = masked, msg
	}
	bit := uint64(1) << (v % 64)
	if !masked && m.pending[v/64]&bit != 0 {
		m.pending[v/64] &^= bit
		if err := m.vecs[v].EventFD().Signal(); err != nil {
			slog.Warn("pci: MSI-X signal", "dev", m.cs.name, "vector", v, "err", err)
		}
	}
}

// Table returns the bus device serving the table (offsets relative to the
// table's start).
func (m *MSIX) Table() *MSIXTable { return (*MSIXTable)(m) }

// PBA returns the bus device serving the pending-bit array.
func (m *MSIX) PBA() *MSIXPBA { return (*MSIXPBA)(m) }

// MSIXTable serves the MSI-X table: 16-byte entries of message address low,
// message address high, message data and vector control. Any access width
// works; 4 and 8 bytes are what drivers use.
type MSIXTable MSIX

func (t *MSIXTable) entryBytes(e *msixEntry) [16]byte {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], e.addr)
	binary.LittleEndian.PutUint32(b[8:], e.data)
	binary.LittleEndian.PutUint32(b[12:], e.ctl)
	return b
}

func (t *MSIXTable) Read(off uint64, data []byte) {
	m := (*MSIX)(t)
	m.mu.Lock()
	defer m.mu.Unlock()
	fill(data, 0xff)
	for v := off / MSIXEntrySize; v < uint64(len(m.entries)) && bus.Touches(off, len(data), v*MSIXEntrySize, MSIXEntrySize); v++ {
		b := t.entryBytes(&m.entries[v])
		bus.ReadRegs(b[:], v*MSIXEntrySize, off, data)
	}
}

func (t *MSIXTable) Write(off uint64, data []byte) {
	m := (*MSIX)(t)
	m.mu.Lock()
	defer m.mu.Unlock()
	for v := off / MSIXEntrySize; v < uint64(len(m.entries)); v++ {
		e := &m.entries[v]
		b := t.entryBytes(e)
		if !bus.WriteRegs(b[:], v*MSIXEntrySize, off, data) {
			break
		}
		e.addr = binary.LittleEndian.Uint64(b[0:])
		e.data = binary.LittleEndian.Uint32(b[8:])
		e.ctl = binary.LittleEndian.Uint32(b[12:]) & msixVecMasked // other bits reserved
		m.syncLocked(int(v))
	}
}

// MSIXPBA serves the pending-bit array (read-only; writes are ignored).
type MSIXPBA MSIX

func (p *MSIXPBA) Read(off uint64, data []byte) {
	m := (*MSIX)(p)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg.External {
		m.drainExternalLocked()
	}
	for i := range data {
		o := off + uint64(i)
		w := o / 8
		if o < off || w >= uint64(len(m.pending)) {
			data[i] = 0
			continue
		}
		data[i] = byte(m.pending[w] >> (8 * (o % 8)))
	}
}

func (p *MSIXPBA) Write(off uint64, data []byte) {}

// drainExternalLocked moves signals that arrived on detached external
// vectors into their pending bits.
func (m *MSIX) drainExternalLocked() {
	for v := range m.vecs {
		if !m.detached[v] {
			continue
		}
		n, err := m.vecs[v].EventFD().Read()
		if err == nil && n > 0 && m.enabled {
			m.pending[v/64] |= 1 << (v % 64)
		}
	}
}

// Reset returns the table to its power-on state (all vectors masked, MSI-X
// disabled, nothing pending), as on a function-level reset.
func (m *MSIX) Reset() {
	ctl := m.cs.U16(m.cap+MSIXCtl) &^ (MSIXEnable | MSIXFuncMask)
	m.cs.SetU16(m.cap+MSIXCtl, ctl)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.enabled, m.fmask = false, false
	for v := range m.entries {
		m.entries[v] = msixEntry{ctl: msixVecMasked}
		m.pending[v/64] = 0
		m.syncLocked(v)
	}
}

// Close frees the vectors.
func (m *MSIX) Close() error {
	var first error
	for _, v := range m.vecs {
		if v != nil {
			if err := v.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}
