package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"

	"godvm/devices/dsa"
	"godvm/internal/sandbox"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/mediator"
)

func dsaServerCommand() *cli.Command {
	return &cli.Command{
		Name:  "dsa-server",
		Usage: "serve virtual DSAs to VMMs over vfio-user, one socket per guest (godvm run --vfio-user SOCKET)",
		UsageText: "godvm dsa-server --socket PATH [--dsa wqs=8,wq-size=128,...] [--portal mapped|trapped] [--seccomp on|off]\n" +
			"godvm dsa-server [--parent model|vfio=PCI-ADDRESS|UUID] [--dsa PARENT-SHAPE] --vdev socket=PATH[,wqs=N][,wq-size=N] --vdev ...",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Aliases: []string{"socket-path"}, Usage: "one guest: UNIX socket to listen on (the whole parent is its DSA)"},
			&cli.StringSliceFlag{Name: "vdev", Usage: "one guest's virtual DSA: socket=PATH[,wqs=N][,wq-size=N][,groups=N][,engines=N] (repeatable; its share of the parent)"},
			&cli.StringFlag{Name: "parent", Value: "model", Usage: "model: the software DSA; vfio=PCI-ADDRESS|UUID: a real DSA through VFIO (design only: see docs/dsa-mediator.md)"},
			&cli.StringFlag{Name: "dsa", Usage: "the parent's shape (keys: wqs, wq-size, groups, engines, version, int-handles, spin); with --socket the guest's device, with --vdev the pool they share (default wqs=16,wq-size=256,groups=8,engines=8)"},
			&cli.StringFlag{Name: "portal", Value: "mapped", Usage: "mapped: offer the portal BAR as shared memory the server polls (guest portal writes do not exit); trapped: 64-byte region writes only"},
			seccompFlag(),
		},
		Action: runDSAServer,
	}
}

func dsaServerFail(format string, a ...any) error {
	return cli.Exit("godvm dsa-server: "+fmt.Sprintf(format, a...), 1)
}

func runDSAServer(c *cli.Context) error {
	sock, vdevArgs := c.String("socket"), c.StringSlice("vdev")
	switch {
	case sock == "" && len(vdevArgs) == 0:
		return dsaServerFail("give --socket PATH (one guest) or --vdev socket=PATH,... (once per guest)")
	case sock != "" && len(vdevArgs) != 0:
		return dsaServerFail("--socket is the one-guest shorthand; with --vdev give every guest's socket as --vdev socket=PATH")
	}
	var specs []mediator.VDevSpec
	for _, a := range vdevArgs {
		s, err := mediator.ParseVDev(a)
		if err != nil {
			return dsaServerFail("%v", err)
		}
		for _, o := range specs {
			if o.Socket == s.Socket {
				return dsaServerFail("--vdev: socket %s given twice", s.Socket)
			}
		}
		specs = append(specs, s)
	}
	parent, err := mediator.ParseParent(c.String("parent"))
	if err != nil {
		return dsaServerFail("%v", err)
	}
	if !parent.Model {
		// The flag, the parse and the device checks are real; the
		// mediation of hardware is not built (docs/dsa-mediator.md).
		_, err := mediator.OpenParent(parent, "")
		return dsaServerFail("%v", err)
	}
	shape := mediator.DefaultParent()
	if sock != "" {
		shape = dsa.DefaultConfig()
		specs = []mediator.VDevSpec{{Socket: sock}}
	}
	if c.IsSet("dsa") {
		if shape, err = dsa.ParseConfig(c.String("dsa")); err == nil {
			err = shape.Validate()
		}
		if err != nil {
			return dsaServerFail("%v", err)
		}
	}
	if sock != "" { // the one guest gets the whole parent
		specs[0] = mediator.VDevSpec{Socket: sock, WQs: shape.WQs, WQSize: shape.WQSize, Groups: shape.Groups, Engines: shape.Engines}
	}
	var mapped bool
	switch c.String("portal") {
	case "mapped":
		mapped = true
	case "trapped":
	default:
		return dsaServerFail("--portal %q: want mapped or trapped", c.String("portal"))
	}
	on, err := seccompOn(c)
	if err != nil {
		return dsaServerFail("%v", err)
	}
	m, err := mediator.New(shape, mapped, slog.Default())
	if err != nil {
		return dsaServerFail("%v", err)
	}
	defer m.Close()
	var vdevs []*mediator.VDev
	for _, s := range specs {
		v, err := m.Add(s)
		if err != nil {
			return dsaServerFail("%v", err)
		}
		vdevs = append(vdevs, v)
	}
	// SIGHUP too: the server is often started from a terminal or an ssh
	// session, and HUP's default action would leave the sockets behind.
	// Caught before the first socket exists (a client may signal as soon
	// as it sees the socket); handled once they all exist.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	// A live server's socket is refused, a stale one replaced; on the way
	// out only our own socket files are removed (vfiouser.ListenSocket).
	var listeners []net.Listener
	var removers []func() error
	removeAll := func() {
		for _, r := range removers {
			r()
		}
	}
	defer removeAll()
	for _, v := range vdevs {
		l, remove, err := vfiouser.ListenSocket(v.Spec.Socket)
		if err != nil {
			removeAll()
			return dsaServerFail("%v", err)
		}
		listeners, removers = append(listeners, l), append(removers, remove)
	}
	go func() {
		s := <-sigs
		slog.Info("dsa-server: stopping", "signal", s.String())
		removeAll()
		os.Exit(0) // a connected client sees EOF and marks its device failed
	}()
	// The sockets are bound and the devices built: the filter goes in
	// before the first client is accepted.
	if on {
		if err := sandbox.InstallProcess(sandbox.KindDSAServer); err != nil {
			removeAll()
			return dsaServerFail("%v", err)
		}
	}
	for _, v := range vdevs {
		slog.Info("dsa-server: listening", "vdev", v.Index, "socket", v.Spec.Socket, "dsa", v.Config.String(),
			"share", v.Share.String(), "parent", "model "+shape.String(), "portal", c.String("portal"), "seccomp", on)
	}
	// Each guest's socket is served on its own; one failing does not stop
	// the others.
	var wg sync.WaitGroup
	errs := make([]error, len(vdevs))
	for i, v := range vdevs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := v.Serve(listeners[i]); err != nil && !errors.Is(err, net.ErrClosed) {
				slog.Error("dsa-server: vdev stopped", "vdev", v.Index, "socket", v.Spec.Socket, "err", err)
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return dsaServerFail("%v", err)
	}
	return nil
}
