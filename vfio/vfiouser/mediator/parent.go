package mediator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"godvm/devices/dsa"
	"godvm/vfio"
	vfiokernel "godvm/vfio/kernel"
)

// ParentSpec is --parent: the software model, or a real DSA opened through
// VFIO (a PCI address or an mdev UUID).
type ParentSpec struct {
	Model bool
	VFIO  string // PCI address (0000:6a:01.0) or mdev UUID
}

var pciAddrRE = regexp.MustCompile(`^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$`)

// ParseParent parses --parent: "model" (or empty) or "vfio=PCI-ADDRESS|UUID".
func ParseParent(s string) (ParentSpec, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "model" {
		return ParentSpec{Model: true}, nil
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok || k != "vfio" {
		return ParentSpec{}, fmt.Errorf("--parent %q: want model or vfio=PCI-ADDRESS|UUID", s)
	}
	if !pciAddrRE.MatchString(v) && !vfiokernel.IsUUID(v) {
		return ParentSpec{}, fmt.Errorf("--parent vfio=%q: not a PCI address (0000:6a:01.0) or an mdev UUID", v)
	}
	v = strings.ToLower(v)
	if len(v) == 7 {
		v = "0000:" + v
	}
	return ParentSpec{VFIO: v}, nil
}

// DSA PCI device IDs a VFIO parent may be: DSA 1.0 (Sapphire Rapids) and
// DSA 2.0 (Granite Rapids).
var dsaDeviceIDs = map[uint64]bool{dsa.DeviceDSA: true, 0x11fb: true}

// ErrRealParent says that a real DSA was found and opened but that this
// build cannot mediate it (docs/dsa-mediator.md describes what is needed).
var ErrRealParent = errors.New("mediating a real DSA needs a PASID per guest (iommufd), IMS-backed interrupts and a portal per guest WQ; this build implements the design only (docs/dsa-mediator.md): use --parent model")

// HardwareParent is what OpenParent learned about a real DSA.
type HardwareParent struct {
	Spec    string
	WQs     int
	WQSize  int
	Groups  int
	Engines int
}

// OpenParent checks a --parent vfio=... device as far as the host allows:
// the device exists in sysfs (root: "/sys" normally), is a DSA, is bound
// to vfio-pci (or is an mdev), opens through VFIO and shows DSA
// capability registers. The error says the first thing that is missing;
// with everything present it returns the parent's capabilities and
// ErrRealParent, since the mediation of real hardware is not built.
func OpenParent(p ParentSpec, sysfs string, opts ...vfiokernel.Option) (*HardwareParent, error) {
	if p.Model || p.VFIO == "" {
		return nil, errors.New("OpenParent: not a VFIO parent")
	}
	if sysfs == "" {
		sysfs = "/sys"
	}
	spec := p.VFIO
	if !vfiokernel.IsUUID(spec) {
		dir := filepath.Join(sysfs, "bus/pci/devices", spec)
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("--parent vfio=%s: no such PCI device on this host (%s missing)", spec, dir)
		}
		ven, _ := readHex(filepath.Join(dir, "vendor"))
		dev, _ := readHex(filepath.Join(dir, "device"))
		if ven != dsa.VendorIntel || !dsaDeviceIDs[dev] {
			return nil, fmt.Errorf("--parent vfio=%s: device %04x:%04x is not an Intel DSA (8086:0b25 or 8086:11fb)", spec, ven, dev)
		}
		drv, err := os.Readlink(filepath.Join(dir, "driver"))
		if err != nil || filepath.Base(drv) != "vfio-pci" {
			name := "no driver"
			if err == nil {
				name = "driver " + filepath.Base(drv)
			}
			return nil, fmt.Errorf("--parent vfio=%s: the DSA is bound to %s; bind it to vfio-pci first (echo %s > /sys/bus/pci/devices/%s/driver/unbind; echo vfio-pci > .../driver_override)", spec, name, spec, spec)
		}
	}
	d, err := vfiokernel.Open(spec, append([]vfiokernel.Option{vfiokernel.WithSysfs(sysfs)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("--parent vfio=%s: %w", spec, err)
	}
	defer d.Close()
	hp := &HardwareParent{Spec: spec}
	var id [4]byte
	if err := d.ReadRegion(vfio.PCIConfigRegionIndex, 0, id[:]); err != nil {
		return nil, fmt.Errorf("--parent vfio=%s: reading config space: %w", spec, err)
	}
	if v := binary.LittleEndian.Uint32(id[:]); uint16(v) != dsa.VendorIntel || !dsaDeviceIDs[uint64(v>>16)] {
		return nil, fmt.Errorf("--parent vfio=%s: config space says %08x, not a DSA", spec, v)
	}
	var caps [8]byte
	read := func(off uint64) uint64 {
		if err == nil {
			err = d.ReadRegion(0, off, caps[:])
		}
		return binary.LittleEndian.Uint64(caps[:])
	}
	wq, grp, eng := read(dsa.RegWQCap), read(dsa.RegGrpCap), read(dsa.RegEngCap)
	if err != nil {
		return nil, fmt.Errorf("--parent vfio=%s: reading BAR0: %w", spec, err)
	}
	hp.WQSize, hp.WQs = int(wq&0xffff), int(wq>>16&0xff)
	hp.Groups, hp.Engines = int(grp&0xff), int(eng&0xff)
	return hp, fmt.Errorf("--parent vfio=%s: a DSA with %d WQs (%d entries), %d groups, %d engines: %w",
		spec, hp.WQs, hp.WQSize, hp.Groups, hp.Engines, ErrRealParent)
}

func readHex(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 64)
}
