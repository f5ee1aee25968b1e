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
				return enc.Encode(probeJSON(r))
			}
			return r.WriteText(c.App.Writer)
		},
	}
}

// probeHost runs the probe for `godvm run` (host defaults, the DSA data
// path). A host without usable /dev/kvm gives a nil result and no error:
// vmm.New reports that itself.
func probeHost(log *slog.Logger) (*probe.Result, error) {
	r, err := probe.Run(probe.Options{})
	if err != nil {
		var oe *kvm.OpenError
		if errors.As(err, &oe) {
			return nil, nil
		}
		return nil, err
	}
	log.Debug("KVM probe", "elapsed", r.Elapsed, "user_space_works", r.UserSpaceWorks)
	return r, nil
}

// probeJSON is `godvm probe --json`'s document: the probe's Result with
// what it implies beside it: the DSA data path (Result.DSAPath), the
// guest parameters `godvm run` adds (Result.GuestCmdline) and the
// baseline x87/SSE instructions that fail here and that no parameter
// avoids (Result.MustEmulate).
func probeJSON(r *probe.Result) any {
	path, why := r.DSAPath()
	return struct {
		*probe.Result
		DSAPath      dsaPathJSON `json:"dsa_path"`
		GuestCmdline []string    `json:"guest_cmdline"`
		MustEmulate  []string    `json:"must_emulate"`
	}{r, dsaPathJSON{path, why, r.DSACmdline(path)}, nonNil(r.GuestCmdline()), nonNil(r.MustEmulate())}
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

type dsaPathJSON struct {
	Path probe.DSAPath `json:"path"`
	Why  string        `json:"why"`
	// Params are the guest parameters `godvm run` adds with a DSA.
	Params []string `json:"params"`
}
