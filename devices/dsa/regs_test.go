package dsa

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig("wqs=8,wq-size=128,groups=4,engines=4,version=1.0")
	if err != nil || c != DefaultConfig() {
		t.Fatalf("got %+v, %v", c, err)
	}
	c, err = ParseConfig("wqs=2, engines=1,version=2.0,int-handles=on")
	if err != nil || c.WQs != 2 || c.Engines != 1 || c.Version != 0x200 || !c.IntHandles || c.WQSize != 128 {
		t.Fatalf("got %+v, %v", c, err)
	}
	if back, err := ParseConfig(c.String()); err != nil || back != c {
		t.Fatalf("round trip %q: %+v %v", c.String(), back, err)
	}
	if c, err := ParseConfig(""); err != nil || c != DefaultConfig() {
		t.Fatalf("empty: %+v %v", c, err)
	}
	for in, want := range map[string]string{
		"wqs=0":           "wqs=0 out of range",
		"wqs=x":           "not a number",
		"colour=blue":     "unknown key",
		"wqs":             "not key=value",
		"version=3.0":     "unsupported",
		"wqs=8,wq-size=4": "wq-size=4 out of range",
		"engines=17":      "engines=17",
		"groups=9":        "groups=9",
	} {
		_, err := ParseConfig(in)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line containing %q", in, err, want)
		}
	}
}

func TestPortalBARSize(t *testing.T) {
	for wqs, want := range map[int]uint64{1: 0x4000, 2: 0x8000, 3: 0x10000, 8: 0x20000, 16: 0x40000} {
		c := DefaultConfig()
		c.WQs = wqs
		if got := c.PortalBARSize(); got != want {
			t.Errorf("%d WQs: BAR2 %#x, want %#x", wqs, got, want)
		}
	}
}

func TestCapabilityRegisters(t *testing.T) {
	r := newRig(t, DefaultConfig())
	if v := r.r32(RegVersion); v != 0x100 {
		t.Errorf("VERSION %#x", v)
	}
	gc := r.r64(RegGenCap)
	if gc>>16&0x1f < 21 || gc>>21&0xf < 5 || gc>>31&1 != 1 || gc>>4&1 != 1 || gc&1 != 0 || gc>>1&1 != 1 {
		t.Errorf("GENCAP %#x: want xfer shift>=21, batch shift>=5, config_en, cmdcap, no BOF, overlap", gc)
	}
	if lo, hi := r.r32(RegGenCap), r.r32(RegGenCap+4); uint64(hi)<<32|uint64(lo) != gc {
		t.Errorf("GENCAP halves %#x %#x vs %#x", lo, hi, gc)
	}
	wc := r.r64(RegWQCap)
	if wc&0xffff != 128 || wc>>16&0xff != 8 || wc>>24&0xf != 0 || wc>>49&1 != 1 || wc>>54&1 != 0 {
		t.Errorf("WQCAP %#x", wc)
	}
	if g := r.r64(RegGrpCap); g&0xff != 4 || g>>8&0xff == 0 {
		t.Errorf("GRPCAP %#x", g)
	}
	if e := r.r64(RegEngCap); e&0xff != 4 {
		t.Errorf("ENGCAP %#x", e)
	}
	if o := r.r64(RegOpCap); o != 0x1003f03ff {
		t.Errorf("OPCAP %#x", o)
	}
	if c := r.r32(RegCmdCap); c != 0x1ffe {
		t.Errorf("CMDCAP %#x", c)
	}
	off := r.r64(RegOffsets)
	if off&0xffff*0x100 != GRPCFGOffset || off>>16&0xffff*0x100 != WQCFGOffset || off>>32&0xffff*0x100 != MSIXPermOffset || off>>48 != 0 {
		t.Errorf("OFFSETS %#x", off)
	}
	if p := r.r64(RegOffsets + 8); p != 0 {
		t.Errorf("perfmon offset %#x, want 0 (no PMU)", p)
	}
	// RO registers ignore writes.
	r.w64(RegGenCap, 0)
	r.w32(RegVersion, 0x200)
	if r.r64(RegGenCap) != gc || r.r32(RegVersion) != 0x100 {
		t.Error("write to RO capability changed it")
	}
	// Bad accesses: misaligned / odd sizes read zero and are ignored.
	var b [3]byte
	r.d.BAR0().Read(0, b[:])
	if b != [3]byte{} {
		t.Error("3-byte read returned data")
	}
	r.d.BAR0().Read(BAR0Size-4, make([]byte, 8)) // past the end: no panic
	// Initial values (SPEC Table 9-3).
	if v := r.r32(RegGenCfg); v&0xff != totalReadBufs {
		t.Errorf("GENCFG %#x", v)
	}
	if v := r.r64(GRPCFGOffset + 40); v>>20&0xff != totalReadBufs {
		t.Errorf("GRPFLAGS %#x: rdbufs allowed should be total", v)
	}

	r2 := newRig(t, Config{WQs: 2, WQSize: 32, Groups: 1, Engines: 1, Version: 0x200, IntHandles: true})
	wc = r2.r64(RegWQCap)
	if wc>>24&0xf != 1 || wc>>54&1 != 1 {
		t.Errorf("2.0 WQCAP %#x: want 64-byte WQCFG and OPCFG", wc)
	}
	if r2.r32(RegCmdCap)&(3<<13) != 3<<13 {
		t.Error("int-handles not advertised")
	}
	// OPCFG initial value = OPCAP.
	if v := uint64(r2.r32(WQCFGOffset+64+32)) | uint64(r2.r32(WQCFGOffset+64+36))<<32; v != OpCapDSA1 {
		t.Errorf("WQ1 OPCFG %#x", v)
	}
}

