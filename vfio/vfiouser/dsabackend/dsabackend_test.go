package dsabackend

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"godvm/devices/dsa"
	"godvm/devices/pci"
	"godvm/devices/platform"
	"godvm/guestmem"
	"godvm/vfio"
	"godvm/vfio/vfiouser"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type rig struct {
	t   testing.TB
	c   *vfiouser.Client
	mem *guestmem.Memory
	ev  []*platform.EventFD
}

func newRig(t testing.TB, mapped bool) *rig {
	cfg := dsa.Config{WQs: 2, WQSize: 32, Groups: 1, Engines: 1, Version: 0x100}
	b, err := New(cfg, mapped, quiet)
	if err != nil {
		t.Fatal(err)
	}
	a, s, err := vfiouser.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	srv := vfiouser.NewServer(b, quiet)
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(s) }()
	c, err := vfiouser.NewClient(a, "dsa", vfiouser.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := guestmem.New([]guestmem.Spec{{GPA: 0, Size: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if err := vfio.MapAllRAM(c, mem); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, c: c, mem: mem}
	for i := 0; i < cfg.Vectors(); i++ {
		ev, _ := platform.NewEventFD()
		r.ev = append(r.ev, ev)
	}
	fds := make([]int, len(r.ev))
	for i, e := range r.ev {
		fds[i] = e.Fd()
	}
	if err := c.SetIRQs(vfio.PCIMSIXIRQIndex, 0, fds); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		<-done
		b.Close()
		mem.Close()
		for _, e := range r.ev {
			e.Close()
		}
	})
	return r
}

