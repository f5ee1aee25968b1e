package acpi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"godvm/addr"
)

func testConfig() Config {
	return Config{
		Base:       0xe0000,
		CPUs:       4,
		ECAM:       0xe000_0000,
		ECAMBusEnd: 255,
		Mem32:      addr.Range{Base: 0xc000_0000, Size: 0x2000_0000},
		Mem64:      addr.Range{Base: 0x10_0000_0000, Size: 0x10_0000_0000},
		IO:         addr.Range{Base: 0xc000, Size: 0x4000},
		LAPIC:      0xfee00000, IOAPIC: 0xfec00000,
		PCIConfigPort: 0xcf8,
		PM1aEvent:     0x600, PM1aControl: 0x604, SCI: 9, PITGSI: 2,
		ResetPort: 0xcf9, ResetValue: 6,
		COM1Port: 0x3f8, COM1IRQ: 4,
		PVPanicPort: 0x505,
	}
}

// tables maps signature -> table bytes, found by following RSDP -> XSDT.
func parse(t *testing.T, blob []byte, base, rsdp uint64) map[string][]byte {
	t.Helper()
	at := func(addr uint64, n int) []byte {
		if addr < base || addr+uint64(n) > base+uint64(len(blob)) {
			t.Fatalf("pointer %#x+%d outside the blob", addr, n)
		}
		return blob[addr-base : addr-base+uint64(n)]
	}
	r := at(rsdp, 36)
	if string(r[:8]) != "RSD PTR " || r[15] != 2 || binary.LittleEndian.Uint32(r[20:]) != 36 {
		t.Fatalf("RSDP %q rev %d", r[:8], r[15])
	}
	if sum(r[:20]) != 0 || sum(r) != 0 {
		t.Fatal("RSDP checksums")
	}
	if rsdp%16 != 0 || rsdp < 0xe0000 || rsdp >= 0x100000 {
		t.Fatalf("RSDP at %#x not findable by the BIOS-area scan", rsdp)
	}
	out := map[string][]byte{}
	table := func(addr uint64) []byte {
		h := at(addr, 36)
		tb := at(addr, int(binary.LittleEndian.Uint32(h[4:])))
		if sum(tb) != 0 {
			t.Errorf("%s checksum", tb[:4])
		}
		if addr%8 != 0 {
			t.Errorf("%s misaligned at %#x", tb[:4], addr)
		}
		out[string(tb[:4])] = tb
		return tb
	}
	x := table(binary.LittleEndian.Uint64(r[24:]))
	if string(x[:4]) != "XSDT" {
		t.Fatal("XSDT signature")
	}
	for i := 36; i < len(x); i += 8 {
		table(binary.LittleEndian.Uint64(x[i:]))
	}
	rs := table(uint64(binary.LittleEndian.Uint32(r[16:])))
	if string(rs[:4]) != "RSDT" || len(rs) != 36+4*(len(x)-36)/8 {
		t.Fatal("RSDT")
	}
	f := out["FACP"]
	if f == nil {
		t.Fatal("no FADT")
	}
	table(binary.LittleEndian.Uint64(f[fadtXDSDT:]))
	facs := at(binary.LittleEndian.Uint64(f[fadtXFirmware:]), 64)
	if string(facs[:4]) != "FACS" || binary.LittleEndian.Uint32(facs[4:]) != 64 {
		t.Fatal("FACS")
	}
	if binary.LittleEndian.Uint64(f[fadtXFirmware:])%64 != 0 {
		t.Fatal("FACS not 64-byte aligned")
	}
	return out
}

func sum(b []byte) byte {
	var s byte
	for _, x := range b {
		s += x
	}
	return s
}

