package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"godvm/devices/dsa"
	"godvm/vfio/vfiouser"
	"godvm/vfio/vfiouser/dsabackend"
)

func init() {
	subcommands = append(subcommands, &cli.Command{
		Name:      "dsa-server",
		Usage:     "serve a software DSA to a VMM over vfio-user (godvm run --vfio-user SOCKET)",
		UsageText: "godvm dsa-server --socket PATH [--dsa wqs=8,wq-size=128,...] [--portal mapped|trapped]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Aliases: []string{"socket-path"}, Required: true, Usage: "UNIX socket to listen on"},
			&cli.StringFlag{Name: "dsa", Usage: "device shape (keys: wqs, wq-size, groups, engines, version, int-handles)"},
			&cli.StringFlag{Name: "portal", Value: "mapped", Usage: "mapped: offer the portal BAR as shared memory the server polls (guest portal writes do not exit); trapped: 64-byte region writes only"},
		},
		Action: runDSAServer,
	})
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
	sock := c.String("socket")
	if fi, err := os.Lstat(sock); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return cli.Exit(fmt.Sprintf("godvm dsa-server: %s exists and is not a socket", sock), 1)
		}
		os.Remove(sock) // a stale socket from an earlier server
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return cli.Exit(fmt.Sprintf("godvm dsa-server: %v", err), 1)
	}
	defer os.Remove(sock)
	b, err := dsabackend.New(cfg, mapped, slog.Default())
	if err != nil {
		l.Close()
		return cli.Exit(fmt.Sprintf("godvm dsa-server: %v", err), 1)
	}
	defer b.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		slog.Info("dsa-server: stopping", "signal", s.String())
		l.Close()
		os.Remove(sock)
		os.Exit(0) // a connected client sees EOF and marks its device failed
	}()
	slog.Info("dsa-server: listening", "socket", sock, "dsa", cfg.String(), "portal", c.String("portal"))
	if err := vfiouser.NewServer(b, slog.Default()).Listen(l); err != nil && !errors.Is(err, net.ErrClosed) {
		return cli.Exit(fmt.Sprintf("godvm dsa-server: %v", err), 1)
	}
	return nil
}