func TestResetDeviceAtProbe(t *testing.T) {
	r := newRig(t, DefaultConfig())
	r.configWQ(0, 16, 0, kernelDWQ, 21, 5)
	r.w32(RegCmd, CmdResetDevice<<20) // polled, no interrupt
	if st := r.r32(RegCmdSts); st != 0 {
		t.Fatalf("CMDSTS %#x", st)
	}
	if r.intr.count(0) != 0 {
		t.Fatal("interrupt without int_req")
	}
	if r.r32(RegGenSts) != StateDisabled {
		t.Fatal("not disabled after reset")
	}
	for i := range 8 {
		if v := r.r32(r.wqcfgOff(0) + uint64(4*i)); v != 0 {
			t.Fatalf("WQCFG dword %d = %#x after Reset Device", i, v)
		}
	}
}

func TestDriverEnableSequence(t *testing.T) {
	r := newRig(t, DefaultConfig())
	r.w32(RegGenCtrl, 3)
	r.setupDWQ(16)
	if s := r.r32(RegGenSts); s&3 != StateEnabled {
		t.Fatalf("GENSTS %#x", s)
	}
	dw6 := r.r32(r.wqcfgOff(0) + 24)
	if dw6>>30 != 1 {
		t.Fatalf("WQ state %#x", dw6)
	}
	// The driver rewrites the whole config while the device is enabled:
	// locked fields must ignore it (not fault).
	r.configGroup(0, 3, 1)
	r.configGroup(1, 0, 0)
	if v := r.r64(GRPCFGOffset); v != 1 {
		t.Fatalf("GRPCFG changed while enabled: %#x", v)
	}
	r.w32(r.wqcfgOff(0), 64)
	if v := r.r32(r.wqcfgOff(0)); v != 16 {
		t.Fatalf("WQ size changed while enabled: %d", v)
	}
	r.w32(r.wqcfgOff(0)+8, 0)
	if v := r.r32(r.wqcfgOff(0) + 8); v != kernelDWQ {
		t.Fatalf("WQCFG dword 2 changed while WQ enabled: %#x", v)
	}
	r.w32(r.wqcfgOff(0)+4, 7) // threshold is always writable
	if v := r.r32(r.wqcfgOff(0) + 4); v != 7 {
		t.Fatalf("threshold %d", v)
	}
	r.w32(RegGenCfg, 5)
	if v := r.r32(RegGenCfg); v != totalReadBufs {
		t.Fatalf("GENCFG written while enabled: %#x", v)
	}
	if st := r.cmd(CmdEnableWQ, 0); st != CmdStsWQEnabled {
		t.Fatalf("second Enable WQ: %#x", st)
	}
	if st := r.cmd(CmdEnableDevice, 0); st != CmdStsDevEnabled {
		t.Fatalf("second Enable Device: %#x", st)
	}
	// Unbind: Drain WQ, Reset WQ, Disable Device, Reset Device.
	r.drain(0)
	if st := r.cmd(CmdResetWQ, 1); st != 0 {
		t.Fatalf("Reset WQ %#x", st)
	}
	if v := r.r32(r.wqcfgOff(0) + 8); v != 0 {
		t.Fatalf("Reset WQ left dword 2 = %#x (sticky bits would survive)", v)
	}
	if v := r.r32(r.wqcfgOff(0) + 24); v>>30 != 0 {
		t.Fatalf("WQ still enabled after reset: %#x", v)
	}
	if v := r.r32(r.wqcfgOff(0)); v != 16 {
		t.Fatalf("Reset WQ on an enabled device must keep the size partition: %d", v)
	}
	// disable-wq / enable-wq cycle as 6.1 does it.
	r.configWQ(0, 16, 0, kernelDWQ, 21, 5)
	if st := r.cmd(CmdEnableWQ, 0); st != 0 {
		t.Fatalf("re-enable WQ %#x", st)
	}
	if st := r.cmd(CmdDisableDevice, 0); st != 0 {
		t.Fatalf("Disable Device %#x", st)
	}
	if r.r32(r.wqcfgOff(0)+24)>>30 != 0 {
		t.Fatal("WQ enabled after Disable Device")
	}
	if v := r.r64(GRPCFGOffset); v != 1 {
		t.Fatal("Disable Device lost the configuration")
	}
	if st := r.cmd(CmdDisableDevice, 0); st != CmdStsDisDevNotEn {
		t.Fatalf("Disable Device twice: %#x", st)
	}
	if st := r.cmd(CmdResetDevice, 0); st != 0 {
		t.Fatalf("Reset Device %#x", st)
	}
	if v := r.r64(GRPCFGOffset); v != 0 {
		t.Fatalf("GRPCFG after Reset Device %#x", v)
	}
	if v := r.r32(r.wqcfgOff(0)); v != 0 {
		t.Fatalf("WQ size after Reset Device %d", v)
	}
	if v := r.r32(RegGenCtrl); v != 0 {
		t.Fatalf("GENCTRL after reset %#x", v)
	}
}

