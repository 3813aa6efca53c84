//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/hitless/hitless/internal/control"
)

// trialCommand is "hitless promote" or "hitless rollback": both end the
// trial of the generation on trial, and differ only in the verdict.
func trialCommand(name, short, long, done string, end func(*control.Client, context.Context, time.Duration) (*control.GenRef, error)) *cobra.Command {
	var f controlFlags
	c := &cobra.Command{
		Use:   name + " [--control PATH | --name NAME]",
		Short: short,
		Long: long + `

Without a generation on trial (hitless run without --trial, or no reload in
progress) it changes nothing and exits 1.
` + socketHelp + "\n" + exitHelp,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return endTrial(c.Context(), &f, end, done, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	f.register(c, 10*time.Second, "how long to wait for the answer")
	return c
}

func promoteCommand() *cobra.Command {
	return trialCommand("promote",
		"End the trial of a reloaded generation now: it serves, and the old one drains",
		`hitless promote ends the trial window of the generation on trial (see
hitless run --trial) at once, as if it had passed: the new generation is the
serving one, the old one is sent the drain signal, and the "hitless reload"
waiting for the verdict exits 0.`,
		"promoted", (*control.Client).Promote)
}

func rollbackCommand() *cobra.Command {
	return trialCommand("rollback",
		"End the trial of a reloaded generation now: it drains, and the old one serves on",
		`hitless rollback ends the trial window of the generation on trial (see
hitless run --trial) with a rollback: the new generation is sent the drain
signal, the old one, which was never signalled, goes on serving, and the
"hitless reload" waiting for the verdict exits 1, saying it was rolled back.`,
		"rolled back", (*control.Client).Rollback)
}

func endTrial(ctx context.Context, f *controlFlags, end func(*control.Client, context.Context, time.Duration) (*control.GenRef, error), done string, stdout, stderr io.Writer) error {
	c, err := f.dial(stderr)
	if err != nil {
		return err
	}
	defer c.Close()
	g, err := end(c, ctx, f.timeout)
	if err != nil {
		return report(stderr, err)
	}
	if g == nil {
		fmt.Fprintf(stdout, "%s; no generation is serving\n", done)
		return nil
	}
	fmt.Fprintf(stdout, "%s: %s serving\n", done, genName(g.Generation, g.PID))
	return nil
}
