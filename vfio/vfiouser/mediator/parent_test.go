package mediator

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godvm/devices/dsa"
)

func TestParseParent(t *testing.T) {
	for in, want := range map[string]ParentSpec{
		"":                  {Model: true},
		"model":             {Model: true},
		"vfio=6a:01.0":      {VFIO: "0000:6a:01.0"},
		"vfio=0000:6A:01.0": {VFIO: "0000:6a:01.0"},
		"vfio=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001": {VFIO: "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"},
	} {
		got, err := ParseParent(in)
		if err != nil || got != want {
			t.Errorf("ParseParent(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"hw", "vfio=", "vfio=zz", "vfio=0000:6a:01.8", "pci=6a:01.0"} {
		if _, err := ParseParent(in); err == nil {
			t.Errorf("ParseParent(%q) accepted", in)
		}
	}
}

func TestParseVDev(t *testing.T) {
	v, err := ParseVDev("socket=/run/a.sock,wqs=2,wq-size=32,groups=1,engines=2")
	if err != nil || v != (VDevSpec{Socket: "/run/a.sock", WQs: 2, WQSize: 32, Groups: 1, Engines: 2}) {
		t.Fatalf("%+v %v", v, err)
	}
	for _, in := range []string{"", "wqs=2", "socket=", "socket=a,wqs=0", "socket=a,wqs=-1", "socket=a,x=1", "socket=a,wqs"} {
		if _, err := ParseVDev(in); err == nil {
			t.Errorf("ParseVDev(%q) accepted", in)
		}
	}
}

// TestShares: defaults, exact fits and refusals of a request past what is
// left; each guest's device has its share's shape.
func TestShares(t *testing.T) {
	m, err := New(DefaultParent(), false, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := m.Add(VDevSpec{Socket: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if c := a.Config; c.WQs != 8 || c.WQSize != 128 || c.Groups != 4 || c.Engines != 4 {
		t.Fatalf("default share %+v, want 8 WQs/128/4/4", c)
	}
	if _, err := m.Add(VDevSpec{Socket: "b", WQs: 9}); err == nil || !strings.Contains(err.Error(), "only 8 of the parent's 16 WQs") {
		t.Fatalf("over-large share: %v", err)
	}
	b, err := m.Add(VDevSpec{Socket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Share.FirstWQ != 8 || b.Share.FirstEngine != 4 || b.Share.FirstGroup != 4 {
		t.Fatalf("second share %+v", b.Share)
	}
	if _, err := m.Add(VDevSpec{Socket: "c"}); err == nil || !strings.Contains(err.Error(), "fully assigned") {
		t.Fatalf("third share on a full parent: %v", err)
	}
	var buf [8]byte
	b.Backend().ReadRegion(0, dsa.RegWQCap, buf[:])
	if wqs, size := int(buf[2]), int(buf[0])|int(buf[1])<<8; wqs != 8 || size != 128 {
		t.Fatalf("guest B's WQCAP: %d WQs, %d entries", wqs, size)
	}
}

// TestOpenParentChecks: with a fake sysfs, each missing piece of a real
// parent is named.
func TestOpenParentChecks(t *testing.T) {
	root := t.TempDir()
	dev := func(addr, vendor, device, driver string) {
		d := filepath.Join(root, "bus/pci/devices", addr)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "vendor"), []byte(vendor+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "device"), []byte(device+"\n"), 0o644)
		if driver != "" {
			os.MkdirAll(filepath.Join(root, "bus/pci/drivers", driver), 0o755)
			os.Symlink(filepath.Join(root, "bus/pci/drivers", driver), filepath.Join(d, "driver"))
		}
	}
	dev("0000:00:02.0", "0x8086", "0x0d57", "")
	dev("0000:6a:01.0", "0x8086", "0x0b25", "idxd")
	dev("0000:6b:01.0", "0x8086", "0x0b25", "vfio-pci")
	for addr, want := range map[string]string{
		"0000:7f:01.0": "no such PCI device",
		"0000:00:02.0": "8086:0d57 is not an Intel DSA",
		"0000:6a:01.0": "bound to driver idxd; bind it to vfio-pci",
		"0000:6b:01.0": "vfio:", // found and bound; the VFIO open is next (no /dev/vfio here)
	} {
		_, err := OpenParent(ParentSpec{VFIO: addr}, root)
		if err == nil || !strings.Contains(err.Error(), want) || errors.Is(err, ErrRealParent) {
			t.Errorf("%s: %v, want an error containing %q", addr, err, want)
		}
	}
}