func TestEnableDeviceChecks(t *testing.T) {
	cases := []struct {
		name  string
		setup func(r *rig)
		want  uint32
	}{
		{"bus master off", func(r *rig) { r.d.SetBusMaster(false); r.configGroup(0, 1, 1); r.configWQ(0, 8, 0, kernelDWQ, 21, 5) }, CmdStsBusMaster},
		{"sizes over total", func(r *rig) {
			r.configWQ(0, 100, 0, kernelDWQ, 21, 5)
			r.configWQ(1, 100, 0, kernelDWQ, 21, 5)
			r.configGroup(0, 3, 1)
		}, CmdStsWQSizeRange},
		{"WQs without engines", func(r *rig) { r.configWQ(0, 8, 0, kernelDWQ, 21, 5); r.configGroup(0, 1, 0) }, CmdStsGrpConfig},
		{"engines without WQs", func(r *rig) { r.configGroup(0, 0, 1) }, CmdStsGrpConfig},
		{"WQ in two groups", func(r *rig) {
			r.configWQ(0, 8, 0, kernelDWQ, 21, 5)
			r.configGroup(0, 1, 1)
			r.configGroup(1, 1, 2)
		}, CmdStsGrpConfig2},
		{"reserved WQ bit", func(r *rig) { r.configWQ(0, 8, 0, kernelDWQ, 21, 5); r.configGroup(0, 1|1<<9, 1) }, CmdStsGrpConfig2},
		{"grouped WQ of size 0", func(r *rig) { r.configGroup(0, 1, 1) }, CmdStsGrpConfig2},
		{"engine in two groups", func(r *rig) {
			r.configWQ(0, 8, 0, kernelDWQ, 21, 5)
			r.configWQ(1, 8, 0, kernelDWQ, 21, 5)
			r.configGroup(0, 1, 1)
			r.configGroup(1, 2, 1)
		}, CmdStsGrpConfig3},
		{"reserved engine bit", func(r *rig) { r.configWQ(0, 8, 0, kernelDWQ, 21, 5); r.configGroup(0, 1, 1<<4) }, CmdStsGrpConfig3},
		{"ok", func(r *rig) { r.configWQ(0, 8, 0, kernelDWQ, 21, 5); r.configGroup(0, 1, 1) }, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, DefaultConfig())
			c.setup(r)
			if st := r.cmd(CmdEnableDevice, 0); st != c.want {
				t.Fatalf("CMDSTS %#x, want %#x", st, c.want)
			}
			want := uint32(StateDisabled)
			if c.want == 0 {
				want = StateEnabled
			}
			if s := r.r32(RegGenSts); s != want {
				t.Fatalf("GENSTS %d", s)
			}
		})
	}
}

