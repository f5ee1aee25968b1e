package emulate

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"strings"
	"testing"

	"godvm/devices/bus"
	"godvm/devices/pci"
	"godvm/kvm"
)

// pvCPU is a CPL0 long-mode vCPU about to execute the guest side's
// "inl $0xf6, %eax" with EAX = kind, RSI = src, RDI = dst.
func pvCPU(kind, src, dst uint64) *fakeCPU {
	return &fakeCPU{sregs: longMode(), regs: kvm.Regs{RAX: kind, RSI: src, RDI: dst, RIP: 0x1000, RFLAGS: 2}}
}

// pattern fills 64 bytes of guest RAM at gpa with seed, seed+1, ...
func (r *rig) pattern(gpa uint64, seed byte) [64]byte {
	var p [64]byte
	for i := range p {
		p[i] = seed + byte(i)
	}
	copy(r.ram[gpa:], p[:])
	return p
}

// in4 runs one 4-byte IN to the port and returns the status and the data
// the guest reads back.
func (r *rig) in4(t *testing.T, c *fakeCPU) (PVStatus, uint32) {
	t.Helper()
	data := []byte{0xaa, 0xaa, 0xaa, 0xaa} // what KVM leaves there: must be overwritten
	st, err := r.emu.PV64B(c, true, 4, data)
	if err != nil {
		t.Fatal(err)
	}
	return st, binary.LittleEndian.Uint32(data)
}

func TestPVMOVDIR64BBytesArriveIntact(t *testing.T) {
	r := newRig(t)
	want := r.pattern(0x3040, 0x10)
	c := pvCPU(PVKindMOVDIR64B, 0x3040, portalBase+0x40)
	st, eax := r.in4(t, c)
	if st != PVStored || eax != 0 {
		t.Fatalf("status %v, EAX %#x; want stored, 0", st, eax)
	}
	if len(r.portal.writes) != 1 {
		t.Fatalf("%d portal writes", len(r.portal.writes))
	}
	w := r.portal.writes[0]
	if w.off != 0x40 || w.kind != bus.MOVDIR64B || w.data != want {
		t.Fatalf("portal got off %#x kind %v data % x; want 0x40 MOVDIR64B % x", w.off, w.kind, w.data, want)
	}
	if c.setRegs != 0 || len(c.injected) != 0 {
		t.Errorf("the answer must travel in the IN's data only: %d SetRegs, injections %v", c.setRegs, c.injected)
	}
	// Counted as a paravirtual store, never as the instruction.
	if r.emu.Stats.PVStores(bus.MOVDIR64B) != 1 || r.emu.Stats.Count(KindMOVDIR64B) != 0 {
		t.Errorf("stats %v", r.emu.Stats.Snapshot())
	}
	if s := r.emu.Stats.String(); s != "pv-movdir64b=1" {
		t.Errorf("boot-trace summary %q", s)
	}
	// The upper half of RAX is not part of the request (EAX is).
	c = pvCPU(0xdead_0000_0000|PVKindMOVDIR64B, 0x3040, portalBase)
	if st, _ := r.in4(t, c); st != PVStored || len(r.portal.writes) != 2 {
		t.Fatalf("kind with RAX upper bits set: %v", st)
	}
}

func TestPVSourceAtPageEnd(t *testing.T) {
	r := newRig(t)
	want := r.pattern(0x4fc0, 0x80) // the last 64 bytes of a page: allowed
	if st, _ := r.in4(t, pvCPU(PVKindMOVDIR64B, 0x4fc0, portalBase)); st != PVStored {
		t.Fatalf("status %v", st)
	}
	if r.portal.writes[0].data != want {
		t.Fatal("bytes")
	}
}

