package pci

import (
	"encoding/binary"
	"io"
	"log/slog"
	"testing"

	"godvm/devices/platform/fake"
)

// FuzzConfigWrites drives a device's configuration space, MSI-X table and
// PBA with arbitrary accesses: nothing may panic, read-only fields stay
// put, and every BAR the model calls mapped is really on the bus there.
// Input: records of 8 bytes: kind, width, offset u16, value u32.
func FuzzConfigWrites(f *testing.F) {
	rec := func(kind, width byte, off uint16, v uint32) []byte {
		b := []byte{kind, width, 0, 0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint16(b[2:], off)
		binary.LittleEndian.PutUint32(b[4:], v)
		return b
	}
	cat := func(rs ...[]byte) []byte {
		var out []byte
		for _, r := range rs {
			out = append(out, r...)
		}
		return out
	}
	f.Add(cat(rec(0, 4, 0x10, 0xffffffff), rec(0, 4, 0x14, 0xffffffff), rec(0, 2, 4, 2)))
	f.Add(cat(rec(0, 4, 0x10, 0xc0000000), rec(0, 2, 4, 6), rec(0, 2, 0x10, 0xc010)))
	f.Add(cat(rec(0, 2, 0x52, 0x8000), rec(1, 4, 0, 0xfee00000), rec(1, 4, 12, 0), rec(2, 4, 0, 0)))
	f.Add(cat(rec(0, 1, 0xfff, 0xff), rec(0, 4, 0xffe, 1), rec(1, 8, 0xfff8, 1)))
	// Guest-triggered warnings (overlapping BARs) would flood the fuzzer.
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.Fuzz(func(t *testing.T, data []byte) {
		fp, p := fake.New(nil)
		cs := NewConfigSpace(p, "fuzz", Header{VendorID: 0x8086, DeviceID: 0x0b25, Class: 0x088000})
		var mux Mux
		if err := cs.SetBAR(0, BAR{Type: BARMem64, Size: 0x10000, Dev: &mux}); err != nil {
			t.Fatal(err)
		}
		if err := cs.SetBAR(2, BAR{Type: BARMem32, Size: 0x1000, Dev: &regDev{}}); err != nil {
			t.Fatal(err)
		}
		if err := cs.SetBAR(3, BAR{Type: BARIO, Size: 0x20, Dev: &regDev{}}); err != nil {
			t.Fatal(err)
		}
		cs.AddPCIeCapability(PCIeRCiEP, DevCapFLR)
		cs.AddPASIDCapability(20, PASIDPriv)
		m, err := NewMSIX(fp, cs, MSIXConfig{Vectors: 9, TableBAR: 0, TableOffset: 0x2000, PBABAR: 0, PBAOffset: 0x3000})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		for ; len(data) >= 8; data = data[8:] {
			kind, width := data[0]%4, []int{1, 2, 4, 8}[data[1]%4]
			off := binary.LittleEndian.Uint16(data[2:])
			val := binary.LittleEndian.AppendUint64(nil, uint64(binary.LittleEndian.Uint32(data[4:]))*0x100000001)
			buf := make([]byte, width)
			switch kind {
			case 0:
				cs.ConfigWrite(uint32(off), val[:width])
				cs.ConfigRead(uint32(off), buf)
			case 1:
				m.Table().Write(uint64(off), val[:width])
				m.Table().Read(uint64(off), buf)
			case 2:
				m.PBA().Read(uint64(off), buf)
				m.Notify(int(off % 16))
			case 3:
				mux.Write(uint64(off), val[:width])
				mux.Read(uint64(off), buf)
			}
		}
		if cs.U32(0) != 0x0b258086 || cs.U8(RegClass) != 0x08 {
			t.Fatal("identity changed")
		}
		if cs.U32(RegBAR0)&0xf != 4 || cs.U32(RegBAR0+8)&0xf != 0 || cs.U32(RegBAR0+12)&3 != 1 {
			t.Fatalf("BAR flag bits changed: %#x %#x %#x", cs.U32(RegBAR0), cs.U32(RegBAR0+8), cs.U32(RegBAR0+12))
		}
		if cs.U16(m.CapOffset()+MSIXCtl)&0x7ff != 8 {
			t.Fatal("MSI-X table size changed")
		}
		for _, i := range []int{0, 2, 3} {
			addr, mapped := cs.BARAddress(i)
			if !mapped {
				continue
			}
			b := p.MMIO
			if i == 3 {
				b = p.PIO
			}
			if _, o, ok := b.Find(addr, 1); !ok || o != 0 {
				t.Fatalf("BAR%d mapped at %#x but not on the bus", i, addr)
			}
		}
		cs.Unmap()
		if len(p.MMIO.Ranges())+len(p.PIO.Ranges()) != 0 {
			t.Fatal("Unmap left registrations")
		}
	})
}
