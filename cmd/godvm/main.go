// Command godvm is a micro-VMM for Linux guests on KVM whose reason to exist
// is Intel DSA for guests. `godvm run` boots a kernel; `godvm probe` reports
// what the host's KVM can do. Other subcommands register themselves in
// subcommands from their own files.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"
)

// subcommands holds the commands of godvm; each file appends its own in
// init().
var subcommands []*cli.Command

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:                 "godvm",
		Usage:                "a micro-VMM for Linux guests (with a software Intel DSA)",
		Commands:             append([]*cli.Command{runCommand(), probeCommand()}, subcommands...),
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