func TestEnableWQChecks(t *testing.T) {
	r := newRig(t, DefaultConfig())
	if st := r.cmd(CmdEnableWQ, 0); st != CmdStsDevNotEnabled {
		t.Fatalf("device disabled: %#x", st)
	}
	// WQ0..WQ6 in group 0 with various faults; WQ 7 not grouped.
	type wqc struct {
		dw2          uint32
		xfer, batch  uint32
		want         uint32
		name         string
		pasidEnabled bool
	}
	cs := []wqc{
		{kernelDWQ, 21, 5, 0, "ok", false},
		{wqModeDedicated | wqPriv, 21, 5, CmdStsWQPriority, "priority 0", false},
		{10 << wqPrioShift, 21, 5, CmdStsPASIDEn, "shared without PASID enable", false},
		{10<<wqPrioShift | wqPASIDEn, 21, 5, CmdStsPASIDEn, "PASID enable without PCIe PASID", false},
		{kernelDWQ | wqBOF, 21, 5, CmdStsBOF, "block on fault unsupported", false},
		{kernelDWQ, 21, 0, CmdStsMaxBatch, "batch shift 0", false},
		{kernelDWQ, 21, 11, CmdStsMaxBatch, "batch shift over cap", false},
	}
	for i, c := range cs {
		r.configWQ(i, 8, 0, c.dw2, c.xfer, c.batch)
	}
	r.configWQ(7, 8, 0, kernelDWQ, 21, 5)
	r.configGroup(0, 0x7f, 0xf)
	if st := r.cmd(CmdEnableDevice, 0); st != 0 {
		t.Fatalf("enable device %#x", st)
	}
	for i, c := range cs {
		if st := r.cmd(CmdEnableWQ, uint32(i)); st != c.want {
			t.Errorf("WQ%d (%s): %#x, want %#x", i, c.name, st, c.want)
		}
	}
	if st := r.cmd(CmdEnableWQ, 7); st != CmdStsGrpConfig2 {
		t.Errorf("ungrouped WQ: %#x", st)
	}
	if st := r.cmd(CmdEnableWQ, 8); st != CmdStsInvalWQIdx {
		t.Errorf("WQ index 8: %#x", st)
	}
	// Shared WQ once PASID is enabled.
	r.d.SetPASIDEnabled(true)
	if st := r.cmd(CmdEnableWQ, 3); st != 0 {
		t.Errorf("shared WQ with PASID: %#x", st)
	}
	// WQ commands on a disabled WQ.
	for _, code := range []uint32{CmdDisableWQ, CmdDrainWQ, CmdAbortWQ} {
		if st := r.cmd(code, 1<<1); st != CmdStsWQNotEnabled {
			t.Errorf("command %d on disabled WQ: %#x", code, st)
		}
	}
	if st := r.cmd(CmdDisableWQ, 1<<12); st != CmdStsInvalWQIdx {
		t.Errorf("Disable WQ 12: %#x", st)
	}
	if st := r.cmd(CmdDisableWQ, 1<<16|1); st != CmdStsInvalWQIdx {
		t.Errorf("Disable WQ 16: %#x", st)
	}
	if st := r.cmd(CmdDisableWQ, 1<<0|1<<3); st != 0 {
		t.Errorf("Disable WQ 0,3: %#x", st)
	}
	if st := r.cmd(0x1f, 0); st != CmdStsInvalCmd {
		t.Errorf("unknown command: %#x", st)
	}
	if st := r.cmd(CmdRequestIntHandle, 1); st != CmdStsInvalCmd {
		t.Errorf("Request Int Handle without CMDCAP[13]: %#x", st)
	}
	if st := r.cmd(CmdDrainAll, 0); st != 0 {
		t.Errorf("Drain All %#x", st)
	}
	if st := r.cmd(CmdAbortAll, 0); st != 0 {
		t.Errorf("Abort All %#x", st)
	}
	if st := r.cmd(CmdDrainPASID, 5); st != 0 {
		t.Errorf("Drain PASID %#x", st)
	}
	if st := r.cmd(CmdAbortPASID, 5); st != 0 {
		t.Errorf("Abort PASID %#x", st)
	}
}

func TestIntHandles(t *testing.T) {
	r := newRig(t, Config{WQs: 2, WQSize: 16, Groups: 1, Engines: 1, Version: 0x100, IntHandles: true})
	if st := r.cmd(CmdRequestIntHandle, 2); st != 2<<8 {
		t.Fatalf("Request Int Handle 2: %#x", st)
	}
	if st := r.cmd(CmdRequestIntHandle, 3); st != CmdStsInvalIntIdx {
		t.Fatalf("index 3 of 3 vectors: %#x", st)
	}
	if st := r.cmd(CmdRequestIntHandle, 1|intHandleIMS); st != CmdStsInvalIntIdx {
		t.Fatalf("IMS (none): %#x", st)
	}
	// Release is polled (no int_req).
	r.w32(RegCmd, CmdReleaseIntHandle<<20|2)
	if st := r.r32(RegCmdSts); st != 0 {
		t.Fatalf("Release: %#x", st)
	}
}

