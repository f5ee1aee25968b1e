package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"godvm/internal/sandbox"
	"godvm/vmm"
	"godvm/vmm/probe"
)

// processStart is the boot timer's reference: godvm's own start.
var processStart = time.Now()

// runFlags are `godvm run`'s flags: the machine's, then deviceFlags().
func runFlags() []cli.Flag {
	f := []cli.Flag{
		&cli.StringFlag{Name: "kernel", Aliases: []string{"k"}, Usage: "guest kernel: ELF vmlinux or bzImage (e.g. /boot/vmlinuz-*; godvm decompresses its payload and loads the ELF inside) (required)"},
		&cli.BoolFlag{Name: "guest-decompress", Usage: "let a bzImage decompress itself in the guest, as a boot loader would (keeps physical KASLR; slow where guest ring 0 is emulated)"},
		&cli.StringFlag{Name: "initrd", Aliases: []string{"i"}, Usage: "initrd/initramfs (uncompressed cpio boots fastest)"},
		&cli.StringFlag{Name: "cmdline", Aliases: []string{"c"}, Usage: "guest kernel parameters, placed last (they win over godvm's defaults)"},
		&cli.IntFlag{Name: "cpus", Value: 1, Usage: "number of vCPUs"},
		&cli.StringFlag{Name: "memory", Aliases: []string{"m"}, Value: "512M", Usage: "guest RAM, e.g. 512M or 2G"},
		&cli.DurationFlag{Name: "timeout", Usage: "stop the guest after this long (exit status 4), e.g. 90s"},
		&cli.BoolFlag{Name: "boot-trace", Usage: "report time to the guest agent's boot-timer write, exits by reason, time outside KVM_RUN, emulated instructions and paravirtual stores, the DSA data path"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log what godvm chose (command line, host defaults, devices)"},
		&cli.BoolFlag{Name: "no-host-defaults", Usage: "do not add the host-compatibility kernel parameters chosen by the KVM probe (a forced --dsa-path still adds its own godvm_dsa_path=)"},
		&cli.StringFlag{Name: "dsa-path", Value: "auto", Usage: "how the guest's DSA submissions reach the device: auto (the KVM probe picks), native, emulated or pv " +
			"(paravirtual port, needs godvm's test kernel; always possible). A forced path this host cannot do is an error. " +
			"With a DSA godvm adds godvm_dsa_path=PATH (and setcpuid=movdir64b where the guest's CPUID lacks it) before --cmdline; " +
			"with --no-host-defaults a forced path is still checked and adds only godvm_dsa_path=PATH, auto adds nothing"},
		&cli.StringFlag{Name: "system-map", Usage: "the kernel's System.map, to name functions in reports"},
		seccompFlag(),
	}
	return append(f, deviceFlags()...)
}

// runCommand is `godvm run`.
func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "boot a Linux guest",
		UsageText: "godvm run --kernel vmlinux [--initrd FILE] [--cmdline ARGS] [--cpus N] [--memory SIZE] [--timeout D] [devices...]",
		Description: "Exit status:\n" +
			"   0    the guest powered off, reset, or reported a pass\n" +
			"   1    godvm's own error (bad input, an exit it cannot handle, a VMM failure)\n" +
			"   2    the guest panicked\n" +
			"   3    the guest reported failure through the debug-exit port\n" +
			"   4    --timeout expired\n" +
			"   130  SIGINT stopped the guest (128 + 2); 143: SIGTERM (128 + 15). The guest is stopped, its disks\n" +
			"        flushed (fsync) and closed before godvm exits; a second SIGINT or SIGTERM kills godvm at once\n" +
			"   159  the seccomp filters refused a system call (128 + SIGSYS): stderr names the call, its\n" +
			"        arguments, the filter and the thread (--seccomp=off runs without the filters)",
		Flags:  runFlags(),
		Action: runAction,
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
	}
}

