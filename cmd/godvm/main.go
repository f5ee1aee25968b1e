// Command godvm is a micro-VMM for Linux guests on KVM whose reason to exist
// is Intel DSA for guests. `godvm run` boots a kernel; `godvm probe` reports
// what the host's KVM can do. The command only parses flags and wires
// packages together: the lists below name every subcommand, every device
// flag of `godvm run` and the order its devices are set up in; each lives in
// the file named beside it.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/urfave/cli/v2"

	"godvm/vmm"
)

// commands are godvm's subcommands, in the order --help lists them.
func commands() []*cli.Command {
	return []*cli.Command{
		runCommand(),       // run.go
		probeCommand(),     // probe.go
		benchCommand(),     // bench.go
		dsaServerCommand(), // dsaserver.go
		mdevCommand(),      // mdev.go
	}
}

// deviceFlags are `godvm run`'s device flags, after its machine flags.
func deviceFlags() []cli.Flag {
	return slices.Concat(
		deviceModelFlags(), // devices.go: --disk --net --dsa --virtio-rng --virtio-console
		vfioFlags(),        // vfio.go: --vfio --vfio-user
	)
}

// deviceSetup turns the device flags into vmm.DeviceFuncs (cfg.Devices), in
// this order: the order the guest's PCI slots are filled in.
var deviceSetup = []func(c *cli.Context, cfg *vmm.Config) error{
	setupDevices, // devices.go
	setupVFIO,    // vfio.go
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:                 "godvm",
		Usage:                "a micro-VMM for Linux guests (with a software Intel DSA)",
		Commands:             commands(),
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: false,
		HideHelpCommand:      true,
		// --disk a,readonly must stay one value: repeat flags instead.
		DisableSliceFlagSeparator: true,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("unknown command %q (see godvm --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		// Errors are printed once, by main, as one line.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
	}
}

type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

// exitStatus turns Run's error into the process status, printing it as one
// line on stderr.
func exitStatus(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := ec.Error(); msg != "" {
			fmt.Fprintln(stderr, msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintf(stderr, "godvm: %v\n", err)
	return 1
}

func main() {
	app := newApp(os.Stdout, os.Stderr)
	os.Exit(exitStatus(app.Run(os.Args), os.Stderr))
}