func (r *rig) r32(region uint32, off uint64) uint32 {
	var b [4]byte
	if err := r.c.ReadRegion(region, off, b[:]); err != nil {
		r.t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (r *rig) w(region uint32, off uint64, v uint64, n int) {
	b := binary.LittleEndian.AppendUint64(nil, v)[:n]
	if err := r.c.WriteRegion(region, off, b); err != nil {
		r.t.Fatal(err)
	}
}

// enableDWQ does what the idxd driver does for a dedicated kernel WQ 0.
func (r *rig) enableDWQ() {
	r.w(vfio.PCIConfigRegionIndex, pci.RegCommand, pci.CmdMemory|pci.CmdBusMaster, 2)
	const dedicated, prio, priv = 1, 10 << 4, 1 << 29
	shadow := [8]uint32{16, 0, dedicated | prio | priv, 21 | 5<<5}
	for i, v := range shadow {
		r.w(0, dsa.WQCFGOffset+uint64(4*i), uint64(v|r.r32(0, dsa.WQCFGOffset+uint64(4*i))), 4)
	}
	r.w(0, dsa.GRPCFGOffset, 1, 8)
	r.w(0, dsa.GRPCFGOffset+32, 1, 8)
	r.w(0, dsa.GRPCFGOffset+40, 1|1<<3|64<<20, 8)
	for _, c := range []uint32{dsa.CmdEnableDevice, dsa.CmdEnableWQ} {
		r.w(0, dsa.RegCmd, uint64(1<<31|c<<20), 4)
		if n, err := r.ev[0].Wait(5000); n == 0 || err != nil {
			r.t.Fatalf("command %d: no completion interrupt on the client's eventfd (%v)", c, err)
		}
		if st := r.r32(0, dsa.RegCmdSts); st != 0 {
			r.t.Fatalf("command %d: CMDSTS %#x", c, st)
		}
	}
}

func memmove(src, dst, cr uint64, n uint32) [64]byte {
	var d [64]byte
	binary.LittleEndian.PutUint32(d[4:], dsa.FlagCRAV|dsa.FlagRCR|uint32(dsa.OpMemMove)<<24)
	binary.LittleEndian.PutUint64(d[8:], cr)
	binary.LittleEndian.PutUint64(d[16:], src)
	binary.LittleEndian.PutUint64(d[24:], dst)
	binary.LittleEndian.PutUint32(d[32:], n)
	return d
}

func (r *rig) waitStatus(addr uint64) byte {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if v, _ := r.mem.ReadU8(addr); v != 0 {
			return v
		}
		time.Sleep(100 * time.Microsecond)
	}
	r.t.Fatalf("no completion record at %#x", addr)
	return 0
}

func TestDSAOverVfioUser(t *testing.T) {
	r := newRig(t, false)
	if id := r.r32(vfio.PCIConfigRegionIndex, 0); id != dsa.DeviceDSA<<16|dsa.VendorIntel {
		t.Fatalf("config ID %#x", id)
	}
	if v := r.r32(0, dsa.RegVersion); v != 0x100 {
		t.Fatalf("VERSION %#x", v)
	}
	ri, err := r.c.RegionInfo(2)
	if err != nil || ri.Size != 0x8000 || ri.Mappable() {
		t.Fatalf("portal BAR %+v %v", ri, err)
	}
	r.enableDWQ()
	payload := bytes.Repeat([]byte("dsa!"), 1024)
	r.mem.WriteAt(payload, 0x10000)
	d := memmove(0x10000, 0x20000, 0x3000, 4096)
	if err := r.c.WriteRegion(2, dsa.PortalPage, d[:]); err != nil {
		t.Fatal(err)
	}
	if st := r.waitStatus(0x3000); st != dsa.StatusSuccess {
		t.Fatalf("status %#x", st)
	}
	got := make([]byte, 4096)
	r.mem.ReadAt(got, 0x20000)
	if !bytes.Equal(got, payload) {
		t.Fatal("data not copied")
	}
}

func TestDSAMappedPortal(t *testing.T) {
	r := newRig(t, true)
	ri, err := r.c.RegionInfo(2)
	if err != nil || !ri.Mappable() || len(ri.Areas) != 1 {
		t.Fatalf("portal BAR %+v %v", ri, err)
	}
	bar, err := r.c.MapRegion(2, 0, ri.Size)
	if err != nil {
		t.Fatal(err)
	}
	defer r.c.UnmapRegion(bar)
	r.enableDWQ()
	r.mem.WriteAt([]byte("mapped portal page"), 0x10000)
	d := memmove(0x10000, 0x20000, 0x3000, 18)
	copy(bar[dsa.PortalPage:], d[:]) // the guest's MOVDIR64B into the memory slot
	if st := r.waitStatus(0x3000); st != dsa.StatusSuccess {
		t.Fatalf("status %#x", st)
	}
	got := make([]byte, 18)
	r.mem.ReadAt(got, 0x20000)
	if string(got) != "mapped portal page" {
		t.Fatalf("copied %q", got)
	}
}

// benchPortal measures descriptors/s through the DSA over vfio-user: 8
// descriptors (64-byte memmove, completion record) per round, then wait for
// all 8 records, keeping the dedicated WQ (16 entries) from overflowing.
func benchPortal(b *testing.B, mapped bool) {
	r := newRig(b, mapped)
	var bar []byte
	if mapped {
		var err error
		if bar, err = r.c.MapRegion(2, 0, 0x8000); err != nil {
			b.Fatal(err)
		}
		defer r.c.UnmapRegion(bar)
	}
	r.enableDWQ()
	const batch = 8
	slot := 0
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		for k := 0; k < batch; k++ {
			cr := uint64(0x3000 + 64*k)
			r.mem.WriteU8(cr, 0)
			d := memmove(0x10000, 0x20000+uint64(64*k), cr, 64)
			if mapped {
				// What the guest's MOVDIR64B does: a 64-byte store into the
				// slot (Linux advances its portal offset by 64 each time).
				copy(bar[dsa.PortalPage+64*slot:], d[:])
				slot = (slot + 1) % 64
			} else if err := r.c.WriteRegion(2, dsa.PortalPage, d[:]); err != nil {
				b.Fatal(err)
			}
		}
		for k := 0; k < batch; k++ {
			cr := uint64(0x3000 + 64*k)
			for {
				if v, _ := r.mem.ReadU8(cr); v != 0 {
					if v != dsa.StatusSuccess {
						b.Fatalf("status %#x", v)
					}
					break
				}
				runtime.Gosched()
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "desc/s")
}

func BenchmarkDSAPortalTrapped(b *testing.B) { benchPortal(b, false) }
func BenchmarkDSAPortalMapped(b *testing.B)  { benchPortal(b, true) }

// TestFLRKeepsInterrupts: a function-level reset through the configuration
// region resets the model's MSI-X, which the backend re-arms, so command
// completions still reach the client's eventfd.
func TestFLRKeepsInterrupts(t *testing.T) {
	r := newRig(t, false)
	// Find the PCIe capability and set Initiate FLR (DevCtl bit 15).
	off := uint64(r.r32(vfio.PCIConfigRegionIndex, 0x34) & 0xfc)
	for off != 0 && r.r32(vfio.PCIConfigRegionIndex, off)&0xff != 0x10 {
		off = uint64(r.r32(vfio.PCIConfigRegionIndex, off)>>8) & 0xfc
	}
	if off == 0 {
		t.Fatal("no PCIe capability")
	}
	r.w(vfio.PCIConfigRegionIndex, off+8, 0x8000, 2)
	r.enableDWQ() // fails unless the completion interrupts still arrive
}

// TestRemapKeepsState: a DMA mapping added and removed while the device
// is enabled switches the model's memory view without touching its state
// (it used to rebuild the device), and descriptors go on against the new
// view; the one aimed at the removed mapping faults.
func TestRemapKeepsState(t *testing.T) {
	r := newRig(t, false)
	r.enableDWQ()
	extra, err := guestmem.New([]guestmem.Spec{{GPA: 16 << 20, Size: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	reg := extra.Regions()[0]
	if err := r.c.DMAMap(reg); err != nil {
		t.Fatal(err)
	}
	if st := r.r32(0, dsa.RegGenSts); st&3 != dsa.StateEnabled {
		t.Fatalf("GENSTS %#x after DMA_MAP: device lost its state", st)
	}
	extra.WriteAt(bytes.Repeat([]byte{0x5a}, 512), 16<<20)
	d := memmove(16<<20, 0x1000, 0x2000, 512)
	r.c.WriteRegion(2, 0, d[:])
	if st := r.waitStatus(0x2000); st != dsa.StatusSuccess {
		t.Fatalf("status %#x copying from the new mapping", st)
	}
	got := make([]byte, 512)
	r.mem.ReadAt(got, 0x1000)
	if !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, 512)) {
		t.Fatal("copy from the new mapping wrong")
	}
	if err := r.c.DMAUnmap(reg); err != nil {
		t.Fatal(err)
	}
	d = memmove(16<<20, 0x1000, 0x3000, 512)
	r.c.WriteRegion(2, 0, d[:])
	if st := r.waitStatus(0x3000); st&0x3f != dsa.StatusPageFault {
		t.Fatalf("status %#x reading an unmapped range, want a page fault", st)
	}
	if st := r.r32(0, dsa.RegGenSts); st&3 != dsa.StateEnabled {
		t.Fatalf("GENSTS %#x after DMA_UNMAP", st)
	}
}