func TestTables(t *testing.T) {
	cfg := testConfig()
	blob, rsdp, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rsdp != 0xe0000 {
		t.Fatalf("RSDP at %#x", rsdp)
	}
	if len(blob) > 0x10000 {
		t.Fatalf("tables are %d bytes, more than the 64 KiB area", len(blob))
	}
	tabs := parse(t, blob, cfg.Base, rsdp)
	for _, s := range []string{"FACP", "APIC", "MCFG", "DSDT", "XSDT", "RSDT"} {
		if tabs[s] == nil {
			t.Errorf("missing %s", s)
		}
	}
	le := binary.LittleEndian

	f := tabs["FACP"]
	if len(f) != 276 || f[8] != 6 {
		t.Fatalf("FADT length %d revision %d", len(f), f[8])
	}
	if le.Uint32(f[fadtDSDT:]) != uint32(le.Uint64(f[fadtXDSDT:])) || le.Uint32(f[fadtFirmwareCtrl:]) != uint32(le.Uint64(f[fadtXFirmware:])) {
		t.Error("32/64-bit DSDT or FACS pointers disagree")
	}
	checks := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"SCI_INT", uint64(le.Uint16(f[fadtSCI:])), 9},
		{"PM1a_EVT_BLK", uint64(le.Uint32(f[fadtPM1aEvt:])), 0x600},
		{"PM1a_CNT_BLK", uint64(le.Uint32(f[fadtPM1aCnt:])), 0x604},
		{"PM1_EVT_LEN", uint64(f[fadtPM1EvtLen]), 4},
		{"PM1_CNT_LEN", uint64(f[fadtPM1CntLen]), 2},
		{"PM_TMR_BLK", uint64(le.Uint32(f[fadtPMTmr:])), 0},
		{"SMI_CMD", uint64(le.Uint32(f[48:])), 0},
		{"RESET_REG space", uint64(f[fadtResetReg]), 1},
		{"RESET_REG width", uint64(f[fadtResetReg+1]), 8},
		{"RESET_REG address", le.Uint64(f[fadtResetReg+4:]), 0xcf9},
		{"RESET_VALUE", uint64(f[fadtResetValue]), 6},
		{"X_PM1a_EVT_BLK", le.Uint64(f[fadtXPM1aEvt+4:]), 0x600},
		{"X_PM1a_CNT_BLK", le.Uint64(f[fadtXPM1aCnt+4:]), 0x604},
		{"X_PM1a_CNT_BLK space", uint64(f[fadtXPM1aCnt]), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("FADT %s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	flags := le.Uint32(f[fadtFlags:])
	if flags&fadtResetRegSup == 0 || flags&(1<<20) != 0 {
		t.Errorf("FADT flags %#x: want RESET_REG_SUP, not HW_REDUCED_ACPI", flags)
	}
	if le.Uint16(f[fadtBootArch:])&(1<<3) != 0 {
		t.Error("FADT says MSI not supported")
	}

	m := tabs["APIC"]
	if le.Uint32(m[36:]) != 0xfee00000 || le.Uint32(m[40:])&1 != 1 {
		t.Fatal("MADT LAPIC address/flags")
	}
	var cpus, ioapics, nmis int
	overrides := map[byte][2]uint32{}
	for off := 44; off < len(m); {
		typ, n := m[off], int(m[off+1])
		if n < 2 || off+n > len(m) {
			t.Fatalf("MADT entry at %d has length %d", off, n)
		}
		e := m[off : off+n]
		switch typ {
		case madtLAPIC:
			if n != 8 || e[2] != byte(cpus) || e[3] != byte(cpus) || le.Uint32(e[4:]) != 1 {
				t.Errorf("LAPIC entry %x", e)
			}
			cpus++
		case madtIOAPIC:
			if n != 12 || le.Uint32(e[4:]) != 0xfec00000 || le.Uint32(e[8:]) != 0 || e[2] != 4 {
				t.Errorf("IOAPIC entry %x", e)
			}
			ioapics++
		case madtOverride:
			if n != 10 {
				t.Errorf("override entry %x", e)
			}
			overrides[e[3]] = [2]uint32{le.Uint32(e[4:]), uint32(le.Uint16(e[8:]))}
		case madtLAPICNMI:
			nmis++
		default:
			t.Errorf("unexpected MADT entry type %d", typ)
		}
		off += n
	}
	if cpus != 4 || ioapics != 1 || nmis != 1 {
		t.Errorf("MADT: %d CPUs, %d IOAPICs, %d NMIs", cpus, ioapics, nmis)
	}
	if overrides[0] != [2]uint32{2, 0} || overrides[9] != [2]uint32{9, 0xd} {
		t.Errorf("overrides %v", overrides)
	}

	mc := tabs["MCFG"]
	if len(mc) != 60 || le.Uint64(mc[44:]) != 0xe000_0000 || le.Uint16(mc[52:]) != 0 || mc[54] != 0 || mc[55] != 255 {
		t.Fatalf("MCFG %x", mc)
	}

	// DSDT: parse the AML back and look for the objects.
	d := tabs["DSDT"]
	if d[8] != 2 {
		t.Fatal("DSDT revision (64-bit integers need 2)")
	}
	objs := map[string][]byte{}
	if err := walkAML(d[36:], "", objs); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{
		`\_SB_.PCI0._HID`: amlEISAID("PNP0A08"),
		`\_SB_.PCI0._CID`: amlEISAID("PNP0A03"),
		`\_SB_.PCI0._SEG`: {0},
		`\_SB_.PCI0._BBN`: {0},
		`\_SB_.COM1._HID`: {0x0c, 0x41, 0xd0, 0x05, 0x01},
		`\_SB_.PEVT._HID`: append([]byte{0x0d}, "QEMU0001\x00"...),
		`\_SB_.MRES._HID`: amlEISAID("PNP0C02"),
		`\_S5_`:           {0x12, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x05},
	}
	for k, v := range want {
		if !bytes.Equal(objs[k], v) {
			t.Errorf("%s = %x, want %x", k, objs[k], v)
		}
	}
	// The host bridge's _CRS covers the config ports and the windows.
	res := parseResources(t, objs[`\_SB_.PCI0._CRS`])
	for _, w := range []string{"bus 0-255", "io cf8+8", "io c000-ffff", "mem c0000000-dfffffff", "mem 1000000000-1fffffffff"} {
		if !res[w] {
			t.Errorf("PCI0._CRS lacks %s (has %v)", w, res)
		}
	}
	// ... and forwards no other ports: none of godvm's own.
	if len(res) != 5 {
		t.Errorf("PCI0._CRS has more than the config ports and the windows: %v", res)
	}
	if r := parseResources(t, objs[`\_SB_.PEVT._CRS`]); !r["io 505+1"] {
		t.Errorf("pvpanic _CRS %v", r)
	}
	if r := parseResources(t, objs[`\_SB_.COM1._CRS`]); !r["io 3f8+8"] || !r["irq 4"] {
		t.Errorf("COM1 _CRS %v", r)
	}
	if r := parseResources(t, objs[`\_SB_.MRES._CRS`]); !r["mem32 e0000000+10000000"] {
		t.Errorf("MRES _CRS %v", r)
	}
}

func TestBadConfig(t *testing.T) {
	for i, mod := range []func(*Config){
		func(c *Config) { c.CPUs = 0 },
		func(c *Config) { c.CPUs = 256 },
		func(c *Config) { c.Base = 0xe0008 },
		func(c *Config) { c.ECAM = 0 },
		func(c *Config) { c.Mem32 = addr.Range{Base: 0xf000_0000, Size: 0x2000_0000} },
		func(c *Config) { c.OEMID = "TOOLONGID" },
		func(c *Config) { c.IO = addr.Range{Base: 0xf000, Size: 0x2000} },
		func(c *Config) { c.LAPIC = 0 },
		func(c *Config) { c.PCIConfigPort = 0 },
		func(c *Config) { c.PM1aControl = 0 },
		func(c *Config) { c.ResetPort = 0 },
		func(c *Config) { c.COM1IRQ = 0 },
	} {
		c := testConfig()
		mod(&c)
		if _, _, err := Build(c); err == nil {
			t.Errorf("case %d: bad config accepted", i)
		}
	}
}

func TestPMTimerAndNoMem64(t *testing.T) {
	c := testConfig()
	c.PMTimer = 0x608
	c.Mem64 = addr.Range{}
	c.IO = addr.Range{}
	c.COM1Port = 0
	blob, rsdp, err := Build(c)
	if err != nil {
		t.Fatal(err)
	}
	tabs := parse(t, blob, c.Base, rsdp)
	f := tabs["FACP"]
	if binary.LittleEndian.Uint32(f[fadtPMTmr:]) != 0x608 || f[fadtPMTmrLen] != 4 || binary.LittleEndian.Uint32(f[fadtFlags:])&fadtTmrValExt == 0 {
		t.Fatal("PM timer fields")
	}
	objs := map[string][]byte{}
	if err := walkAML(tabs["DSDT"][36:], "", objs); err != nil {
		t.Fatal(err)
	}
	if objs[`\_SB_.COM1._HID`] != nil {
		t.Fatal("COM1 described although disabled")
	}
	for k := range parseResources(t, objs[`\_SB_.PCI0._CRS`]) {
		if k == "mem 1000000000-1fffffffff" {
			t.Fatal("64-bit window described although empty")
		}
		if k != "io cf8+8" && strings.HasPrefix(k, "io ") {
			t.Fatalf("I/O window %s described although empty", k)
		}
	}
}

// Known encodings (ACPI spec §20 grammar; byte sequences as iasl emits
// them).
func TestAMLEncodings(t *testing.T) {
	cases := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"Name(_S5,Package(){5,5})", amlNameObj("_S5", amlPackageObj(amlInt(5), amlInt(5))),
			[]byte{0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x05}},
		{"Name(_HID,EISAID(PNP0A03))", amlNameObj("_HID", amlEISAID("PNP0A03")),
			[]byte{0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03}},
		{"Name(_UID,0)", amlNameObj("_UID", amlInt(0)), []byte{0x08, '_', 'U', 'I', 'D', 0x00}},
		{"One", amlInt(1), []byte{0x01}},
		{"Ones", amlInt(^uint64(0)), []byte{0xff}},
		{"0x1234", amlInt(0x1234), []byte{0x0b, 0x34, 0x12}},
		{"0x12345678", amlInt(0x12345678), []byte{0x0c, 0x78, 0x56, 0x34, 0x12}},
		{"0x100000000", amlInt(1 << 32), []byte{0x0e, 0, 0, 0, 0, 1, 0, 0, 0}},
		{"String", amlStr("ab"), []byte{0x0d, 'a', 'b', 0}},
		{`\_SB.PCI0`, nameString(`\_SB.PCI0`), []byte{'\\', 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0'}},
		{`A.B.C`, nameString("A.B.C"), []byte{0x2f, 3, 'A', '_', '_', '_', 'B', '_', '_', '_', 'C', '_', '_', '_'}},
		{"IO(Decode16,0xCF8,0xCF8,1,8)", resIO(0xcf8, 0xcf8, 1, 8), []byte{0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08}},
		{"IRQNoFlags(){4}", resIRQNoFlags(4), []byte{0x22, 0x10, 0x00}},
		{"ResourceTemplate(){}", resourceTemplate(), []byte{0x11, 0x05, 0x0a, 0x02, 0x79, 0x00}},
		{"Device(X){}", amlDeviceObj("X"), []byte{0x5b, 0x82, 0x05, 'X', '_', '_', '_'}},
		{"Scope(\\){}", amlScopeObj("\\"), []byte{0x10, 0x03, '\\', 0x00}},
	}
	for _, c := range cases {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s = % x, want % x", c.name, c.got, c.want)
		}
	}
	// EISA IDs: the well-known values.
	for id, v := range map[string]uint32{"PNP0A03": 0x030ad041, "PNP0A08": 0x080ad041, "PNP0501": 0x0105d041, "PNP0C02": 0x020cd041} {
		if got := eisaID(id); got != v {
			t.Errorf("EISAID(%s) = %#x, want %#x", id, got, v)
		}
	}
}

