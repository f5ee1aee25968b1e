package mptable

import (
	"bytes"
	"encoding/binary"
	"testing"

	"godvm/vmm/layout"
)

func sum(b []byte) uint8 {
	var s uint8
	for _, x := range b {
		s += x
	}
	return s
}

func TestMPTable(t *testing.T) {
	le := binary.LittleEndian
	for _, ncpu := range []int{1, 2, 8, layout.MaxVCPUs} {
		b, err := Bytes(layout.MPTable, ncpu)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != Size(ncpu) {
			t.Fatalf("%d CPUs: %d bytes, Size says %d", ncpu, len(b), Size(ncpu))
		}
		fp := b[:16]
		if string(fp[:4]) != "_MP_" || sum(fp) != 0 || fp[8] != 1 || fp[9] != 4 || fp[11] != 0 {
			t.Fatalf("floating pointer % x", fp)
		}
		ptr := le.Uint32(fp[4:])
		if uint64(ptr) != layout.MPTable+16 {
			t.Fatalf("config table pointer %#x", ptr)
		}
		ct := b[ptr-layout.MPTable:]
		length := le.Uint16(ct[4:])
		if string(ct[:4]) != "PCMP" || int(length) != len(ct) || sum(ct[:length]) != 0 || le.Uint32(ct[36:]) != layout.LAPICBase {
			t.Fatalf("config header % x", ct[:44])
		}
		// Walk the entries.
		off, cpus, bsp, intsrc, lint := 44, 0, 0, map[uint8]uint8{}, 0
		var ioapicID uint8
		for i := 0; i < int(le.Uint16(ct[34:])); i++ {
			switch ct[off] {
			case 0:
				if ct[off+1] != uint8(cpus) || ct[off+3]&1 == 0 {
					t.Errorf("processor entry % x", ct[off:off+20])
				}
				if ct[off+3]&2 != 0 {
					bsp++
				}
				cpus++
				off += 20
			case 1:
				if !bytes.Equal(ct[off+2:off+8], []byte("ISA   ")) {
					t.Errorf("bus % x", ct[off:off+8])
				}
				off += 8
			case 2:
				ioapicID = ct[off+1]
				if le.Uint32(ct[off+4:]) != layout.IOAPICBase || ct[off+3] != 1 {
					t.Errorf("ioapic % x", ct[off:off+8])
				}
				off += 8
			case 3:
				if ct[off+6] != ioapicID {
					t.Errorf("intsrc to ioapic %d", ct[off+6])
				}
				intsrc[ct[off+5]] = ct[off+7]
				off += 8
			case 4:
				lint++
				off += 8
			default:
				t.Fatalf("unknown entry type %d at %d", ct[off], off)
			}
		}
		if off != int(length) {
			t.Errorf("entries end at %d, length %d", off, length)
		}
		if cpus != ncpu || bsp != 1 || lint != 2 {
			t.Errorf("cpus %d bsp %d lint %d", cpus, bsp, lint)
		}
		if int(ioapicID) < ncpu {
			t.Errorf("IOAPIC ID %d collides with a CPU", ioapicID)
		}
		if intsrc[0] != 2 || intsrc[4] != 4 || intsrc[9] != 9 || len(intsrc) != 15 {
			t.Errorf("ISA irq routing %v", intsrc)
		}
		if _, ok := intsrc[2]; ok {
			t.Error("cascade IRQ 2 routed")
		}
	}
	if _, err := Bytes(layout.MPTable, 0); err == nil {
		t.Error("0 CPUs accepted")
	}
	if _, err := Bytes(layout.MPTable, 255); err == nil {
		t.Error("255 CPUs accepted")
	}
}
