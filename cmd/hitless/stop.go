//go:build linux

package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func stopCommand() *cobra.Command {
	var f controlFlags
	c := &cobra.Command{
		Use:   "stop [--control PATH | --name NAME] [--timeout D]",
		Short: "Stop a running hitless gracefully and wait until its children are gone",
		Long: `hitless stop does what SIGTERM to hitless does: every child is sent the drain
signal and given hitless run's --drain-timeout before its process group gets
SIGKILL; then hitless closes its sockets and exits. hitless stop waits until
every child is gone, and exits 0 then.

If --timeout passes first, hitless goes on stopping (exit status 4).
` + socketHelp + "\n" + exitHelp,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.dial(c.ErrOrStderr())
			if err != nil {
				return err
			}
			defer cl.Close()
			if err := cl.Stop(c.Context(), f.timeout); err != nil {
				return report(c.ErrOrStderr(), err)
			}
			fmt.Fprintln(c.OutOrStdout(), "stopped")
			return nil
		},
	}
	f.register(c, 60*time.Second, "how long to wait; keep it above hitless run's --drain-timeout")
	return c
}
