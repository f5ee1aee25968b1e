package mdev

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSysfs builds a tree with one parent offering two types, and one
// existing instance.
func fakeSysfs(t *testing.T) Sysfs {
	root := t.TempDir()
	mk := func(p, content string) {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := "class/mdev_bus/0000:6a:01.0/mdev_supported_types/"
	mk(base+"idxd-1dwq-v1/available_instances", "3\n")
	mk(base+"idxd-1dwq-v1/device_api", "vfio-pci\n")
	mk(base+"idxd-1dwq-v1/name", "1dwq-v1\n")
	mk(base+"idxd-1dwq-v1/create", "")
	mk(base+"idxd-1swq-v1/available_instances", "0\n")
	mk(base+"idxd-1swq-v1/create", "")
	uuid := "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
	mk("bus/mdev/devices/"+uuid+"/remove", "")
	os.Symlink("../../../devices/pci0000:6a/0000:6a:01.0/mdev_supported_types/idxd-1dwq-v1",
		filepath.Join(root, "bus/mdev/devices", uuid, "mdev_type"))
	return Sysfs(root)
}

func TestTypesAndDevices(t *testing.T) {
	s := fakeSysfs(t)
	ts, err := s.Types()
	if err != nil || len(ts) != 2 {
		t.Fatalf("types %+v %v", ts, err)
	}
	if ts[0].ID != "idxd-1dwq-v1" || ts[0].Available != 3 || ts[0].DeviceAPI != "vfio-pci" || ts[0].Parent != "0000:6a:01.0" {
		t.Fatalf("type %+v", ts[0])
	}
	ds, err := s.Devices()
	if err != nil || len(ds) != 1 || ds[0].Type != "idxd-1dwq-v1" || ds[0].Parent != "0000:6a:01.0" {
		t.Fatalf("devices %+v %v", ds, err)
	}
}

func TestCreateRemove(t *testing.T) {
	s := fakeSysfs(t)
	uuid, err := s.Create("", "idxd-1dwq-v1", "")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(string(s) + "/class/mdev_bus/0000:6a:01.0/mdev_supported_types/idxd-1dwq-v1/create")
	if string(got) != uuid || !uuidRE.MatchString(uuid) {
		t.Fatalf("wrote %q for %q", got, uuid)
	}
	if _, err := s.Create("", "idxd-1swq-v1", ""); err == nil || !strings.Contains(err.Error(), "available_instances is 0") {
		t.Fatalf("exhausted type: %v", err)
	}
	if _, err := s.Create("", "nope", ""); err == nil || !strings.Contains(err.Error(), "no parent offers type") {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := s.Create("", "idxd-1dwq-v1", "not-a-uuid"); err == nil {
		t.Fatal("bad uuid accepted")
	}
	u := "83B8F4F2-509F-382F-3C1E-E6BFE0FA1001"
	if err := s.Remove(u); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(string(s) + "/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001/remove")
	if string(got) != "1" {
		t.Fatalf("remove wrote %q", got)
	}
	if err := s.Remove("00000000-0000-0000-0000-000000000000"); err == nil || !strings.Contains(err.Error(), "no mdev") {
		t.Fatalf("unknown uuid: %v", err)
	}
}

func TestNoMdevBus(t *testing.T) {
	s := Sysfs(t.TempDir())
	if _, err := s.Types(); err == nil || !strings.Contains(err.Error(), "no mediated-device parents") {
		t.Fatalf("%v", err)
	}
	if ds, err := s.Devices(); err != nil || len(ds) != 0 {
		t.Fatalf("%v %v", ds, err)
	}
}