func TestPVENQCMDS(t *testing.T) {
	r := newRig(t)
	src := r.pattern(0x2000, 0)
	binary.LittleEndian.PutUint32(r.ram[0x2000:], 0xffff_ffff)
	st, eax := r.in4(t, pvCPU(PVKindENQCMDS, 0x2000, portalBase+0x80))
	if st != PVStored || eax != 0 {
		t.Fatalf("accepted ENQCMDS: %v EAX %#x", st, eax)
	}
	w := r.portal.writes[0]
	if w.kind != bus.ENQCMDS || w.off != 0x80 {
		t.Fatalf("kind %v off %#x", w.kind, w.off)
	}
	// PASID (19:0) and privilege (31) kept, the rest of dword 0 cleared,
	// as the emulated instruction does; the other 60 bytes untouched.
	if got := binary.LittleEndian.Uint32(w.data[:]); got != 0x800f_ffff {
		t.Errorf("first dword %#x, want 0x800fffff", got)
	}
	if !bytes.Equal(w.data[4:], src[4:]) {
		t.Error("bytes 4..63 changed")
	}
	if binary.LittleEndian.Uint32(r.ram[0x2000:]) != 0xffff_ffff {
		t.Error("the guest's source was modified")
	}
	// The device refuses: retry (ZF=1 for the real instruction).
	r.portal.accept = false
	st, eax = r.in4(t, pvCPU(PVKindENQCMDS, 0x2000, portalBase+0x80))
	if st != PVRetry || eax != 1 || len(r.portal.writes) != 2 {
		t.Fatalf("refused ENQCMDS: %v EAX %#x, %d writes", st, eax, len(r.portal.writes))
	}
	// MOVDIR64B is posted: the device's answer does not matter.
	if st, _ := r.in4(t, pvCPU(PVKindMOVDIR64B, 0x2000, portalBase)); st != PVStored {
		t.Fatalf("MOVDIR64B to a refusing device: %v", st)
	}
	s := &r.emu.Stats
	if s.PVStores(bus.ENQCMDS) != 2 || s.PVRetries() != 1 || s.PVStores(bus.MOVDIR64B) != 1 || s.PVRefused() != 0 {
		t.Errorf("stats %v", s.Snapshot())
	}
	// ENQCMDS is a supervisor instruction: not from CPL3 (IOPL 3 code).
	c := pvCPU(PVKindENQCMDS, 0x2000, portalBase)
	c.sregs.CS.Selector |= 3
	if st, _ := r.in4(t, c); st != PVBadRequest || len(r.portal.writes) != 3 {
		t.Fatalf("ENQCMDS from CPL3: %v", st)
	}
}

// Every refusal: the status the guest reads, and nothing written anywhere
// (portal, plain device, guest RAM).
func TestPVRefusals(t *testing.T) {
	for _, c := range []struct {
		name          string
		kind, src     uint64
		dst           uint64
		want          PVStatus
		out           bool
		size, buf     int
		wantData      []byte
		fromPlainPage bool
	}{
		{name: "kind 0", kind: 0, src: 0x3000, dst: portalBase, want: PVBadRequest},
		{name: "kind 3", kind: 3, src: 0x3000, dst: portalBase, want: PVBadRequest},
		{name: "ENQCMD is not offered", kind: 0xffff_ffff, src: 0x3000, dst: portalBase, want: PVBadRequest},
		{name: "OUT", kind: 1, src: 0x3000, dst: portalBase, want: PVBadRequest, out: true, size: 4, buf: 4,
			wantData: []byte{0xaa, 0xaa, 0xaa, 0xaa}},
		{name: "1-byte IN", kind: 1, src: 0x3000, dst: portalBase, want: PVBadRequest, size: 1, buf: 1, wantData: []byte{2}},
		{name: "2-byte IN", kind: 1, src: 0x3000, dst: portalBase, want: PVBadRequest, size: 2, buf: 2, wantData: []byte{2, 0}},
		{name: "string IN (rep insd, 2 dwords)", kind: 1, src: 0x3000, dst: portalBase, want: PVBadRequest, size: 4, buf: 8,
			wantData: []byte{2, 0, 0, 0, 2, 0, 0, 0}},
		{name: "unaligned destination", kind: 1, src: 0x3000, dst: portalBase + 8, want: PVUnaligned},
		{name: "unaligned by 32", kind: 2, src: 0x3000, dst: portalBase + 0x20, want: PVUnaligned},
		{name: "destination RAM", kind: 1, src: 0x3000, dst: 0x5000, want: PVNotPortal},
		{name: "destination unmapped", kind: 1, src: 0x3000, dst: 0xe000_0000, want: PVNotPortal},
		{name: "destination past the portal's end", kind: 1, src: 0x3000, dst: portalBase + 0x1000, want: PVNotPortal},
		{name: "destination at the top of the address space", kind: 1, src: 0x3000, dst: ^uint64(63), want: PVNotPortal},
		{name: "destination plain MMIO (no Write64B)", kind: 1, src: 0x3000, dst: plainBase, want: PVNotPortal},
		{name: "ENQCMDS to plain MMIO", kind: 2, src: 0x3000, dst: plainBase + 0x40, want: PVNotPortal},
		{name: "source crosses a page", kind: 1, src: 0x3fc8, dst: portalBase, want: PVBadSource},
		{name: "source crosses by one byte", kind: 1, src: 0x3fc1, dst: portalBase, want: PVBadSource},
		{name: "source past the end of RAM", kind: 1, src: ramSize, dst: portalBase, want: PVBadSource},
		{name: "source in MMIO (the portal)", kind: 1, src: portalBase, dst: portalBase, want: PVBadSource},
		{name: "source at the top of the address space", kind: 2, src: ^uint64(63), dst: portalBase, want: PVBadSource},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			r.pattern(0x3000, 1)
			r.pattern(0x3fc0, 1)
			ram := append([]byte(nil), r.ram...)
			var logBuf bytes.Buffer
			r.emu.Log = slog.New(slog.NewTextHandler(&logBuf, nil))
			size, buf := c.size, c.buf
			if size == 0 {
				size, buf = 4, 4
			}
			data := bytes.Repeat([]byte{0xaa}, buf)
			cpu := pvCPU(c.kind, c.src, c.dst)
			st, err := r.emu.PV64B(cpu, !c.out, size, data)
			if err != nil {
				t.Fatal(err)
			}
			if st != c.want {
				t.Fatalf("status %d (%v), want %d (%v)", st, st, c.want, c.want)
			}
			want := c.wantData
			if want == nil {
				want = binary.LittleEndian.AppendUint32(nil, uint32(c.want))
			}
			if !bytes.Equal(data, want) {
				t.Errorf("the guest reads % x, want % x", data, want)
			}
			if len(r.portal.writes) != 0 || len(r.portal.plain) != 0 || len(r.plain.plain) != 0 || len(r.plain.writes) != 0 {
				t.Errorf("written: portal %d/%d, plain %d", len(r.portal.writes), len(r.portal.plain), len(r.plain.plain))
			}
			if !bytes.Equal(ram, r.ram) {
				t.Error("guest RAM changed")
			}
			if cpu.setRegs != 0 || len(cpu.injected) != 0 {
				t.Error("registers set or exception injected")
			}
			if r.emu.Stats.PVRefused() != 1 || r.emu.Stats.PVStores(bus.MOVDIR64B)+r.emu.Stats.PVStores(bus.ENQCMDS) != 0 {
				t.Errorf("stats %v", r.emu.Stats.Snapshot())
			}
			if !strings.Contains(logBuf.String(), "level=WARN") || !strings.Contains(logBuf.String(), "status="+string('0'+byte(c.want))) {
				t.Errorf("log %q", logBuf.String())
			}
		})
	}
}

