package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"godvm/kvm"
	"godvm/vmm/probe"
)

// probeCommand is `godvm probe`: what the host's KVM can do for a guest.
func probeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "report what this host's KVM can do (capabilities, instructions it cannot emulate, CPUID control, guest user space)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		OnUsageError: func(c *cli.Context, err error, _ bool) error { return usageError{err} },
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("probe: unexpected argument %q", c.Args().First())
			}
			r, err := probe.Run(probe.Options{})
			if err != nil {
				return fmt.Errorf("probe: %w", err)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return r.WriteText(c.App.Writer)
		},
	}
}

// probeHostDefaults runs the probe for `godvm run`: the guest parameters
// this host needs, what the user should know, and whether guest user space
// works. A host without usable /dev/kvm gives no parameters and no error:
// vmm.New reports that itself.
func probeHostDefaults(log *slog.Logger) (params, warnings []string, userSpaceOK bool, err error) {
	r, err := probe.Run(probe.Options{})
	if err != nil {
		var oe *kvm.OpenError
		if errors.As(err, &oe) {
			return nil, nil, true, nil
		}
		return nil, nil, true, err
	}
	log.Debug("KVM probe", "elapsed", r.Elapsed, "user_space_works", r.UserSpaceWorks)
	return r.GuestCmdline(), r.Warnings(), r.UserSpaceWorks, nil
}

func init() { hostDefaults = probeHostDefaults }