func runAction(c *cli.Context) error {
	stderr := c.App.ErrWriter
	if c.Args().Present() {
		return fmt.Errorf("run: unexpected argument %q (kernel parameters go in --cmdline)", c.Args().First())
	}
	level := slog.LevelWarn
	if c.Bool("verbose") {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := configFromFlags(c, log)
	if err != nil {
		return err
	}
	forced, err := parseDSAPathFlag(c.String("dsa-path"))
	if err != nil {
		return err
	}
	on, err := seccompOn(c)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	// Files and sizes first: bad input is reported before KVM is touched.
	if err := vmm.Check(cfg); err != nil {
		return err
	}
	hostDefaults := !c.Bool("no-host-defaults")
	var host *probe.Result
	if hostDefaults || forced != "" {
		if host, err = probeHost(log); err != nil {
			log.Warn("KVM probe failed; no host-compatibility parameters added", "err", err)
		}
	}
	if hostDefaults && host != nil {
		params := host.GuestCmdline()
		cfg.HostCmdline = params
		if len(params) > 0 {
			log.Info("host-compatibility kernel parameters (before --cmdline; --no-host-defaults drops them)", "params", strings.Join(params, " "))
		}
		for _, w := range host.Warnings() {
			log.Info("host", "note", w)
		}
		if !host.UserSpaceWorks && cfg.Initrd != "" {
			fmt.Fprintln(stderr, "godvm: warning: guest user space cannot make system calls on this host's KVM: "+
				"programs in the initrd (including /init) will not run, only in-kernel code")
		}
	}
	plan, err := planDSAPath(forced, host, machineHasDSA(c), hostDefaults)
	if err != nil {
		return err
	}
	if plan.path != "" {
		cfg.HostCmdline = append(cfg.HostCmdline, plan.params...)
		cfg.DSAPath = fmt.Sprintf("%s (%s)", plan.path, plan.why)
		log.Info("DSA data path", "path", plan.path, "why", plan.why, "params", strings.Join(plan.params, " "))
	} else if plan.why != "" {
		log.Info("DSA data path", "path", "none", "why", plan.why)
	}
	for _, setup := range deviceSetup {
		if err := setup(c, &cfg); err != nil {
			return err
		}
	}
	// SIGINT and SIGTERM from here on stop the guest (below); before, their
	// default action is right: nothing needs flushing yet.
	ctx, caught, stopSignals := stopOnSignal(stderr)
	defer stopSignals()
	m, err := vmm.New(cfg)
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			m.Close()
		}
	}()
	log.Info("guest command line", "cmdline", m.Cmdline())
	k := m.Kernel()
	log.Info("kernel", "format", k.Format.String(), "entry", fmt.Sprintf("%#x", k.Entry))
	if k.Note != "" {
		fmt.Fprintln(stderr, "godvm: note: "+k.Note)
	}
	// Everything is open now (kernel, disks, taps, /dev/kvm, vfio-user
	// sockets): the filters go in before the guest runs.
	if on {
		if err := sandbox.InstallProcess(sandbox.KindVMM); err != nil {
			return err
		}
		log.Info("seccomp filters installed", "process", sandbox.KindVMM.String(),
			"threads", sandbox.KindVCPU.String()+", "+sandbox.KindWorker.String())
	}

	res, runErr := m.Run(ctx)
	// Stop the devices, flush and close the disks, before reporting.
	closed = true
	closeErr := m.Close()
	if runErr == nil && closeErr != nil {
		runErr = fmt.Errorf("closing the machine: %w", closeErr)
	}
	if sig := caught(); sig != 0 && runErr == nil {
		return signalExit(stderr, res, sig, len(c.StringSlice("disk")) > 0, c.Bool("verbose"))
	}
	return report(stderr, res, runErr, c.Bool("verbose"))
}

// stopOnSignal turns the first SIGINT or SIGTERM into the returned
// context's cancellation (the guest stops, disks are flushed and closed)
// and reports which signal it was; after it, the signals' default action
// is back, so a second one kills godvm at once.
func stopOnSignal(stderr io.Writer) (ctx context.Context, caught func() syscall.Signal, stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Int32
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			signal.Stop(ch)
			sig := s.(syscall.Signal)
			got.Store(int32(sig))
			fmt.Fprintf(stderr, "godvm: %s: stopping the guest and flushing its disks (a second signal kills godvm at once)\n", signalName(sig))
			cancel()
		case <-done:
		}
	}()
	return ctx, func() syscall.Signal { return syscall.Signal(got.Load()) }, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}

