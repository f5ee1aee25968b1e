package acpi

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestIASLDisassembles cross-checks the tables with ACPICA's own
// disassembler (acpica-tools), when it is installed: every table must
// disassemble without errors and the DSDT must contain the objects.
func TestIASLDisassembles(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl (acpica-tools) not installed: ", err)
	}
	cfg := testConfig()
	blob, rsdp, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tabs := parse(t, blob, cfg.Base, rsdp)
	dir := t.TempDir()
	var facs []byte
	if f := tabs["FACP"]; f != nil {
		a := binary.LittleEndian.Uint64(f[fadtXFirmware:]) - cfg.Base
		facs = blob[a : a+64]
	}
	tabs["FACS"] = facs
	for sig, tb := range tabs {
		p := filepath.Join(dir, strings.ToLower(sig)+".dat")
		if err := os.WriteFile(p, tb, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(iasl, "-d", p)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("iasl -d %s: %v\n%s", sig, err, out)
			continue
		}
		dsl, err := os.ReadFile(strings.TrimSuffix(p, ".dat") + ".dsl")
		if err != nil {
			t.Errorf("%s: no disassembly: %v\n%s", sig, err, out)
			continue
		}
		text := string(dsl)
		for _, bad := range []string{"**** ", "Invalid", "Error"} {
			if strings.Contains(text, bad) {
				t.Errorf("%s disassembly contains %q:\n%s", sig, bad, text)
			}
		}
		if sig == "DSDT" {
			for _, want := range []string{`Device (PCI0)`, `EisaId ("PNP0A08")`, `Name (\_S5, Package (0x02)`, `"QEMU0001"`,
				`EisaId ("PNP0501")`, `WordBusNumber`, `QWordMemory`, `DWordMemory`, `Memory32Fixed`, `IO (Decode16`,
				`WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,`, `0xC000,             // Range Minimum`,
				`0xFFFF,             // Range Maximum`} {
				if !strings.Contains(text, want) {
					t.Errorf("DSDT disassembly lacks %q:\n%s", want, text)
				}
			}
		}
		if testing.Verbose() && (sig == "DSDT" || sig == "FACP") {
			t.Logf("%s:\n%s", sig, text)
		}
	}
}