func TestInterruptRegisters(t *testing.T) {
	r := newRig(t, DefaultConfig())
	// Commands without int_req: no interrupt, INTCAUSE untouched.
	r.w32(RegCmd, CmdDrainAll<<20)
	if r.intr.count(0) != 0 || r.r32(RegIntCause) != 0 {
		t.Fatal("interrupt without CMD[31]")
	}
	r.w32(RegCmd, 1<<31|CmdDrainAll<<20)
	if r.r32(RegIntCause) != IntCmdDone {
		t.Fatal("INTCAUSE")
	}
	r.w32(RegIntCause, 0) // writing 0 clears nothing
	if r.r32(RegIntCause) != IntCmdDone {
		t.Fatal("INTCAUSE cleared by 0")
	}
	r.w32(RegIntCause, IntCmdDone)
	if r.r32(RegIntCause) != 0 {
		t.Fatal("INTCAUSE not RW1C")
	}
	// GENCTRL: only bits 0-1.
	r.w32(RegGenCtrl, 0xffffffff)
	if v := r.r32(RegGenCtrl); v != 3 {
		t.Fatalf("GENCTRL %#x", v)
	}
	// MSIXPERM: PASID, PASID enable, Ignore; 8-byte stride; none beyond the table.
	r.w32(MSIXPermOffset+8, 0x12345<<12|0xf)
	if v := r.r32(MSIXPermOffset + 8); v != 0x12345<<12|0xc {
		t.Fatalf("MSIXPERM[1] %#x", v)
	}
	r.w32(MSIXPermOffset+4, 0xffffffff)
	if v := r.r32(MSIXPermOffset + 4); v != 0 {
		t.Fatalf("MSIXPERM hole %#x", v)
	}
}

func TestDSA2OPCFG(t *testing.T) {
	r := newRig(t, Config{WQs: 2, WQSize: 32, Groups: 1, Engines: 1, Version: 0x200})
	if r.d.wqcfgSize != 64 {
		t.Fatal("WQCFG entry size")
	}
	r.configWQ(0, 16, 0, kernelDWQ, 21, 5)
	// OPCFG: only NOOP and MEMMOVE; bits outside OPCAP are not writable.
	r.w32(r.wqcfgOff(0)+32, 1<<OpNOOP|1<<OpMemMove|1<<0x0a)
	r.w32(r.wqcfgOff(0)+36, 0xffffffff)
	if v := r.r32(r.wqcfgOff(0) + 32); v != 1<<OpNOOP|1<<OpMemMove {
		t.Fatalf("OPCFG[0] %#x", v)
	}
	if v := r.r32(r.wqcfgOff(0) + 36); v != OpCapDSA1>>32 {
		t.Fatalf("OPCFG[1] %#x", v)
	}
	r.w32(r.wqcfgOff(0)+36, 0)
	r.configGroup(0, 1, 1)
	if st := r.cmd(CmdEnableDevice, 0); st != 0 {
		t.Fatal(st)
	}
	if st := r.cmd(CmdEnableWQ, 0); st != 0 {
		t.Fatal(st)
	}
	r.run(newDesc(OpFill, rcr, crA, 0, dstA, 64))
	if c := r.cr(crA); c.status != StatusBadOpcode {
		t.Fatalf("fill with OPCFG excluding it: %#x", c.status)
	}
	clear(r.ram[crA : crA+32])
	r.run(newDesc(OpMemMove, rcr, crA, srcA, dstA, 64))
	if c := r.cr(crA); c.status != StatusSuccess {
		t.Fatalf("memmove: %#x", c.status)
	}
	// OPCFG is locked while the WQ is enabled; occupancy limit (dword 5) is not.
	r.w32(r.wqcfgOff(0)+32, 0xffffffff)
	r.w32(r.wqcfgOff(0)+20, 1<<16|5)
	if r.r32(r.wqcfgOff(0)+32) != 1<<OpNOOP|1<<OpMemMove || r.r32(r.wqcfgOff(0)+20) != 1<<16|5 {
		t.Fatal("WQCFG lock rules")
	}
}
