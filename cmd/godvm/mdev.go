package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"godvm/vfio/mdev"
)

// mdevCommand is `godvm mdev list|create|remove`.
func mdevCommand() *cli.Command {
	sysfsFlag := &cli.StringFlag{Name: "sysfs", Value: "/sys", Usage: "sysfs root (for tests)"}
	return &cli.Command{
		Name:  "mdev",
		Usage: "create, list and remove VFIO mediated devices (e.g. DSA work queues) through sysfs",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list mdev types offered by parents, and existing instances",
				Flags: []cli.Flag{sysfsFlag},
				Action: func(c *cli.Context) error {
					s := mdev.Sysfs(c.String("sysfs"))
					w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					types, err := s.Types()
					if err != nil {
						fmt.Fprintln(c.App.ErrWriter, err)
					}
					if len(types) > 0 {
						fmt.Fprintln(w, "PARENT\tTYPE\tAPI\tAVAILABLE\tNAME")
						for _, t := range types {
							fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", t.Parent, t.ID, t.DeviceAPI, t.Available, t.Name)
						}
					}
					devs, err := s.Devices()
					if err != nil {
						return cli.Exit("godvm mdev list: "+err.Error(), 1)
					}
					if len(devs) > 0 {
						fmt.Fprintln(w, "\nUUID\tPARENT\tTYPE")
						for _, d := range devs {
							fmt.Fprintf(w, "%s\t%s\t%s\n", d.UUID, d.Parent, d.Type)
						}
					}
					return w.Flush()
				},
			},
			{
				Name:      "create",
				Usage:     "create an instance of TYPE and print its UUID (for godvm run --vfio UUID)",
				ArgsUsage: "TYPE",
				Flags: []cli.Flag{sysfsFlag,
					&cli.StringFlag{Name: "parent", Usage: "parent device (needed when several offer TYPE)"},
					&cli.StringFlag{Name: "uuid", Usage: "UUID to use (default: a random one)"}},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("godvm mdev create: want exactly one TYPE (see 'godvm mdev list')", 1)
					}
					u, err := mdev.Sysfs(c.String("sysfs")).Create(c.String("parent"), c.Args().First(), c.String("uuid"))
					if err != nil {
						return cli.Exit("godvm mdev create: "+err.Error(), 1)
					}
					fmt.Fprintln(c.App.Writer, u)
					return nil
				},
			},
			{
				Name:      "remove",
				Usage:     "remove the instance UUID",
				ArgsUsage: "UUID",
				Flags:     []cli.Flag{sysfsFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("godvm mdev remove: want exactly one UUID", 1)
					}
					if err := mdev.Sysfs(c.String("sysfs")).Remove(c.Args().First()); err != nil {
						return cli.Exit("godvm mdev remove: "+err.Error(), 1)
					}
					return nil
				},
			},
		},
	}
}
