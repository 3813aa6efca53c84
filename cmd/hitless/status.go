//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
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
		Long: `hitless status first names the binary hitless runs (and its version),
since when hitless runs, and when it last upgraded itself in place. Then it
shows every generation of the child that has not exited yet:
its number, pid, state (starting, trial, serving, draining, failed), age,
resident memory of its process group, the interval within which it must send
WATCHDOG=1 (with hitless run --watchdog) and the last STATUS= it sent; a
generation on trial shows how long its trial has left. Then the counters
(reloads that served, failed, or were rolled back during their trial,
restarts after a crash, watchdog kills), the last failed upgrade of hitless
itself if there was one, and the last failure. During a reload or a drain,
two or more generations are listed.

--json prints the same as one JSON object: pid, binary, version, started,
upgrading (an upgrade of hitless is under way), upgrade_queued (one waits
for the reload in flight), reload_queued (a reload waits for the one in
flight, or for the upgrade), generations (generation, pid, state, started, ready_at, drain_at,
trial_ends_at, watchdog_usec, status, stopping, rss_bytes), listeners (name, network, address, fd, and
source: bound by hitless, passed by systemd, or passed back from systemd's
fd store), stopping, reloads_ok, reloads_failed, reloads_rolled_back,
restarts, watchdog_kills, upgrades_ok, upgrades_failed (all told),
upgrades_refused, upgrades_rolled_back, last_upgrade (id, result, reason,
at, binary), last_failure, last_failure_at.
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

// printStatus writes st for a human: who runs, the generations, the
// counters and what failed last.
func printStatus(w io.Writer, path string, st supervisor.Status, now time.Time) {
	printHeader(w, path, st, now)
	printGenerations(w, st.Generations, now)
	fmt.Fprintf(w, "reloads: %d ok, %d failed, %d rolled back; restarts after a crash: %d; watchdog kills: %d\n",
		st.ReloadsOK, st.ReloadsFailed, st.ReloadsRolledBack, st.Restarts, st.WatchdogKills)
	if u := st.LastUpgrade; u != nil && u.Result != "ok" {
		fmt.Fprintf(w, "last upgrade (%s ago, to %s): %s: %s\n", fmtAge(now.Sub(u.At)), u.Binary, strings.ReplaceAll(u.Result, "_", " "), oneLine(u.Reason))
	}
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

// printHeader writes hitless's own lines: its pid and state, its binary.
func printHeader(w io.Writer, path string, st supervisor.Status, now time.Time) {
	state := "running"
	switch {
	case st.Stopping:
		state = "stopping"
	case st.Upgrading:
		state = "upgrading itself"
	case st.UpgradeQueued:
		state = "running, an upgrade waits for the reload in flight"
	}
	if st.ReloadQueued {
		state += ", a reload is queued"
	}
	if st.StandbyPID != 0 {
		// The process an operator sees beside the generations: the
		// next one's, forked ahead.
		state += fmt.Sprintf(", standby pid %d", st.StandbyPID)
	}
	fmt.Fprintf(w, "hitless pid %d, %s, control %s\n", st.PID, state, path)
	if st.Binary != "" {
		fmt.Fprintf(w, "binary %s", st.Binary)
		if st.Version != "" {
			fmt.Fprintf(w, " (%s)", st.Version)
		}
		if !st.Started.IsZero() {
			fmt.Fprintf(w, ", started %s ago", fmtAge(now.Sub(st.Started)))
		}
		if u := st.LastUpgrade; u != nil && u.Result == "ok" {
			fmt.Fprintf(w, ", upgraded in place %s ago", fmtAge(now.Sub(u.At)))
		}
		fmt.Fprintln(w)
	}
}

// printGenerations writes the table of generations.
func printGenerations(w io.Writer, gens []supervisor.GenerationStatus, now time.Time) {
	// The watchdog column only when a watchdog is enforced.
	watchdog := false
	for _, g := range gens {
		watchdog = watchdog || g.WatchdogUSec > 0
	}
	wd := func(s string) string {
		if !watchdog {
			return ""
		}
		return s + "\t"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GENERATION\tPID\tSTATE\tAGE\tRSS\t"+wd("WATCHDOG")+"STATUS")
	if len(gens) == 0 {
		fmt.Fprintln(tw, "-\t-\t(no child)\t-\t-\t"+wd("-")+"-")
	}
	for _, g := range gens {
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
		state := string(g.State)
		if g.State == supervisor.Trial && !g.TrialEndsAt.IsZero() {
			state += ", " + fmtAge(g.TrialEndsAt.Sub(now)) + " left"
		}
		interval := "-"
		if g.WatchdogUSec > 0 {
			interval = (time.Duration(g.WatchdogUSec) * time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%.1f MiB\t%s%s\n", g.ID, g.PID, state, age, float64(g.RSS)/(1<<20), wd(interval), text)
	}
	tw.Flush()
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
