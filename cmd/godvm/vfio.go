package main

import (
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"godvm/kvm"
	"godvm/vfio"
	"godvm/vfio/passthrough"
	"godvm/vfio/vfiouser"
	"godvm/vmm"
)

// --vfio and --vfio-user: passthrough PCI functions on vfio.Device.
func init() {
	deviceFlags = append(deviceFlags,
		&cli.StringSliceFlag{Name: "vfio", Usage: "pass a VFIO device through: mdev UUID, PCI address (0000:6a:01.0) or /dev/vfio/devices/vfioN (repeatable)"},
		&cli.StringSliceFlag{Name: "vfio-user", Usage: "attach the device a vfio-user server offers on this UNIX socket, e.g. 'godvm dsa-server --socket PATH' (repeatable)"},
	)
	deviceSetup = append(deviceSetup, setupVFIO)
}

// kvmVFIO adapts the VM's KVM-VFIO pseudo-device to vfio.KVMDevice.
type kvmVFIO struct{ d *kvm.Device }

func (k kvmVFIO) AddFile(fd int) error { return k.d.VFIOAddFile(fd) }
func (k kvmVFIO) DelFile(fd int) error { return k.d.VFIODelFile(fd) }

func setupVFIO(c *cli.Context, cfg *vmm.Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	for _, sock := range c.StringSlice("vfio-user") {
		// Connect now, so a missing socket or a server speaking another
		// version is a one-line input error before anything is built.
		cl, err := vfiouser.Dial(sock, vfiouser.WithLogger(log), vfiouser.WithOnFail(func(err error) {
			fmt.Fprintf(c.App.ErrWriter, "godvm: vfio-user device %s failed: %v (the guest keeps running; the device reads all-ones)\n", sock, err)
		}))
		if err != nil {
			return &vmm.InputError{Err: err}
		}
		name := "vfio-user"
		cfg.Devices = append(cfg.Devices, func(m *vmm.Machine) error {
			d, err := passthrough.New(m.Platform(), cl, name)
			if err != nil {
				cl.Close()
				return fmt.Errorf("--vfio-user %s: %w", sock, err)
			}
			if _, err := m.PCI().Add(name, d); err != nil {
				d.Close()
				return fmt.Errorf("--vfio-user %s: %w", sock, err)
			}
			m.AddCloser(d.Close)
			return nil
		})
	}
	specs := c.StringSlice("vfio")
	if len(specs) == 0 {
		return nil
	}
	var kd *kvm.Device // one KVM-VFIO device per VM, shared by all --vfio
	for _, spec := range specs {
		cfg.Devices = append(cfg.Devices, func(m *vmm.Machine) error {
			if kd == nil {
				d, err := m.VM().CreateVFIODevice()
				if err != nil {
					return fmt.Errorf("--vfio: creating the KVM VFIO device: %w", err)
				}
				kd = d
				m.AddCloser(d.Close)
			}
			dev, err := vfio.Open(spec, vfio.WithKVM(kvmVFIO{kd}))
			if err != nil {
				return &vmm.InputError{Err: err}
			}
			d, err := passthrough.New(m.Platform(), dev, "vfio "+spec)
			if err != nil {
				dev.Close()
				return fmt.Errorf("--vfio %s: %w", spec, err)
			}
			if _, err := m.PCI().Add("vfio", d); err != nil {
				d.Close()
				return fmt.Errorf("--vfio %s: %w", spec, err)
			}
			m.AddCloser(d.Close)
			return nil
		})
	}
	return nil
}
