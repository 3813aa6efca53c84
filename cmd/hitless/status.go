//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hitless/hitless/supervisor"
)

func statusCommand() *cobra.Command {
	var f controlFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "status [--control PATH | --name NAME] [--json]",
		Short: "Show a running hitless's generations, reload counters and last failure",
		Long: `hitless status shows every generation of the child that has not exited yet:
its number, pid, state (starting, ready, serving, draining, failed), age and
the last STATUS= it sent; then the reload counters and the last failure.
During a reload or a drain, two or more generations are listed.

--json prints the same as one JSON object: pid, generations (generation,
pid, state, started, ready_at, drain_at, status, stopping), listeners
(name, network, address, fd, and source: bound by hitless, passed by
systemd, or passed back from systemd's fd store),
stopping, reloads_ok, reloads_failed, restarts, last_failure,
last_failure_at.
` + socketHelp + "\n" + exitHelp,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.dial(c.ErrOrStderr())
			if err != nil {
				return err
			}
			defer cl.Close()
			st, err := cl.Status(c.Context())
			if err != nil {
				return report(c.ErrOrStderr(), err)
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(c.OutOrStdout(), cl.Path(), st, time.Now())
			return nil
		},
	}
	f.register(c, 10*time.Second, "how long to wait for the answer")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return c
}

func printStatus(w io.Writer, path string, st supervisor.Status, now time.Time) {
	state := "running"
	if st.Stopping {
		state = "stopping"
	}
	fmt.Fprintf(w, "hitless pid %d, %s, control %s\n", st.PID, state, path)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GENERATION\tPID\tSTATE\tAGE\tRSS\tSTATUS")
	if len(st.Generations) == 0 {
		fmt.Fprintln(tw, "-\t-\t(no child)\t-\t-\t-")
	}
	for _, g := range st.Generations {
		text := oneLine(g.Status)
		if g.Stopping {
			text = "[sent STOPPING=1] " + text
		}
		if text == "" {
			text = "-"
		}
		age := "-"
		if !g.Started.IsZero() {
			age = fmtAge(now.Sub(g.Started))
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%.1f MiB\t%s\n", g.ID, g.PID, g.State, age, float64(g.RSS)/(1<<20), text)
	}
	tw.Flush()
	fmt.Fprintf(w, "reloads: %d ok, %d failed; restarts after a crash: %d\n", st.ReloadsOK, st.ReloadsFailed, st.Restarts)
	if st.LastFailure != "" {
		when := ""
		if !st.LastFailureAt.IsZero() {
			when = fmt.Sprintf(" (%s ago, %s)", fmtAge(now.Sub(st.LastFailureAt)), st.LastFailureAt.Format(time.DateTime))
		}
		fmt.Fprintf(w, "last failure%s: %s\n", when, oneLine(st.LastFailure))
	}
	for _, l := range st.Listeners {
		fmt.Fprintf(w, "socket %s: %s %s (fd %d, %s)\n", l.Name, l.Network, l.Address, l.FD, l.Source)
	}
}

// fmtAge rounds d for a human: tenths of a second under a minute, whole
// seconds above.
func fmtAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
