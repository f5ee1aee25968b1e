package dsa

import (
	"encoding/binary"
	"testing"

	"godvm/addr"
	"godvm/devices/bus"
	"godvm/devices/pci"
	"godvm/devices/platform/fake"
)

func TestPortalDisabledAndDedicated(t *testing.T) {
	r := newRig(t, DefaultConfig())
	p := r.d.Portals()
	d := newDesc(OpNOOP, rcr, crA, 0, 0, 0)
	// Device disabled: posted write ignored, ENQCMD retried.
	if p.Write64B(PortalPage, d, bus.MOVDIR64B) || p.Write64B(PortalPage, d, bus.ENQCMDS) {
		t.Fatal("disabled WQ accepted a descriptor")
	}
	r.setupDWQ(4)
	r.drain(0)
	if r.ram[crA] != 0 {
		t.Fatal("descriptor to a disabled WQ was executed")
	}
	// A dedicated WQ answers Retry to ENQCMD/ENQCMDS.
	if p.Write64B(PortalPage, d, bus.ENQCMD) || p.Write64B(0, d, bus.ENQCMDS) {
		t.Fatal("DWQ accepted a DMWr")
	}
	// Any 64-byte slot of any of the 4 pages works; bits 5:0 must be zero.
	for _, off := range []uint64{0, 64, PortalPage + 4032, 2*PortalPage + 128} {
		clear(r.ram[crA : crA+32])
		if !p.Write64B(off, d, bus.MOVDIR64B) {
			t.Fatalf("slot %#x refused", off)
		}
		r.drain(0)
		if r.ram[crA] != StatusSuccess {
			t.Fatalf("slot %#x: status %#x", off, r.ram[crA])
		}
	}
	if p.Write64B(PortalPage+8, d, bus.MOVDIR64B) {
		t.Fatal("misaligned portal address accepted")
	}
	// WQ 7 exists but is disabled; WQ 8 is beyond the BAR's WQs.
	if p.Write64B(7*PortalStride, d, bus.MOVDIR64B) || p.Write64B(8*PortalStride, d, bus.MOVDIR64B) {
		t.Fatal("write to a disabled/nonexistent WQ accepted")
	}
	// Plain writes: 64 bytes is a posted 64-byte write (= MOVDIR64B); smaller
	// writes are ignored; reads return zeros.
	clear(r.ram[crA : crA+32])
	p.Write(PortalPage, d[:])
	r.drain(0)
	if r.ram[crA] != StatusSuccess {
		t.Fatal("plain 64-byte write not submitted")
	}
	clear(r.ram[crA : crA+32])
	p.Write(PortalPage, d[:8])
	p.Write(PortalPage, d[:32])
	r.drain(0)
	if r.ram[crA] != 0 {
		t.Fatal("partial portal write submitted")
	}
	var b [8]byte
	b[0] = 0xaa
	p.Read(PortalPage, b[:])
	if b != [8]byte{} {
		t.Fatal("portal read returned data")
	}
	// IMS portal: no IMS entries, so a completion interrupt handle is invalid.
	clear(r.ram[crA : crA+32])
	di := newDesc(OpNOOP, rcr|FlagRCI, crA, 0, 0, 0)
	put16(di, 36, 1)
	p.Write64B(PortalUnlimitedIMS*PortalPage, di, bus.MOVDIR64B)
	r.drain(0)
	if r.ram[crA] != StatusIntHandle {
		t.Fatalf("IMS portal RCI: %#x", r.ram[crA])
	}
}

func TestPortalDWQFull(t *testing.T) {
	r := newRig(t, DefaultConfig())
	r.w32(RegGenCtrl, 3)
	r.setupDWQ(4)
	w := r.d.wqs[0]
	// Pretend 4 descriptors are outstanding (engines are too quick to fill a
	// WQ deterministically).
	w.mu.Lock()
	w.fakeOccupancy(4)
	w.mu.Unlock()
	if v := r.r32(r.wqcfgOff(0) + 24); v&0xffff != 4 {
		t.Fatalf("occupancy field %#x", v)
	}
	if r.submit(0, newDesc(OpNOOP, rcr, crA, 0, 0, 0)) {
		t.Fatal("full DWQ accepted a descriptor")
	}
	if q := swerr(r); q[0]&1 == 0 || q[0]>>8&0xff != swerrWQFull || q[0]>>16&0xff != 0 {
		t.Fatalf("SWERROR % x, want 0x53 for WQ 0", q)
	}
	w.mu.Lock()
	w.fakeOccupancy(3)
	w.mu.Unlock()
	if !r.submit(0, newDesc(OpNOOP, rcr, crA, 0, 0, 0)) {
		t.Fatal("WQ with room refused")
	}
	w.mu.Lock()
	w.unfakeOccupancy() // occupancy -= 3
	w.cond.Broadcast()
	w.mu.Unlock()
	r.drain(0)
}

