package main

import (
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	vfiokernel "godvm/vfio/kernel"
	"godvm/vfio/passthrough"
	"godvm/vfio/vfiouser"
	"godvm/vmm"
)

// vfioFlags are --vfio and --vfio-user: passthrough PCI functions on
// vfio.Device (setupVFIO).
func vfioFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "vfio", Usage: "pass a VFIO device through: mdev UUID, PCI address (0000:6a:01.0) or /dev/vfio/devices/vfioN (repeatable)"},
		&cli.StringSliceFlag{Name: "vfio-user", Usage: "attach the device a vfio-user server offers on this UNIX socket, e.g. 'godvm dsa-server --socket PATH' (repeatable)"},
	}
}

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
	for _, spec := range c.StringSlice("vfio") {
		cfg.Devices = append(cfg.Devices, func(m *vmm.Machine) error {
			kd, err := m.KVMVFIO() // one per VM, shared by all --vfio
			if err != nil {
				return fmt.Errorf("--vfio: %w", err)
			}
			dev, err := vfiokernel.Open(spec, vfiokernel.WithKVM(kd))
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
