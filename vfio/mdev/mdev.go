// Package mdev manages mediated devices through sysfs
// (Documentation/driver-api/vfio-mediated-device.rst): list the types
// parents offer, create an instance by writing a UUID to
// mdev_supported_types/<type>/create, remove it through
// /sys/bus/mdev/devices/<UUID>/remove. The sysfs root is a parameter so the
// logic is tested against a fake tree.
package mdev

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Sysfs is a sysfs root ("/sys" on a real host).
type Sysfs string

// Type is one mdev type a parent device offers.
type Type struct {
	Parent      string // parent device name (e.g. 0000:6a:01.0)
	ID          string // type id, "<driver>-<name>"
	Name        string
	Description string
	DeviceAPI   string
	Available   int
}

// Device is one mdev instance.
type Device struct {
	UUID   string
	Parent string
	Type   string
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func (s Sysfs) path(p ...string) string { return filepath.Join(append([]string{string(s)}, p...)...) }

func readAttr(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Types lists every type of every parent under class/mdev_bus.
func (s Sysfs) Types() ([]Type, error) {
	parents, err := os.ReadDir(s.path("class/mdev_bus"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("mdev: %s does not exist: no mediated-device parents on this host (vfio_mdev and a vendor driver must be loaded)", s.path("class/mdev_bus"))
	}
	if err != nil {
		return nil, fmt.Errorf("mdev: %w", err)
	}
	var out []Type
	for _, p := range parents {
		dir := s.path("class/mdev_bus", p.Name(), "mdev_supported_types")
		types, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, t := range types {
			td := filepath.Join(dir, t.Name())
			avail, _ := strconv.Atoi(readAttr(filepath.Join(td, "available_instances")))
			out = append(out, Type{Parent: p.Name(), ID: t.Name(), Name: readAttr(filepath.Join(td, "name")),
				Description: readAttr(filepath.Join(td, "description")), DeviceAPI: readAttr(filepath.Join(td, "device_api")), Available: avail})
		}
	}
	return out, nil
}

// Devices lists the mdev instances under bus/mdev/devices.
func (s Sysfs) Devices() ([]Device, error) {
	es, err := os.ReadDir(s.path("bus/mdev/devices"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mdev: %w", err)
	}
	var out []Device
	for _, e := range es {
		d := Device{UUID: e.Name()}
		if l, err := os.Readlink(s.path("bus/mdev/devices", e.Name(), "mdev_type")); err == nil {
			// .../<parent>/mdev_supported_types/<type>
			d.Type = filepath.Base(l)
			d.Parent = filepath.Base(filepath.Dir(filepath.Dir(l)))
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UUID < out[j].UUID })
	return out, nil
}

// NewUUID returns a random (version 4) UUID.
func NewUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Create makes an instance of typ (on parent, or on the only parent that
// offers typ when parent is empty) named uuid (a fresh one when empty). It
// returns the UUID.
func (s Sysfs) Create(parent, typ, uuid string) (string, error) {
	if uuid == "" {
		uuid = NewUUID()
	}
	uuid = strings.ToLower(uuid)
	if !uuidRE.MatchString(uuid) {
		return "", fmt.Errorf("mdev: %q is not a UUID", uuid)
	}
	types, err := s.Types()
	if err != nil {
		return "", err
	}
	var match []Type
	for _, t := range types {
		if t.ID == typ && (parent == "" || t.Parent == parent) {
			match = append(match, t)
		}
	}
	switch {
	case len(match) == 0:
		var ids []string
		for _, t := range types {
			ids = append(ids, t.Parent+"/"+t.ID)
		}
		return "", fmt.Errorf("mdev: no parent offers type %q (available: %s)", typ, strings.Join(ids, ", "))
	case len(match) > 1:
		return "", fmt.Errorf("mdev: type %q is offered by %d parents; name one with --parent", typ, len(match))
	}
	t := match[0]
	if t.Available <= 0 {
		return "", fmt.Errorf("mdev: no instances of %s left on %s (available_instances is 0)", typ, t.Parent)
	}
	create := s.path("class/mdev_bus", t.Parent, "mdev_supported_types", t.ID, "create")
	if err := os.WriteFile(create, []byte(uuid), 0); err != nil {
		return "", fmt.Errorf("mdev: creating %s: %w", uuid, err)
	}
	return uuid, nil
}

// Remove removes the instance uuid.
func (s Sysfs) Remove(uuid string) error {
	uuid = strings.ToLower(uuid)
	if !uuidRE.MatchString(uuid) {
		return fmt.Errorf("mdev: %q is not a UUID", uuid)
	}
	dir := s.path("bus/mdev/devices", uuid)
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("mdev: no mdev %s (%s does not exist)", uuid, dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "remove"), []byte("1"), 0); err != nil {
		return fmt.Errorf("mdev: removing %s: %w (in use by a VM?)", uuid, err)
	}
	return nil
}
