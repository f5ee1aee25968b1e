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
	"godvm/internal/kernelcache"
)

// benchCommand is `godvm bench`.
func benchCommand() *cli.Command {
	return &cli.Command{
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
			&cli.StringFlag{Name: "kernel", Usage: "test kernel (vmlinux) for the guest scenarios (default: $GODVM_TEST_KERNEL, else the one `make kernel` built last in ${GODVM_CACHE:-~/.cache/godvm})"},
			&cli.StringFlag{Name: "bzimage", Usage: "the test kernel as bzImage, for the peer VMM (default: the bzImage next to the vmlinux)"},
			&cli.StringFlag{Name: "initrd", EnvVars: []string{"GODVM_TEST_INITRD"}, Usage: "initrd for the peer VMM"},
		},
		Action: benchAction,
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
	}
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
	env := &bench.Env{Godvm: self, BzImage: c.String("bzimage"), Initrd: c.String("initrd"), Quick: c.Bool("quick")}
	for _, f := range []string{c.String("json"), c.String("plot")} {
		if f != "" {
			if err := checkWritable(f); err != nil {
				return fmt.Errorf("bench: %v", err)
			}
		}
	}
	// The same discovery as the e2e tests: --kernel, GODVM_TEST_KERNEL, or
	// the kernel images/build-kernel.sh built last. Not finding one is not
	// an error here: the guest scenarios say why they cannot run.
	if k, err := kernelcache.Find(c.String("kernel")); err != nil {
		env.NoKernel = err
		fmt.Fprintf(c.App.ErrWriter, "bench: %v\n", err)
	} else {
		env.Kernel, env.SystemMap, env.KernelWhy = k.Vmlinux, k.SystemMap, k.String()
		if env.BzImage == "" {
			env.BzImage = k.BzImage
		}
		if env.Kernel == "" {
			env.NoKernel = fmt.Errorf("no vmlinux in %s", k)
		}
		fmt.Fprintf(c.App.ErrWriter, "bench: test kernel %s\n", k)
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