func TestPkgLength(t *testing.T) {
	cases := []struct {
		body int
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3f}},
		{63, []byte{0x41, 0x04}},     // 65 = 0x41: low nibble 1, then 0x04
		{0x0ffd, []byte{0x4f, 0xff}}, // 0xfff: the largest 2-byte length
		{0x0ffe, []byte{0x81, 0x00, 0x01}},
		{0xffffc, []byte{0x8f, 0xff, 0xff}},
		{0xffffd, []byte{0xc1, 0x00, 0x00, 0x01}}, // 0x100001
	}
	for _, c := range cases {
		got := pkgLength(c.body)
		if !bytes.Equal(got, c.want) {
			t.Errorf("pkgLength(%d) = % x, want % x", c.body, got, c.want)
		}
		if n, k := decodePkgLength(got); n != c.body+len(got) || k != len(got) {
			t.Errorf("decode(pkgLength(%d)) = %d,%d", c.body, n, k)
		}
	}
}

// decodePkgLength returns the encoded length and the encoding's size.
func decodePkgLength(b []byte) (int, int) {
	if len(b) == 0 {
		return -1, 0
	}
	k := int(b[0] >> 6)
	if k == 0 {
		return int(b[0] & 0x3f), 1
	}
	if len(b) < 1+k {
		return -1, 0
	}
	n := int(b[0] & 0xf)
	for i := 1; i <= k; i++ {
		n |= int(b[i]) << (4 + 8*(i-1))
	}
	return n, 1 + k
}

