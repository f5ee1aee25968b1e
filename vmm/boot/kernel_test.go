package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"godvm/addr"
	"godvm/guestmem"
	"godvm/vmm/layout"
)

type testSeg struct {
	paddr  uint64
	data   []byte
	memsz  uint64
	ptype  uint32
	offset uint64 // 0: placed after the headers automatically
}

// makeELF builds a minimal ELF64 x86-64 executable.
func makeELF(entry uint64, segs []testSeg) []byte {
	le := binary.LittleEndian
	hdr := make([]byte, 64+56*len(segs))
	copy(hdr, "\x7fELF")
	hdr[4], hdr[5], hdr[6] = 2, 1, 1
	le.PutUint16(hdr[16:], 2)
	le.PutUint16(hdr[18:], 62)
	le.PutUint32(hdr[20:], 1)
	le.PutUint64(hdr[24:], entry)
	le.PutUint64(hdr[32:], 64)
	le.PutUint16(hdr[52:], 64)
	le.PutUint16(hdr[54:], 56)
	le.PutUint16(hdr[56:], uint16(len(segs)))
	out := bytes.NewBuffer(hdr)
	for i, s := range segs {
		off := s.offset
		if off == 0 {
			off = uint64(out.Len())
			out.Write(s.data)
		}
		p := hdr[64+56*i:]
		typ := s.ptype
		if typ == 0 {
			typ = 1
		}
		le.PutUint32(p[0:], typ)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], s.paddr|0xffffffff80000000)
		le.PutUint64(p[24:], s.paddr)
		le.PutUint64(p[32:], uint64(len(s.data)))
		le.PutUint64(p[40:], s.memsz)
		le.PutUint64(p[48:], 0x200000)
	}
	b := out.Bytes()
	copy(b, hdr)
	return b
}

// makeBzImage builds a bzImage-shaped file: setup sectors with a header and a
// protected-mode payload.
func makeBzImage(version uint16, xload uint16, pref uint64, initSize uint32, payload []byte) []byte {
	const setupSects = 4
	b := make([]byte, (setupSects+1)*512)
	h := SetupHeader{
		SetupSects: setupSects, BootFlag: BootFlagAA55, Jump: uint16(0xeb) | uint16(HdrEnd-0x202)<<8,
		Header: HdrSMagic, Version: version, Loadflags: LoadedHigh, InitrdAddrMax: 0x7fffffff,
		KernelAlignment: 0x200000, RelocatableKernel: 1, Xloadflags: xload, CmdlineSize: 2047,
		PrefAddress: pref, InitSize: initSize,
	}
	var hb bytes.Buffer
	binary.Write(&hb, binary.LittleEndian, &h)
	copy(b[HdrOffset:], hb.Bytes())
	return append(b, payload...)
}

