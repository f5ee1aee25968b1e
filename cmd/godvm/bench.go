package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"godvm/bench"
)

func init() {
	subcommands = append(subcommands, &cli.Command{
		Name:  "bench",
		Usage: "measure godvm side by side: boot, memory, the software DSA engine, DSA in a guest, a peer VMM",
		UsageText: "godvm bench [--only NAME]... [--runs N] [--quick] [--json FILE] [--plot FILE] [--kernel vmlinux]\n" +
			"scenarios: boot, memory, dsa-engine, dsa-guest, peer",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "only", Usage: "run only this scenario (repeatable)"},
			&cli.IntFlag{Name: "runs", Value: 5, Usage: "runs per scenario"},
			&cli.BoolFlag{Name: "quick", Usage: "short runs for CI (fewer sizes, shorter measurements, 1 run unless --runs is given)"},
			&cli.StringFlag{Name: "json", Usage: "write the report as JSON to FILE"},
			&cli.StringFlag{Name: "plot", Usage: "draw the report as a PNG chart to FILE"},
			&cli.StringFlag{Name: "kernel", EnvVars: []string{"GODVM_TEST_KERNEL"}, Usage: "test kernel (vmlinux) for the guest scenarios"},
			&cli.StringFlag{Name: "bzimage", Usage: "the test kernel as bzImage, for the peer VMM (default: bzImage next to --kernel)"},
			&cli.StringFlag{Name: "initrd", EnvVars: []string{"GODVM_TEST_INITRD"}, Usage: "initrd for the peer VMM"},
		},
		Action: benchAction,
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
	})
}

func benchAction(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("bench: unexpected argument %q", c.Args().First())
	}
	scen, err := bench.Select(bench.Scenarios(), c.StringSlice("only"))
	if err != nil {
		return fmt.Errorf("bench: %v", err)
	}
	runs := c.Int("runs")
	if c.Bool("quick") && !c.IsSet("runs") {
		runs = 1
	}
	if runs < 1 {
		return fmt.Errorf("bench: --runs %d: must be at least 1", runs)
	}
	// The guest scenarios run `godvm run` as a child: this binary, or
	// GODVM_BINARY (tests, whose own executable is the test binary).
	self := os.Getenv("GODVM_BINARY")
	if self == "" {
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("bench: cannot find the godvm binary: %v", err)
		}
	}
	env := &bench.Env{Godvm: self, Kernel: c.String("kernel"), BzImage: c.String("bzimage"), Initrd: c.String("initrd"), Quick: c.Bool("quick")}
	if env.BzImage == "" && env.Kernel != "" {
		if p := filepath.Join(filepath.Dir(env.Kernel), "bzImage"); fileExists(p) {
			env.BzImage = p
		}
	}
	for _, f := range []string{c.String("json"), c.String("plot")} {
		if f != "" {
			if err := checkWritable(f); err != nil {
				return fmt.Errorf("bench: %v", err)
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := bench.Run(ctx, scen, env, bench.Options{Runs: runs, Progress: c.App.ErrWriter})
	fmt.Fprintln(c.App.Writer)
	if err := rep.WriteTable(c.App.Writer); err != nil {
		return err
	}
	if p := c.String("json"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return fmt.Errorf("bench: %v", err)
		}
		if err := rep.WriteJSON(f); err != nil {
			f.Close()
			return fmt.Errorf("bench: writing %s: %v", p, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("bench: writing %s: %v", p, err)
		}
	}
	if p := c.String("plot"); p != "" {
		if err := rep.Plot(p); err != nil {
			return fmt.Errorf("bench: chart: %v", err)
		}
	}
	for _, s := range rep.Scenarios {
		if s.Status == bench.StatusFailed {
			return cli.Exit(fmt.Sprintf("godvm: bench: scenario %s failed: %s", s.Name, s.Reason), 1)
		}
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// checkWritable fails early, before minutes of measuring, when an output
// file cannot be created.
func checkWritable(p string) error {
	dir := filepath.Dir(p)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("cannot write %s: %v", p, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cannot write %s: %s is not a directory", p, dir)
	}
	return nil
}
