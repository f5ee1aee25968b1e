package kernel

import (
	"fmt"
	"log/slog"
	"path"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"godvm/internal/abi"
	"godvm/vfio"
)

// KVMDevice is the VM's KVM VFIO pseudo-device (KVM_DEV_TYPE_VFIO). The VMM
// implements it with KVM_CREATE_DEVICE and KVM_SET_DEVICE_ATTR(
// KVM_DEV_VFIO_FILE, ADD/DEL); fd is a VFIO group fd or a device cdev fd.
type KVMDevice interface {
	AddFile(fd int) error
	DelFile(fd int) error
}

// Mode picks the kernel interface.
type Mode int

const (
	// ModeAuto uses the legacy container when /dev/vfio/vfio exists and the
	// device has a group node, else iommufd with the device cdev.
	ModeAuto Mode = iota
	ModeLegacy
	ModeIOMMUFD
)

type options struct {
	sys    Sys
	sysfs  string
	dev    string
	kvm    KVMDevice
	mode   Mode
	logger *slog.Logger
}

// Option configures Open.
type Option func(*options)

// WithSys replaces the system-call seam (tests).
func WithSys(s Sys) Option { return func(o *options) { o.sys = s } }

// WithSysfs sets the sysfs root (default /sys).
func WithSysfs(root string) Option { return func(o *options) { o.sysfs = root } }

// WithDevRoot sets the /dev root (default /dev).
func WithDevRoot(root string) Option { return func(o *options) { o.dev = root } }