func TestPortalSharedWQ(t *testing.T) {
	r := newRig(t, DefaultConfig())
	r.d.SetPASIDEnabled(true)
	const shared = 10<<wqPrioShift | wqPASIDEn | 3<<wqPASIDShift
	r.configWQ(1, 8, 2, shared, 21, 5)
	r.configGroup(0, 2, 1)
	if st := r.cmd(CmdEnableDevice, 0); st != 0 {
		t.Fatal(st)
	}
	if st := r.cmd(CmdEnableWQ, 1); st != 0 {
		t.Fatalf("enable SWQ %#x", st)
	}
	p := r.d.Portals()
	d := newDesc(OpNOOP, rcr, crA, 0, 0, 0)
	if p.Write64B(PortalStride+PortalPage, d, bus.MOVDIR64B) {
		t.Fatal("SWQ accepted a posted write")
	}
	if !p.Write64B(PortalStride+PortalPage, d, bus.ENQCMDS) {
		t.Fatal("SWQ refused ENQCMDS")
	}
	r.drain(1)
	if r.ram[crA] != StatusSuccess {
		t.Fatal("ENQCMDS descriptor not executed")
	}
	w := r.d.wqs[1]
	w.mu.Lock()
	w.fakeOccupancy(2) // at the threshold
	w.mu.Unlock()
	if p.Write64B(PortalStride+PortalPage, d, bus.ENQCMD) {
		t.Fatal("limited portal accepted at the threshold")
	}
	if !p.Write64B(PortalStride+PortalUnlimitedMSIX*PortalPage, d, bus.ENQCMDS) {
		t.Fatal("unlimited portal refused below the WQ size")
	}
	w.mu.Lock()
	w.fakeOccupancy(8)
	w.mu.Unlock()
	if p.Write64B(PortalStride, d, bus.ENQCMDS) {
		t.Fatal("unlimited portal accepted a full WQ")
	}
	if swerr(r)[0]&1 != 0 {
		t.Fatal("ENQCMD retry must not log a software error")
	}
	w.mu.Lock()
	w.unfakeOccupancy() // occupancy -= 8
	w.cond.Broadcast()
	w.mu.Unlock()
	r.drain(1)
	// Abort PASID 3 and Drain PASID leave the WQ usable.
	if st := r.cmd(CmdAbortPASID, 3); st != 0 {
		t.Fatal(st)
	}
	clear(r.ram[crA : crA+32])
	if !p.Write64B(PortalStride+PortalPage, d, bus.ENQCMDS) {
		t.Fatal("refused after Abort PASID")
	}
	if st := r.cmd(CmdDrainPASID, 3); st != 0 {
		t.Fatal(st)
	}
	if r.ram[crA] != StatusSuccess {
		t.Fatalf("descriptor after Abort PASID: %#x", r.ram[crA])
	}
}

func TestBusMasterClearedHalts(t *testing.T) {
	r := newRig(t, DefaultConfig())
	r.w32(RegGenCtrl, 3)
	r.setupDWQ(4)
	r.intr.reset()
	r.d.SetBusMaster(false)
	if s := r.r32(RegGenSts); s&3 != StateHalt {
		t.Fatalf("GENSTS %#x", s)
	}
	if q := swerr(r); q[0]>>8&0xff != swerrPCIConfigChanged {
		t.Fatalf("SWERROR % x", q)
	}
	if r.r32(RegIntCause)&IntHalt == 0 || r.intr.count(0) == 0 {
		t.Fatal("no halt interrupt")
	}
	if r.submit(0, newDesc(OpNOOP, rcr, crA, 0, 0, 0)) {
		t.Fatal("halted device accepted a descriptor")
	}
	// Recovery: Reset Device.
	r.d.SetBusMaster(true)
	if st := r.cmd(CmdResetDevice, 0); st != 0 || r.r32(RegGenSts) != StateDisabled {
		t.Fatal("reset from halt")
	}
}

