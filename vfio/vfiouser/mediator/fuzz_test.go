package mediator

import (
	"bytes"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"godvm/devices/dsa"
	"godvm/devices/pci"
	"godvm/guestmem"
	"godvm/vfio"
)

// countHost is a vfiouser.Host that counts the interrupts a backend raises.
type countHost struct{ n atomic.Int64 }

func (h *countHost) Trigger(index, vector uint32) { h.n.Add(1) }

// fuzzGuest is one guest's mediated device driven without a socket: the
// backend calls the vfio-user server makes after its bounds checks.
type fuzzGuest struct {
	v    *VDev
	ram  []byte
	base uint64
	host *countHost
}

const fuzzMem = 1 << 20

func newFuzzGuest(t *testing.T, v *VDev, base uint64) *fuzzGuest {
	g := &fuzzGuest{v: v, ram: make([]byte, fuzzMem), base: base, host: &countHost{}}
	mem, err := guestmem.FromBytes(guestmem.NewRegion(base, g.ram, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	v.Backend().Attach(g.host)
	v.Backend().SetMemory(mem)
	return g
}

// write is a guest's region write as the server passes it on: offsets and
// sizes within the region (RegionInfo), else refused before the backend.
func (g *fuzzGuest) write(region uint32, off uint64, p []byte) {
	ri, err := g.v.Backend().RegionInfo(region)
	if err != nil || !ri.Writable() || off+uint64(len(p)) > ri.Size || off+uint64(len(p)) < off {
		return
	}
	g.v.Backend().WriteRegion(region, off, p)
}

func (g *fuzzGuest) read(region uint32, off uint64, p []byte) {
	ri, err := g.v.Backend().RegionInfo(region)
	if err != nil || !ri.Readable() || off+uint64(len(p)) > ri.Size {
		return
	}
	g.v.Backend().ReadRegion(region, off, p)
}

func (g *fuzzGuest) w(region uint32, off, v uint64, n int) {
	g.write(region, off, binary.LittleEndian.AppendUint64(nil, v)[:n])
}

func (g *fuzzGuest) r32(region uint32, off uint64) uint32 {
	var b [4]byte
	g.read(region, off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// enable sets up WQ 0 as a dedicated kernel WQ (16 entries) in group 0.
func (g *fuzzGuest) enable() {
	g.w(vfio.PCIConfigRegionIndex, pci.RegCommand, pci.CmdMemory|pci.CmdBusMaster, 2)
	const dedicated, prio, priv = 1, 10 << 4, 1 << 29
	for i, v := range [4]uint32{16, 0, dedicated | prio | priv, 21 | 5<<5} {
		g.w(0, dsa.WQCFGOffset+uint64(4*i), uint64(v), 4)
	}
	g.w(0, dsa.GRPCFGOffset, 1, 8)
	g.w(0, dsa.GRPCFGOffset+32, 1, 8)
	g.w(0, dsa.GRPCFGOffset+40, 1|1<<3|64<<20, 8)
	g.w(0, dsa.RegCmd, dsa.CmdEnableDevice<<20, 4)
	g.w(0, dsa.RegCmd, dsa.CmdEnableWQ<<20, 4)
}

// regs is the guest-visible register file: configuration space and BAR0's
// registers, GRPCFG, WQCFG and MSI-X table.
func (g *fuzzGuest) regs() []byte {
	var out []byte
	for off := uint64(0); off < 0x100; off += 4 {
		out = binary.LittleEndian.AppendUint32(out, g.r32(vfio.PCIConfigRegionIndex, off))
	}
	for off := uint64(0); off < 0xc00; off += 4 {
		out = binary.LittleEndian.AppendUint32(out, g.r32(0, off))
	}
	for off := uint64(dsa.MSIXTableOffset); off < dsa.MSIXTableOffset+0x40; off += 4 {
		out = binary.LittleEndian.AppendUint32(out, g.r32(0, off))
	}
	return out
}

// copyOK runs one 512-byte memmove on WQ 0 and reports success.
func (g *fuzzGuest) copyOK(seed byte) bool {
	for i := 0; i < 512; i++ {
		g.ram[0x1000+i] = byte(i) ^ seed
	}
	atomic.StoreUint32((*uint32)(unsafeU32(g.ram[0x3000:])), 0)
	d := memmove(g.base+0x1000, g.base+0x2000, g.base+0x3000, 512)
	g.write(2, dsa.PortalPage, d[:])
	// Generous: fuzz workers share the CPUs with everything else.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if st := byte(atomic.LoadUint32((*uint32)(unsafeU32(g.ram[0x3000:])))); st != 0 {
			// The WQ's occupancy drops just after the record is written:
			// wait for it too, so the register file is at rest.
			for g.r32(0, dsa.WQCFGOffset+24)&0xffff != 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Microsecond)
			}
			return st == dsa.StatusSuccess && bytes.Equal(g.ram[0x1000:0x1200], g.ram[0x2000:0x2200])
		}
		time.Sleep(50 * time.Microsecond)
	}
	return false
}

