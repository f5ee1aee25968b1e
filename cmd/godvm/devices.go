package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"godvm/devices/dsa"
	"godvm/devices/virtio"
	"godvm/vmm"
)

// deviceModelFlags are the virtio and DSA device flags of `godvm run`
// (setupDevices; --vfio and --vfio-user are in vfio.go). Each may be
// repeated; values are parsed before the machine is built so that a typo is
// a one-line error.
func deviceModelFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "disk", Usage: "virtio-blk disk: PATH[,readonly][,id=SERIAL] (repeatable)"},
		&cli.StringSliceFlag{Name: "net", Usage: "virtio-net on a tap: tap=NAME[,mac=MAC] (repeatable)"},
		&cli.StringSliceFlag{Name: "dsa", Usage: "software Intel DSA: default or wqs=N,wq-size=N,groups=N,engines=N,version=1.0|2.0,int-handles=on|off (repeatable)"},
		&cli.BoolFlag{Name: "virtio-rng", Usage: "add a virtio-rng device"},
		&cli.StringFlag{Name: "virtio-console", Usage: "add a virtio-console (hvc0): stdout, stdio or a file path"},
	}
}

func setupDevices(c *cli.Context, cfg *vmm.Config) error {
	add := func(f vmm.DeviceFunc) { cfg.Devices = append(cfg.Devices, f) }
	for _, s := range c.StringSlice("disk") {
		o, err := virtio.ParseDiskFlag(s)
		if err != nil {
			return err
		}
		add(func(m *vmm.Machine) error {
			closeDisk, err := virtio.AddBlock(m.Platform(), m.PCI(), o)
			if err != nil {
				return fmt.Errorf("--disk %s: %w", s, err)
			}
			// When the machine closes (the guest stopped, a signal, an
			// error): stop the device, fsync and close the image.
			m.AddCloser(closeDisk)
			return nil
		})
	}
	for _, s := range c.StringSlice("net") {
		o, err := virtio.ParseNetFlag(s)
		if err != nil {
			return err
		}
		add(func(m *vmm.Machine) error {
			if err := virtio.AddNet(m.Platform(), m.PCI(), o); err != nil {
				return fmt.Errorf("--net %s: %w", s, err)
			}
			return nil
		})
	}
	for _, s := range c.StringSlice("dsa") {
		dc, err := dsa.ParseConfig(s)
		if err == nil {
			err = dc.Validate()
		}
		if err != nil {
			return fmt.Errorf("--dsa %s: %w", s, err)
		}
		add(func(m *vmm.Machine) error {
			d, err := dsa.AddPCI(m.Platform(), m.PCI(), dc)
			if err != nil {
				return fmt.Errorf("--dsa %s: %w", s, err)
			}
			m.AddCloser(func() error { d.Close(); return nil })
			return nil
		})
	}
	if c.Bool("virtio-rng") {
		add(func(m *vmm.Machine) error { return virtio.AddRNG(m.Platform(), m.PCI()) })
	}
	if s := c.String("virtio-console"); c.IsSet("virtio-console") {
		o, closer, err := virtio.ParseConsoleFlag(s)
		if err != nil {
			return err
		}
		add(func(m *vmm.Machine) error {
			if closer != nil {
				m.AddCloser(closer.Close)
			}
			return virtio.AddConsole(m.Platform(), m.PCI(), o)
		})
	}
	return nil
}