func TestPCIFunction(t *testing.T) {
	ram := make([]byte, memSize)
	f, p := fake.New(nil)
	_ = f
	mem := mustMem(t, ram)
	p.Mem = mem
	root, err := pci.NewRoot(p, pci.RootConfig{
		ECAM:  addr.Range{Base: 0xE000_0000, Size: 1 << 20},
		Mem32: addr.Range{Base: 0xC000_0000, Size: 0x2000_0000},
		Mem64: addr.Range{Base: 0x10_0000_0000, Size: 0x10_0000_0000},
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := AddPCI(p, root, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	cfgRead := func(off uint32, n int) uint32 {
		b := make([]byte, 4)
		root.ConfigRead(0, 1, 0, off, b[:n])
		return binary.LittleEndian.Uint32(b)
	}
	cfgWrite := func(off uint32, v uint32, n int) {
		b := make([]byte, 4)
		binary.LittleEndian.PutUint32(b, v)
		root.ConfigWrite(0, 1, 0, off, b[:n])
	}
	if id := cfgRead(0, 4); id != 0x0b258086 {
		t.Fatalf("ID %#x", id)
	}
	if cl := cfgRead(8, 4) >> 8; cl != ClassDSA {
		t.Fatalf("class %#x", cl)
	}
	bar0 := uint64(cfgRead(0x10, 4)) | uint64(cfgRead(0x14, 4))<<32
	bar2 := uint64(cfgRead(0x18, 4)) | uint64(cfgRead(0x1c, 4))<<32
	if bar0&0xf != 0xc || bar2&0xf != 0xc {
		t.Fatalf("BAR flags %#x %#x: want 64-bit prefetchable", bar0&0xf, bar2&0xf)
	}
	bar0 &^= 0xf
	bar2 &^= 0xf
	// Capabilities: PCIe (RCiEP) and MSI-X with 9 vectors in BAR0.
	var pcie, msix uint32
	for c := cfgRead(0x34, 1); c != 0; c = cfgRead(c+1, 1) {
		switch cfgRead(c, 1) {
		case pci.CapPCIe:
			pcie = c
		case pci.CapMSIX:
			msix = c
		}
	}
	if pcie == 0 || cfgRead(pcie+2, 2)>>4&0xf != uint32(pci.PCIeRCiEP) {
		t.Fatal("PCIe RCiEP capability missing")
	}
	if msix == 0 || cfgRead(msix+2, 2)&0x7ff != 8 || cfgRead(msix+4, 4) != MSIXTableOffset || cfgRead(msix+8, 4) != MSIXPBAOffset {
		t.Fatalf("MSI-X capability at %#x: ctl %#x table %#x pba %#x", msix, cfgRead(msix+2, 2), cfgRead(msix+4, 4), cfgRead(msix+8, 4))
	}
	rd := func(off uint64) uint32 {
		var b [4]byte
		if !p.MMIO.Read(bar0+off, b[:]) {
			t.Fatalf("BAR0+%#x not mapped", off)
		}
		return binary.LittleEndian.Uint32(b[:])
	}
	wr := func(off uint64, v uint32) {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		p.MMIO.Write(bar0+off, b[:])
	}
	if rd(RegVersion) != 0x100 {
		t.Fatal("VERSION through the MMIO bus")
	}
	// Without bus mastering Enable Device fails with 0x12.
	wr(RegWQCap, 0)
	wr(WQCFGOffset, 8)
	wr(WQCFGOffset+8, kernelDWQ)
	wr(WQCFGOffset+12, 21|5<<5)
	wr(GRPCFGOffset, 1)
	wr(GRPCFGOffset+32, 1)
	wr(RegCmd, CmdEnableDevice<<20)
	if st := rd(RegCmdSts); st != CmdStsBusMaster {
		t.Fatalf("enable without BME: %#x", st)
	}
	cfgWrite(4, uint32(cfgRead(4, 2))|pci.CmdBusMaster|pci.CmdMemory, 2)
	wr(RegCmd, CmdEnableDevice<<20)
	wr(RegCmd, CmdEnableWQ<<20)
	if st := rd(RegCmdSts); st != 0 {
		t.Fatalf("enable WQ: %#x", st)
	}
	// Program and unmask MSI-X vector 1, enable MSI-X, submit through BAR2.
	wr(MSIXTableOffset+16, 0xfee00000)
	wr(MSIXTableOffset+24, 0x41)
	wr(MSIXTableOffset+28, 0)
	cfgWrite(msix+2, pci.MSIXEnable, 2)
	desc := newDesc(OpNOOP, rcr|FlagRCI, crA, 0, 0, 0)
	put16(desc, 36, 1)
	found, ok := p.MMIO.Write64B(bar2+PortalPage, desc, bus.MOVDIR64B)
	if !found || !ok {
		t.Fatal("portal not reachable through the MMIO bus")
	}
	wr(RegCmd, CmdDrainWQ<<20|1)
	if ram[crA] != StatusSuccess {
		t.Fatalf("status %#x", ram[crA])
	}
	if n := f.Vectors[1].Count(); n != 1 {
		t.Fatalf("vector 1 fired %d times", n)
	}
	// MSIXPERM writes land in the table, not on VERSION/GENCAP.
	wr(MSIXPermOffset+8, 0)
	if rd(RegVersion) != 0x100 {
		t.Fatal("VERSION clobbered")
	}
	// FLR resets the device.
	cfgWrite(pcie+pci.PCIeDevCtl, cfgRead(pcie+pci.PCIeDevCtl, 2)|0x8000, 2)
	if rd(RegGenSts) != StateDisabled || rd(WQCFGOffset) != 0 || cfgRead(pcie+pci.PCIeDevCtl, 2)&0x8000 != 0 {
		t.Fatal("FLR did not reset the device")
	}
}