func testMem(t *testing.T, size int) *guestmem.Memory {
	t.Helper()
	m, err := guestmem.FromBytes(guestmem.NewRegion(0, make([]byte, size), -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseELF(t *testing.T) {
	text := bytes.Repeat([]byte{0x90}, 100)
	data := []byte("data")
	img := makeELF(0x1000000, []testSeg{
		{paddr: 0x1000000, data: text, memsz: 0x1000},
		{paddr: 0x1200000, data: data, memsz: 0x2000},
		{paddr: 0, data: []byte("note"), memsz: 4, ptype: 4}, // PT_NOTE: ignored
	})
	k, err := Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if k.Format != FormatELF || k.Entry != 0x1000000 || k.Start != 0x1000000 || k.End != 0x1202000 || len(k.Segments) != 2 {
		t.Fatalf("%+v", k)
	}
	mem := testMem(t, 32<<20)
	mem.Fill(0x1200000, 0x2000, 0xaa) // stale memory must be cleared (bss)
	if err := k.Load(mem); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0x2000)
	mem.ReadAt(got, 0x1200000)
	if !bytes.Equal(got[:4], data) || !bytes.Equal(got[4:], make([]byte, 0x2000-4)) {
		t.Error("data segment or its bss not loaded")
	}
	b, _ := mem.ReadU8(0x1000000 + 99)
	if b != 0x90 {
		t.Error("text not loaded")
	}
	ram, _ := layout.RAM(32 << 20)
	if err := k.CheckFits(ram); err != nil {
		t.Error(err)
	}
	small := []addr.Range{{Base: 0, Size: 16 << 20}}
	if err := k.CheckFits(small); err == nil || !strings.Contains(err.Error(), "--memory") {
		t.Errorf("kernel beyond RAM: %v", err)
	}
	// Loading into too little memory is an error, not a panic.
	if err := k.Load(testMem(t, 1<<20)); err == nil {
		t.Error("load beyond memory succeeded")
	}
}

func TestParseELFBad(t *testing.T) {
	good := makeELF(0x1000000, []testSeg{{paddr: 0x1000000, data: []byte{1, 2, 3}, memsz: 16}})
	mod := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	le := binary.LittleEndian
	cases := map[string][]byte{
		"32-bit":         mod(func(b []byte) { b[4] = 1 }),
		"big-endian":     mod(func(b []byte) { b[5] = 2 }),
		"arm64":          mod(func(b []byte) { le.PutUint16(b[18:], 183) }),
		"relocatable .o": mod(func(b []byte) { le.PutUint16(b[16:], 1) }),
		"phentsize":      mod(func(b []byte) { le.PutUint16(b[54:], 32) }),
		"no phdrs":       mod(func(b []byte) { le.PutUint16(b[56:], 0) }),
		"phoff beyond":   mod(func(b []byte) { le.PutUint64(b[32:], 1<<62) }),
		"phnum beyond":   mod(func(b []byte) { le.PutUint16(b[56:], 1000) }),
		"data beyond":    mod(func(b []byte) { le.PutUint64(b[64+8:], uint64(len(good))) }),
		"huge offset":    mod(func(b []byte) { le.PutUint64(b[64+8:], ^uint64(0)-1) }),
		"filesz>memsz":   mod(func(b []byte) { le.PutUint64(b[64+40:], 1) }),
		"paddr wraps":    mod(func(b []byte) { le.PutUint64(b[64+24:], ^uint64(0)-4) }),
		"above 3G":       mod(func(b []byte) { le.PutUint64(b[64+24:], 0xbffffff8) }),
		"entry outside":  mod(func(b []byte) { le.PutUint64(b[24:], 0xffffffff81000000) }),
		"not load":       mod(func(b []byte) { le.PutUint32(b[64:], 4) }),
		"truncated hdr":  good[:40],
		"truncated data": good[:len(good)-1],
		"just magic":     []byte("\x7fELF"),
		"overlap": makeELF(0x1000000, []testSeg{
			{paddr: 0x1000000, data: []byte{1}, memsz: 0x2000},
			{paddr: 0x1001000, data: []byte{1}, memsz: 0x10}}),
	}
	for name, img := range cases {
		if k, err := Parse(img); err == nil {
			t.Errorf("%s: accepted: %+v", name, k)
		}
	}
}

func TestParseBzImage(t *testing.T) {
	payload := bytes.Repeat([]byte{0xcc}, 3000)
	img := makeBzImage(0x020f, XLFKernel64|XLFAbove4G, 0x1000000, 0x800000, payload)
	k, err := Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if k.Format != FormatBzImage || k.Entry != 0x1000200 || k.Start != 0x1000000 || k.End != 0x1800000 {
		t.Fatalf("%+v", k)
	}
	if len(k.Segments) != 1 || !bytes.Equal(k.Segments[0].Data, payload) {
		t.Fatal("payload not found after the setup sectors")
	}
	if k.CmdlineMax != 2047 || k.InitrdAddrMax != 0x7fffffff || k.Hdr.Version != 0x020f {
		t.Errorf("%+v", k)
	}
	// No pref_address: loads at 1 MiB.
	k2, err := Parse(makeBzImage(0x020f, XLFKernel64, 0, 0, payload))
	if err != nil || k2.Start != layout.HighMemStart || k2.Entry != layout.HighMemStart+0x200 || k2.End != layout.HighMemStart+3000 {
		t.Fatalf("start %#x entry %#x end %#x: %v", k2.Start, k2.Entry, k2.End, err)
	}
	// Loaded at 1 MiB, a relocatable kernel moves itself to the next 2 MiB
	// boundary: init_size counts from there.
	k3, err := Parse(makeBzImage(0x020f, XLFKernel64, 0, 0x400000, payload))
	if err != nil || k3.End != 0x200000+0x400000 {
		t.Fatalf("aligned end %#x: %v", k3.End, err)
	}
	// setup_sects == 0 means 4.
	img0 := append([]byte(nil), img...)
	img0[HdrOffset] = 0
	if k0, err := Parse(img0); err != nil || len(k0.Segments[0].Data) != len(payload) {
		t.Errorf("setup_sects 0: %v", err)
	}
}

func TestParseBzImageBad(t *testing.T) {
	payload := []byte{1, 2, 3}
	cases := map[string][]byte{
		"protocol 2.10": makeBzImage(0x020a, XLFKernel64, 0x1000000, 0, payload),
		"no 64-bit":     makeBzImage(0x020f, 0, 0x1000000, 0, payload),
		"no payload":    makeBzImage(0x020f, XLFKernel64, 0x1000000, 0, nil),
		"init too big":  makeBzImage(0x020f, XLFKernel64, 0x1000000, 0xf0000000, payload),
		"header cut":    makeBzImage(0x020f, XLFKernel64, 0x1000000, 0, payload)[:0x230],
		"bad boot flag": func() []byte { b := makeBzImage(0x020f, XLFKernel64, 0, 0, payload); b[0x1fe] = 0; return b }(),
		"zImage":        func() []byte { b := makeBzImage(0x020f, XLFKernel64, 0, 0, payload); b[0x211] = 0; return b }(),
		"many sects":    func() []byte { b := makeBzImage(0x020f, XLFKernel64, 0, 0, payload); b[HdrOffset] = 200; return b }(),
		"text file":     []byte("#!/bin/sh\necho not a kernel\n"),
		"no entry":      makeBzImage(0x020f, XLFKernel64, 0x1000000, 0, make([]byte, Entry64Offset)), // entered at +0x200: past its end
		"empty":         nil,
	}
	for name, img := range cases {
		if k, err := Parse(img); err == nil {
			t.Errorf("%s: accepted: %+v", name, k)
		}
	}
	if _, err := Parse([]byte("hello world")); !errors.Is(err, ErrNotKernel) {
		t.Errorf("text: %v", err)
	}
}

func TestPlaceInitrd(t *testing.T) {
	k := &Kernel{Start: 0x1000000, End: 0x2000000, InitrdAddrMax: 0x7fffffff}
	ram, _ := layout.RAM(512 << 20)
	addr, err := PlaceInitrd(k, 3<<20+5, ram)
	if err != nil {
		t.Fatal(err)
	}
	if addr%initrdAlign != 0 || addr+3<<20+5 > 512<<20 || addr < 500<<20 {
		t.Errorf("initrd at %#x", addr)
	}
	// initrd_addr_max below RAM top is honoured.
	k2 := *k
	k2.InitrdAddrMax = 0x0fffffff
	if addr, err := PlaceInitrd(&k2, 1<<20, ram); err != nil || addr+1<<20 > 0x10000000 {
		t.Errorf("initrd_addr_max ignored: %#x %v", addr, err)
	}
	// 4 GiB of RAM: the initrd stays below the hole.
	big, _ := layout.RAM(4 << 30)
	if addr, err := PlaceInitrd(k, 10<<20, big); err != nil || addr+10<<20 > layout.LowRAMEnd {
		t.Errorf("4G: %#x %v", addr, err)
	}
	if _, err := PlaceInitrd(k, 600<<20, ram); err == nil || !strings.Contains(err.Error(), "larger than guest memory") {
		t.Errorf("huge initrd: %v", err)
	}
	if _, err := PlaceInitrd(k, 500<<20, ram); err == nil || !strings.Contains(err.Error(), "--memory") {
		t.Errorf("initrd overlapping kernel: %v", err)
	}
	if addr, err := PlaceInitrd(k, 0, ram); err != nil || addr != 0 {
		t.Error("no initrd")
	}
}

func TestBuildBootParamsELF(t *testing.T) {
	k := &Kernel{Format: FormatELF, Start: 0x1000000, End: 0x2000000, CmdlineMax: 2047, InitrdAddrMax: 0x7fffffff}
	ram, _ := layout.RAM(256 << 20)
	seed := bytes.Repeat([]byte{7}, 32)
	p := Params{Cmdline: "console=ttyS0", RAM: ram, InitrdAddr: 0xe000000, InitrdSize: 0x1234, RSDP: layout.ACPIStart, Seed: seed}
	bp, err := BuildBootParams(k, p)
	if err != nil {
		t.Fatal(err)
	}
	h := bp.Hdr
	if h.BootFlag != 0xaa55 || h.Header != HdrSMagic || h.TypeOfLoader != 0xff || h.CmdLinePtr != layout.Cmdline ||
		h.RamdiskImage != 0xe000000 || h.RamdiskSize != 0x1234 || h.SetupData != layout.SetupData || h.HardwareSubarch != 0 {
		t.Errorf("header %+v", h)
	}
	if bp.ACPIRSDPAddr != layout.ACPIStart || bp.Sentinel != 0 {
		t.Error("rsdp/sentinel")
	}
	e := layout.E820(ram)
	if int(bp.E820Entries) != len(e) || bp.E820Table[0].Size != layout.EBDAStart || bp.E820Table[2].Addr != layout.HighMemStart {
		t.Errorf("e820 %d %+v", bp.E820Entries, bp.E820Table[:4])
	}
	mem := testMem(t, 1<<20)
	if err := Write(mem, k, p); err != nil {
		t.Fatal(err)
	}
	cl := make([]byte, len(p.Cmdline)+1)
	mem.ReadAt(cl, layout.Cmdline)
	if string(cl) != "console=ttyS0\x00" {
		t.Errorf("cmdline %q", cl)
	}
	node := make([]byte, 48)
	mem.ReadAt(node, layout.SetupData)
	if !bytes.Equal(node, RNGSeedNode(seed)) {
		t.Error("seed node")
	}
	zp := make([]byte, 4096)
	mem.ReadAt(zp, layout.ZeroPage)
	back, _ := DecodeBootParams(zp)
	if back.Hdr != bp.Hdr || back.E820Table != bp.E820Table {
		t.Error("zero page in memory differs")
	}

	// No seed, no initrd, no ACPI.
	bp, _ = BuildBootParams(k, Params{RAM: ram})
	if bp.Hdr.SetupData != 0 || bp.Hdr.RamdiskImage != 0 || bp.ACPIRSDPAddr != 0 {
		t.Error("optional fields set")
	}
	if _, err := BuildBootParams(k, Params{Cmdline: strings.Repeat("x", 2048), RAM: ram}); err == nil {
		t.Error("overlong command line accepted")
	}
	if _, err := BuildBootParams(k, Params{Cmdline: "a\x00b", RAM: ram}); err == nil {
		t.Error("NUL in command line accepted")
	}
}

func TestBuildBootParamsBzImage(t *testing.T) {
	img := makeBzImage(0x020f, XLFKernel64, 0x1000000, 0x100000, make([]byte, 0x400))
	img[0x1f2] = 0x42 // root_flags: copied from the image
	k, err := Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	ram, _ := layout.RAM(64 << 20)
	bp, err := BuildBootParams(k, Params{Cmdline: "quiet", RAM: ram})
	if err != nil {
		t.Fatal(err)
	}
	if bp.Hdr.Version != 0x020f || bp.Hdr.RootFlags != 0x42 || bp.Hdr.TypeOfLoader != 0xff || bp.Hdr.Loadflags&LoadedHigh == 0 ||
		bp.Hdr.CmdLinePtr != layout.Cmdline || bp.Hdr.PrefAddress != 0x1000000 {
		t.Errorf("%+v", bp.Hdr)
	}
	// A kernel with a short cmdline_size limits the command line.
	k.CmdlineMax = 10
	if _, err := BuildBootParams(k, Params{Cmdline: "console=ttyS0", RAM: ram}); err == nil {
		t.Error("command line longer than cmdline_size accepted")
	}
}