// FuzzMediatedRegisterFile: guest A writes anything to its mediated
// device (configuration space, BAR0 registers and commands, portals, the
// DMWr region, resets, descriptors aimed anywhere, including guest B's
// addresses); the server does not panic, and guest B's register file,
// memory and interrupts are exactly as before, and its device still works.
func FuzzMediatedRegisterFile(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := New(dsa.Config{WQs: 4, WQSize: 64, Groups: 2, Engines: 2, Version: 0x100}, false, quiet)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		va, err := m.Add(VDevSpec{Socket: "a", WQs: 2, WQSize: 32})
		if err != nil {
			t.Fatal(err)
		}
		vb, err := m.Add(VDevSpec{Socket: "b", WQs: 2, WQSize: 32})
		if err != nil {
			t.Fatal(err)
		}
		a, b := newFuzzGuest(t, va, 0), newFuzzGuest(t, vb, 16<<20)
		b.enable()
		if !b.copyOK(1) {
			t.Fatal("guest B's device does not work before the fuzzing")
		}
		regsB := b.regs()
		memB := append([]byte(nil), b.ram...)
		irqB := b.host.n.Load()

		fuzzOps(a, data)

		// Quiesce A (its engines finish what they run) before comparing.
		va.Backend().SetMemory(nil)
		if got := b.regs(); !bytes.Equal(got, regsB) {
			for i := range got {
				if got[i] != regsB[i] {
					t.Fatalf("guest A's writes changed guest B's register file at byte %#x of the dump", i)
				}
			}
		}
		if !bytes.Equal(b.ram, memB) {
			t.Fatal("guest A's writes changed guest B's memory")
		}
		if n := b.host.n.Load(); n != irqB {
			t.Fatalf("guest B got %d interrupts from guest A's activity", n-irqB)
		}
		if !b.copyOK(2) {
			t.Fatal("guest B's device stopped working after guest A's writes")
		}
	})
}

// fuzzOps interprets data as guest A's accesses: an op byte, a 16-bit
// offset, a size selector, then the value bytes.
func fuzzOps(a *fuzzGuest, data []byte) {
	take := func(n int) []byte {
		b := make([]byte, n)
		k := copy(b, data)
		data = data[k:]
		return b
	}
	sizes := [4]int{1, 2, 4, 8}
	for ops := 0; len(data) >= 4 && ops < 64; ops++ {
		op, off, sz := data[0]%8, uint64(binary.LittleEndian.Uint16(data[1:])), sizes[data[3]%4]
		data = data[4:]
		switch op {
		case 0: // configuration space
			a.write(vfio.PCIConfigRegionIndex, off%pci.ConfigSize, take(sz))
		case 1, 2: // BAR0: registers, commands, GRPCFG/WQCFG, MSI-X table
			a.write(0, off%0x1000, take(sz))
			if op == 2 {
				a.write(0, off, take(sz))
			}
		case 3: // a descriptor into a portal (trapped MOVDIR64B)
			a.write(2, off&^63, take(64))
		case 4: // ENQCMD(S) through the DMWr region
			a.write(dmwrRegion, (off<<1)&^63, take(64))
		case 5:
			a.enable()
		case 6:
			if off&1 == 0 {
				a.v.Backend().Reset()
			} else {
				a.v.Backend().ClientGone()
			}
		case 7:
			var p [8]byte
			a.read(0, off&^7, p[:])
		}
	}
}

func unsafeU32(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }

const dmwrRegion = vfio.PCINumRegions

// fuzzSeeds are the interesting starts: descriptors aimed at guest B's
// range, every device and WQ command, configuration changes while
// enabled, resets, MSI-X table writes. (The same inputs are committed
// under testdata/fuzz/FuzzMediatedRegisterFile.)
func fuzzSeeds() [][]byte {
	op := func(code byte, off uint16, sz byte, val []byte) []byte {
		return append([]byte{code, byte(off), byte(off >> 8), sz}, val...)
	}
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	enable := op(5, 0, 0, nil)
	const bBase = 16 << 20
	desc := func(src, dst, cr uint64) []byte { d := memmove(src, dst, cr, 4096); return d[:] }
	cmd := func(c uint32, operand uint32) []byte { return op(1, dsa.RegCmd, 2, u32(c<<20|operand)) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return [][]byte{
		cat(enable, op(3, dsa.PortalPage, 0, desc(bBase+0x1000, 0x2000, 0x3000))),               // read B
		cat(enable, op(3, dsa.PortalPage, 0, desc(0x1000, bBase+0x2000, 0x3000))),               // write B
		cat(enable, op(3, dsa.PortalPage, 0, desc(0x1000, 0x2000, bBase+0x3000))),               // CR in B
		cat(enable, op(4, dsa.PortalPage/2, 0, desc(bBase+0x1000, bBase+0x2000, bBase+0x3000))), // ENQCMD
		cat(enable, cmd(dsa.CmdResetDevice, 0)),
		cat(enable, cmd(dsa.CmdAbortAll, 0), cmd(dsa.CmdDrainAll, 0)),
		cat(enable, cmd(dsa.CmdDisableWQ, 1), cmd(dsa.CmdResetWQ, 3), cmd(dsa.CmdDisableDevice, 0)),
		cat(enable, op(0, pci.RegCommand, 1, []byte{0, 0})), // bus mastering off: A halts
		cat(enable, op(1, dsa.GRPCFGOffset+32, 3, bytes.Repeat([]byte{0xff}, 8)), op(1, dsa.WQCFGOffset, 2, u32(0xffff))),
		cat(op(2, dsa.MSIXTableOffset, 3, bytes.Repeat([]byte{0xff}, 16)), enable, op(6, 0, 0, nil), enable, op(6, 1, 0, nil)),
		cat(enable, op(1, dsa.RegGenCtrl, 2, u32(3)), op(1, dsa.RegSWErr, 2, u32(3)), op(1, dsa.RegIntCause, 2, u32(0xffffffff))),
	}
}