// The first refusal of each status is logged, later ones only counted.
func TestPVRefusalLoggedOnce(t *testing.T) {
	r := newRig(t)
	var logBuf bytes.Buffer
	r.emu.Log = slog.New(slog.NewTextHandler(&logBuf, nil))
	for range 3 {
		r.in4(t, pvCPU(PVKindMOVDIR64B, 0x3000, 0x5000)) // RAM: 4
	}
	r.in4(t, pvCPU(PVKindMOVDIR64B, 0x3fc8, portalBase)) // 5
	if n := strings.Count(logBuf.String(), "level=WARN"); n != 2 {
		t.Errorf("%d warnings, want 2 (one per status):\n%s", n, logBuf.String())
	}
	if r.emu.Stats.PVRefused() != 4 || !strings.Contains(r.emu.Stats.String(), "pv-refused=4") {
		t.Errorf("stats %q", r.emu.Stats.String())
	}
}

func TestPVRegsError(t *testing.T) {
	r := newRig(t)
	c := pvCPU(PVKindMOVDIR64B, 0x3000, portalBase)
	c.failRegs = true
	if _, err := r.emu.PV64B(c, true, 4, make([]byte, 4)); err == nil || !strings.Contains(err.Error(), "KVM_GET_REGS") {
		t.Fatalf("err %v", err)
	}
	if len(r.portal.writes) != 0 {
		t.Fatal("written without registers")
	}
}

// A BAR split by pci.Mux (virtio's BAR0: registers, MSI-X table) is a
// portal only where the sub-device itself takes 64-byte writes.
func TestPVThroughMux(t *testing.T) {
	r := newRig(t)
	r.emu.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	const muxBase = 0xd002_0000
	regs, wide := &portal{}, &portal{accept: true}
	var m pci.Mux
	if err := m.Add(0, 0x1000, "regs", plainDev{regs}); err != nil {
		t.Fatal(err)
	}
	if err := m.Add(0x1000, 0x1000, "portal", wide); err != nil {
		t.Fatal(err)
	}
	if err := r.mmio.Register(muxBase, 0x2000, "mux", &m); err != nil {
		t.Fatal(err)
	}
	want := r.pattern(0x3000, 7)
	if st, _ := r.in4(t, pvCPU(PVKindMOVDIR64B, 0x3000, muxBase)); st != PVNotPortal || len(regs.plain) != 0 {
		t.Fatalf("register sub-device: %v, %d plain writes", st, len(regs.plain))
	}
	if st, _ := r.in4(t, pvCPU(PVKindMOVDIR64B, 0x3000, muxBase+0x1040)); st != PVStored ||
		len(wide.writes) != 1 || wide.writes[0].off != 0x40 || wide.writes[0].data != want {
		t.Fatalf("portal sub-device: %v, writes %+v", st, wide.writes)
	}
}