// signalName is SIGINT or SIGTERM.
func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}

// signalExit reports a guest stopped by a signal: status 128 + the signal,
// as a shell reports a process the signal killed.
func signalExit(w io.Writer, res vmm.Result, sig syscall.Signal, disks, verbose bool) error {
	if res.Reason != vmm.ReasonInterrupted {
		// The guest ended on its own before the signal took effect.
		return report(w, res, nil, verbose)
	}
	if res.Trace != nil {
		res.Trace.Write(w)
	}
	msg := fmt.Sprintf("godvm: stopped by %s%s", signalName(sig), strings.TrimPrefix(oneLine(res.Summary()), "interrupted"))
	if disks {
		msg += "; disks flushed and closed"
	}
	return cli.Exit(msg, exitSignal(sig))
}

// exitSignal is godvm run's exit status after a signal stopped the guest.
func exitSignal(sig syscall.Signal) int { return 128 + int(sig) }

// seccompFlag is --seccomp, on `godvm run` and `godvm dsa-server`.
func seccompFlag() cli.Flag {
	return &cli.StringFlag{Name: "seccomp", Value: "on", Usage: "on: confine godvm with seccomp filters once everything is open " +
		"(per thread kind; a refused system call stops godvm with status 159 and names the call on stderr); off: no filters, for debugging"}
}

// seccompOn parses --seccomp.
func seccompOn(c *cli.Context) (bool, error) {
	switch v := c.String("seccomp"); v {
	case "on":
		return true, nil
	case "off":
		return false, nil
	default:
		return false, fmt.Errorf("--seccomp %q: want on or off", v)
	}
}

// configFromFlags validates the flags into a vmm.Config.
func configFromFlags(c *cli.Context, log *slog.Logger) (vmm.Config, error) {
	cfg := vmm.Config{
		Kernel:          c.String("kernel"),
		GuestDecompress: c.Bool("guest-decompress"),
		Initrd:          c.String("initrd"),
		Cmdline:         c.String("cmdline"),
		CPUs:            c.Int("cpus"),
		Timeout:         c.Duration("timeout"),
		BootTrace:       c.Bool("boot-trace"),
		SystemMap:       c.String("system-map"),
		Console:         c.App.Writer,
		Log:             log,
		Start:           processStart,
	}
	if cfg.Kernel == "" {
		return cfg, errors.New("run: --kernel is required")
	}
	if cfg.CPUs < 1 {
		return cfg, fmt.Errorf("run: --cpus %d: must be at least 1", cfg.CPUs)
	}
	if cfg.Timeout < 0 {
		return cfg, fmt.Errorf("run: --timeout %v: must not be negative", cfg.Timeout)
	}
	mem, err := vmm.ParseSize(c.String("memory"))
	if err != nil {
		return cfg, fmt.Errorf("run: --memory: %v", err)
	}
	cfg.Memory = mem
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		cfg.Stdin = os.Stdin // a terminal: forward keys to the serial console
	} else if err == nil && (fi.Mode().IsRegular() || fi.Mode()&os.ModeNamedPipe != 0) {
		cfg.Stdin = os.Stdin
	}
	return cfg, nil
}

// report prints the outcome and returns the exit status as a cli.ExitCoder.
func report(w io.Writer, res vmm.Result, runErr error, verbose bool) error {
	if res.Trace != nil {
		res.Trace.Write(w)
	}
	status := res.ExitStatus()
	if runErr != nil {
		return cli.Exit("godvm: "+oneLine(runErr.Error()), vmm.ExitError)
	}
	msg := "godvm: " + oneLine(res.Summary())
	if status == 0 && !verbose {
		msg = ""
	}
	return cli.Exit(msg, status)
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }
