package pci

import "godvm/devices/bus"

// Mux splits one BAR into sub-ranges served by different devices (registers,
// the MSI-X table, the PBA, doorbells). Offsets given to the sub-devices are
// relative to their range. Reads of holes return zeros; writes to holes are
// dropped. 64-byte wide writes reach sub-devices that implement bus.Wide64.
type Mux struct {
	b bus.Bus
}

// Add serves [off, off+size) of the BAR with dev.
func (m *Mux) Add(off, size uint64, name string, dev bus.Device) error {
	return m.b.Register(off, size, name, dev)
}

func (m *Mux) Read(off uint64, data []byte) {
	if !m.b.Read(off, data) {
		clear(data)
	}
}

func (m *Mux) Write(off uint64, data []byte) {
	m.b.Write(off, data)
}

// Write64B forwards a 64-byte write; accepted is false for holes.
func (m *Mux) Write64B(off uint64, data *[64]byte, kind bus.WideKind) bool {
	found, accepted := m.b.Write64B(off, data, kind)
	return found && accepted
}

// Wide64At reports whether the sub-device at off takes 64-byte writes
// itself (bus.Wide64Router).
func (m *Mux) Wide64At(off uint64) bool { return m.b.Wide64At(off) }

var _ bus.Wide64Router = (*Mux)(nil)
