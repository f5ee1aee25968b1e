package vmm

import (
	"bytes"
	"io"
	"testing"

	"godvm/vmm/layout"
	"godvm/vmm/legacy"
)

// BenchmarkSerialOut is the VMM side of one console character: bus lookup,
// the UART's THR write and the console write (to io.Discard here), as the
// exit dispatch does for every KVM_EXIT_IO of an outb to 0x3f8.
func BenchmarkSerialOut(b *testing.B) {
	m := newTestMachine(b, &bytes.Buffer{}, &irqRec{})
	// Replace the test machine's buffered console with one that discards.
	if err := m.pio.Unregister(layout.PortCOM1); err != nil {
		b.Fatal(err)
	}
	if err := m.pio.Register(layout.PortCOM1, 8, "serial", legacy.NewSerial(io.Discard, nil)); err != nil {
		b.Fatal(err)
	}
	data := []byte{'x'}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m.pioAccess(layout.PortCOM1, data, true)
	}
}

// BenchmarkUnknownPortIn is a read of a port nothing claims (0xff back,
// counted).
func BenchmarkUnknownPortIn(b *testing.B) {
	m := newTestMachine(b, &bytes.Buffer{}, &irqRec{})
	data := []byte{0}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !m.pioAccess(0x87, data, false) {
			m.stats.unknownPort(0x87, false)
		}
	}
}
