package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"godvm/devices/dsa"
	"godvm/internal/sandbox"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/dsabackend"
)

func dsaServerCommand() *cli.Command {
	return &cli.Command{
		Name:      "dsa-server",
		Usage:     "serve a software DSA to a VMM over vfio-user (godvm run --vfio-user SOCKET)",
		UsageText: "godvm dsa-server --socket PATH [--dsa wqs=8,wq-size=128,...] [--portal mapped|trapped] [--seccomp on|off]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Aliases: []string{"socket-path"}, Required: true, Usage: "UNIX socket to listen on"},
			&cli.StringFlag{Name: "dsa", Usage: "device shape (keys: wqs, wq-size, groups, engines, version, int-handles)"},
			&cli.StringFlag{Name: "portal", Value: "mapped", Usage: "mapped: offer the portal BAR as shared memory the server polls (guest portal writes do not exit); trapped: 64-byte region writes only"},
			seccompFlag(),
		},
		Action: runDSAServer,
	}
}

func runDSAServer(c *cli.Context) error {
	cfg, err := dsa.ParseConfig(c.String("dsa"))
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		return cli.Exit(fmt.Sprintf("godvm dsa-server: %v", err), 1)
	}
	var mapped bool
	switch c.String("portal") {
	case "mapped":
		mapped = true
	case "trapped":
	default:
		return cli.Exit(fmt.Sprintf("godvm dsa-server: --portal %q: want mapped or trapped", c.String("portal")), 1)
	}
	on, err := seccompOn(c)
	if err != nil {
		return cli.Exit(fmt.Sprintf("godvm dsa-server: %v", err), 1)
	}
	sock := c.String("socket")
	// A live server's socket is refused, a stale one replaced; on the way
	// out only our own socket file is removed (vfiouser.ListenSocket).
	l, removeSock, err := vfiouser.ListenSocket(sock)
	if err != nil {
		return cli.Exit(fmt.Sprintf("godvm dsa-server: %v", err), 1)
	}
	defer removeSock()
	b, err := dsabackend.New(cfg, mapped, slog.Default())
	if err != nil {
		removeSock()
		return cli.Exit(fmt.Sprintf("godvm dsa-server: %v", err), 1)
	}
	defer b.Close()
	// SIGHUP too: the server is often started from a terminal or an ssh
	// session, and HUP's default action would leave the socket behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		s := <-sigs
		slog.Info("dsa-server: stopping", "signal", s.String())
		removeSock()
		os.Exit(0) // a connected client sees EOF and marks its device failed
	}()
	// The socket is bound and the device built: the filter goes in before
	// the first client is accepted.
	if on {
		if err := sandbox.InstallProcess(sandbox.KindDSAServer); err != nil {
			removeSock()
			return cli.Exit(fmt.Sprintf("godvm dsa-server: %v", err), 1)
		}
	}
	slog.Info("dsa-server: listening", "socket", sock, "dsa", cfg.String(), "portal", c.String("portal"), "seccomp", on)
	if err := vfiouser.NewServer(b, slog.Default()).Listen(l); err != nil && !errors.Is(err, net.ErrClosed) {
		return cli.Exit(fmt.Sprintf("godvm dsa-server: %v", err), 1)
	}
	return nil
}