// WithKVM tells Open to register the group (or cdev) with the VM's KVM VFIO
// device before the device is opened, as mediated drivers require.
func WithKVM(k KVMDevice) Option { return func(o *options) { o.kvm = k } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithMode forces the legacy container or iommufd.
func WithMode(m Mode) Option { return func(o *options) { o.mode = m } }

var (
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	pciRE  = regexp.MustCompile(`^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$`)
)

// IsUUID reports whether s looks like an mdev UUID.
func IsUUID(s string) bool { return uuidRE.MatchString(s) }

// Open opens a kernel VFIO device named by spec: an mdev UUID, a PCI address
// (0000:06:0d.0 or 06:0d.0) or a device cdev path (/dev/vfio/devices/vfioN).
func Open(spec string, opts ...Option) (vfio.Device, error) {
	o := options{sys: RealSys{}, sysfs: "/sys", dev: "/dev", logger: slog.Default()}
	for _, f := range opts {
		f(&o)
	}
	vfioDir := path.Join(o.dev, "vfio")
	var sysdir, name, cdev string
	switch {
	case IsUUID(spec):
		name = strings.ToLower(spec)
		sysdir = path.Join(o.sysfs, "bus/mdev/devices", name)
	case pciRE.MatchString(spec):
		name = strings.ToLower(spec)
		if len(name) == 7 {
			name = "0000:" + name
		}
		sysdir = path.Join(o.sysfs, "bus/pci/devices", name)
	case strings.HasPrefix(spec, "/") || strings.HasPrefix(spec, "."):
		cdev = spec
		name = path.Base(spec)
	default:
		return nil, fmt.Errorf("vfio: %q is not an mdev UUID, a PCI address (0000:06:0d.0) or a /dev/vfio/devices/vfioN path", spec)
	}
	if !o.sys.Exists(vfioDir) {
		return nil, fmt.Errorf("vfio: %s does not exist: this host has no VFIO (kernel built without CONFIG_VFIO, or vfio-pci/mdev modules not loaded)", vfioDir)
	}
	if sysdir != "" && !o.sys.Exists(sysdir) {
		if IsUUID(spec) {
			return nil, fmt.Errorf("vfio: no mdev with UUID %s (%s does not exist; see 'godvm mdev list')", name, sysdir)
		}
		return nil, fmt.Errorf("vfio: no PCI device %s (%s does not exist)", name, sysdir)
	}
	mode := o.mode
	if cdev != "" {
		if mode == ModeLegacy {
			return nil, fmt.Errorf("vfio: %s is a device cdev; it works only with iommufd", cdev)
		}
		mode = ModeIOMMUFD
	}
	if mode == ModeAuto {
		mode = ModeIOMMUFD
		if o.sys.Exists(path.Join(vfioDir, "vfio")) {
			if _, err := o.sys.Readlink(path.Join(sysdir, "iommu_group")); err == nil {
				mode = ModeLegacy
			}
		}
	}
	if mode == ModeIOMMUFD && cdev == "" {
		dir := path.Join(sysdir, "vfio-dev")
		names, err := o.sys.ReadDir(dir)
		if err != nil || len(names) == 0 {
			return nil, fmt.Errorf("vfio: %s has no VFIO device cdev (%s missing: not bound to a VFIO driver, or kernel without CONFIG_VFIO_DEVICE_CDEV)", name, dir)
		}
		cdev = path.Join(vfioDir, "devices", names[0])
	}
	var d *kernelDevice
	var err error
	if mode == ModeLegacy {
		d, err = openLegacy(&o, sysdir, name)
	} else {
		d, err = openIOMMUFD(&o, cdev, name)
	}
	if err != nil {
		return nil, err
	}
	if err := d.getInfo(); err != nil {
		d.Close()
		return nil, err
	}
	o.logger.Info("vfio device opened", "device", name, "mode", map[Mode]string{ModeLegacy: "container", ModeIOMMUFD: "iommufd"}[mode],
		"regions", d.info.NumRegions, "irqs", d.info.NumIRQs)
	return d, nil
}

// GroupOf returns the IOMMU group number of a sysfs device directory.
func groupOf(o *options, sysdir string) (string, error) {
	link, err := o.sys.Readlink(path.Join(sysdir, "iommu_group"))
	if err != nil {
		return "", fmt.Errorf("vfio: %s has no IOMMU group (%v); is it bound to vfio-pci / an mdev driver and the IOMMU enabled?", path.Base(sysdir), err)
	}
	return path.Base(link), nil
}

func openLegacy(o *options, sysdir, name string) (d *kernelDevice, err error) {
	group, err := groupOf(o, sysdir)
	if err != nil {
		return nil, err
	}
	s := o.sys
	c := &container{sys: s, fd: -1, groupFd: -1}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	cpath := path.Join(o.dev, "vfio/vfio")
	if c.fd, err = s.Open(cpath, unix.O_RDWR); err != nil {
		return nil, fmt.Errorf("vfio: open %s: %w%s", cpath, err, errnoHint(err))
	}
	if v, err := s.IoctlInt(c.fd, ioctlGetAPIVersion, 0); err != nil || v != vfioAPIVersion {
		return nil, fmt.Errorf("vfio: %s: unknown VFIO API version %d (%v)", cpath, v, err)
	}
	if ok, err := s.IoctlInt(c.fd, ioctlCheckExtension, typeIOMMU1v2); err != nil || ok <= 0 {
		return nil, fmt.Errorf("vfio: %s does not support the type1v2 IOMMU (%v)", cpath, err)
	}
	gpath := path.Join(o.dev, "vfio", group)
	if !s.Exists(gpath) && s.Exists(path.Join(o.dev, "vfio", "noiommu-"+group)) {
		return nil, fmt.Errorf("vfio: %s is in no-IOMMU group noiommu-%s: without an IOMMU VFIO cannot DMA-map guest memory, so the device cannot be given to a VM", name, group)
	}
	if c.groupFd, err = s.Open(gpath, unix.O_RDWR); err != nil {
		return nil, fmt.Errorf("vfio: open group %s of %s: %w%s", gpath, name, err, errnoHint(err))
	}
	st := groupStatus{Argsz: 8}
	if _, err := s.Ioctl(c.groupFd, ioctlGroupGetStatus, abi.Bytes(&st)); err != nil {
		return nil, fmt.Errorf("vfio: VFIO_GROUP_GET_STATUS on %s: %w", gpath, err)
	}
	if st.Flags&groupFlagsViable == 0 {
		return nil, fmt.Errorf("vfio: IOMMU group %s of %s is not viable: bind every device in %s to vfio-pci (or unbind it)",
			group, name, path.Join(o.sysfs, "kernel/iommu_groups", group, "devices"))
	}
	cfd := int32(c.fd)
	if _, err := s.Ioctl(c.groupFd, ioctlGroupSetCont, abi.Bytes(&cfd)); err != nil {
		return nil, fmt.Errorf("vfio: VFIO_GROUP_SET_CONTAINER for group %s: %w", group, err)
	}
	if _, err := s.IoctlInt(c.fd, ioctlSetIOMMU, typeIOMMU1v2); err != nil {
		return nil, fmt.Errorf("vfio: VFIO_SET_IOMMU(type1v2) for group %s: %w", group, err)
	}
	kfd := -1
	if o.kvm != nil {
		if err := o.kvm.AddFile(c.groupFd); err != nil {
			return nil, fmt.Errorf("vfio: adding group %s to the KVM VFIO device: %w", group, err)
		}
		kfd = c.groupFd
	}
	nameZ := append([]byte(name), 0)
	fd, err := s.Ioctl(c.groupFd, ioctlGroupGetDevFD, nameZ)
	if err != nil {
		if kfd >= 0 {
			o.kvm.DelFile(kfd)
		}
		return nil, fmt.Errorf("vfio: VFIO_GROUP_GET_DEVICE_FD(%s) on group %s: %w", name, group, err)
	}
	return &kernelDevice{sys: s, name: name, fd: fd, dma: c, kvm: o.kvm, kfd: kfd}, nil
}

func openIOMMUFD(o *options, cdev, name string) (d *kernelDevice, err error) {
	s := o.sys
	a := &ioas{sys: s, fd: -1}
	devfd := -1
	kfd := -1
	defer func() {
		if err != nil {
			if kfd >= 0 {
				o.kvm.DelFile(kfd)
			}
			if devfd >= 0 {
				s.Close(devfd)
			}
			a.close()
		}
	}()
	ipath := path.Join(o.dev, "iommu")
	if a.fd, err = s.Open(ipath, unix.O_RDWR); err != nil {
		return nil, fmt.Errorf("vfio: open %s: %w%s (kernel without CONFIG_IOMMUFD?)", ipath, err, errnoHint(err))
	}
	if devfd, err = s.Open(cdev, unix.O_RDWR); err != nil {
		return nil, fmt.Errorf("vfio: open %s: %w%s", cdev, err, errnoHint(err))
	}
	// KVM must know the file before BIND: the bind takes the KVM reference.
	if o.kvm != nil {
		if err := o.kvm.AddFile(devfd); err != nil {
			return nil, fmt.Errorf("vfio: adding %s to the KVM VFIO device: %w", cdev, err)
		}
		kfd = devfd
	}
	b := bindIOMMUFD{Argsz: 16, IOMMUFD: int32(a.fd)}
	if _, err := s.Ioctl(devfd, ioctlBindIOMMUFD, abi.Bytes(&b)); err != nil {
		return nil, fmt.Errorf("vfio: VFIO_DEVICE_BIND_IOMMUFD(%s): %w%s", cdev, err, errnoHint(err))
	}
	al := ioasAlloc{Size: 12}
	if _, err := s.Ioctl(a.fd, iommuIOASAlloc, abi.Bytes(&al)); err != nil {
		return nil, fmt.Errorf("vfio: IOMMU_IOAS_ALLOC: %w", err)
	}
	a.id = al.OutIOASID
	at := attachIOMMUFDPT{Argsz: 12, PtID: a.id}
	if _, err := s.Ioctl(devfd, ioctlAttachIOMMUFDPT, abi.Bytes(&at)); err != nil {
		return nil, fmt.Errorf("vfio: VFIO_DEVICE_ATTACH_IOMMUFD_PT(%s, ioas %d): %w", cdev, a.id, err)
	}
	return &kernelDevice{sys: s, name: name, fd: devfd, dma: a, kvm: o.kvm, kfd: kfd}, nil
}