// walkAML parses the subset of AML the encoder produces and records every
// Name's object by its full path.
func walkAML(b []byte, scope string, out map[string][]byte) error {
	for len(b) > 0 {
		switch {
		case b[0] == amlName:
			path, n := readName(b[1:])
			obj, err := objLen(b[1+n:])
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			out[join(scope, path)] = b[1+n : 1+n+obj]
			b = b[1+n+obj:]
		case b[0] == amlScope || (b[0] == amlExtOp && len(b) > 1 && b[1] == amlDevice):
			op := 1
			if b[0] == amlExtOp {
				op = 2
			}
			l, k := decodePkgLength(b[op:])
			if l < 0 || op+l > len(b) {
				return fmt.Errorf("bad package length at % x", b[:min(len(b), 8)])
			}
			body := b[op+k : op+l]
			path, n := readName(body)
			if err := walkAML(body[n:], join(scope, path), out); err != nil {
				return err
			}
			b = b[op+l:]
		default:
			return fmt.Errorf("unexpected opcode %#x", b[0])
		}
	}
	return nil
}

func join(scope, path string) string {
	if len(path) > 0 && path[0] == '\\' {
		return path
	}
	if scope == `\` {
		return `\` + path
	}
	return scope + "." + path
}

func readName(b []byte) (string, int) {
	s, i := "", 0
	for i < len(b) && (b[i] == '\\' || b[i] == '^') {
		s += string(b[i])
		i++
	}
	segs := 1
	switch b[i] {
	case 0:
		return s, i + 1
	case amlDualName:
		segs, i = 2, i+1
	case amlMultiName:
		segs, i = int(b[i+1]), i+2
	}
	for k := 0; k < segs; k++ {
		if k > 0 {
			s += "."
		}
		s += string(b[i : i+4])
		i += 4
	}
	return s, i
}

// objLen returns the length of the data object at b.
func objLen(b []byte) (int, error) {
	switch b[0] {
	case amlZero, amlOne, amlOnes:
		return 1, nil
	case amlBytePrefix:
		return 2, nil
	case amlWordPrefix:
		return 3, nil
	case amlDWord:
		return 5, nil
	case amlQWord:
		return 9, nil
	case amlString:
		return bytes.IndexByte(b, 0) + 1, nil
	case amlBuffer, amlPackage:
		l, _ := decodePkgLength(b[1:])
		if l < 0 || 1+l > len(b) {
			return 0, fmt.Errorf("bad package length")
		}
		return 1 + l, nil
	}
	return 0, fmt.Errorf("unknown data object %#x", b[0])
}

// parseResources decodes a ResourceTemplate buffer into short strings.
func parseResources(t *testing.T, buf []byte) map[string]bool {
	t.Helper()
	if len(buf) == 0 || buf[0] != amlBuffer {
		t.Fatalf("not a buffer: %x", buf)
	}
	l, k := decodePkgLength(buf[1:])
	body := buf[1+k : 1+l]
	n, _ := objLen(body)
	size := body[:n]
	data := body[n:]
	var declared int
	switch size[0] {
	case amlBytePrefix:
		declared = int(size[1])
	case amlWordPrefix:
		declared = int(binary.LittleEndian.Uint16(size[1:]))
	}
	if declared != len(data) {
		t.Fatalf("buffer size %d, data %d", declared, len(data))
	}
	le := binary.LittleEndian
	out := map[string]bool{}
	for len(data) > 0 {
		tag := data[0]
		if tag&0x80 == 0 { // small
			n := int(tag & 7)
			d := data[1 : 1+n]
			switch tag >> 3 {
			case 0x08:
				out[fmt.Sprintf("io %x+%x", le.Uint16(d[1:]), d[6])] = true
			case 0x04:
				for i := 0; i < 16; i++ {
					if le.Uint16(d)&(1<<i) != 0 {
						out[fmt.Sprintf("irq %d", i)] = true
					}
				}
			case 0x0f:
				if len(data) != 2 {
					t.Fatal("end tag not last")
				}
				return out
			}
			data = data[1+n:]
			continue
		}
		n := int(le.Uint16(data[1:]))
		d := data[3 : 3+n]
		switch tag {
		case 0x86:
			out[fmt.Sprintf("mem32 %x+%x", le.Uint32(d[1:]), le.Uint32(d[5:]))] = true
		case 0x88:
			min, max := le.Uint16(d[5:]), le.Uint16(d[7:])
			if le.Uint16(d[11:]) != max-min+1 {
				t.Errorf("word descriptor length mismatch %x", d)
			}
			switch d[0] {
			case resTypeBus:
				out[fmt.Sprintf("bus %d-%d", min, max)] = true
			case resTypeIO:
				out[fmt.Sprintf("io %x-%x", min, max)] = true
			}
		case 0x87:
			min, max := le.Uint32(d[7:]), le.Uint32(d[11:])
			if le.Uint32(d[19:]) != max-min+1 {
				t.Errorf("dword descriptor length mismatch")
			}
			out[fmt.Sprintf("mem %x-%x", min, max)] = true
		case 0x8a:
			min, max := le.Uint64(d[11:]), le.Uint64(d[19:])
			if le.Uint64(d[35:]) != max-min+1 {
				t.Errorf("qword descriptor length mismatch")
			}
			out[fmt.Sprintf("mem %x-%x", min, max)] = true
		default:
			t.Errorf("unknown resource tag %#x", tag)
		}
		data = data[3+n:]
	}
	t.Fatal("no end tag")
	return nil
}
