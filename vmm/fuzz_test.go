package vmm

import (
	"bytes"
	"testing"

	"godvm/devices/platform/fake"
)

// FuzzPorts drives the legacy devices and the PCI root with arbitrary port
// accesses, as a guest can: nothing may panic.
func FuzzPorts(f *testing.F) {
	f.Add([]byte{0xf8, 0x03, 1, 1, 'A', 0x70, 0x00, 1, 0, 0x0b, 0xf8, 0x0c, 4, 1, 0, 0, 0, 0x80})
	f.Add([]byte{0xfc, 0x0c, 4, 0, 0, 0, 0, 0, 0x04, 0x06, 2, 1, 0, 0x34})
	f.Fuzz(func(t *testing.T, ops []byte) {
		fp, _ := fake.New(nil)
		m := newTestMachine(t, &bytes.Buffer{}, fp)
		// Each op: port lo, port hi, size (1/2/4), write?, 4 data bytes.
		for len(ops) >= 8 {
			port := uint64(ops[0]) | uint64(ops[1]&0x0f)<<8
			size := []int{1, 2, 4, 1}[ops[2]&3]
			data := append([]byte(nil), ops[4:4+size]...)
			m.pioAccess(port, data, ops[3]&1 == 1)
			ops = ops[8:]
		}
	})
}
