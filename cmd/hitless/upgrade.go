//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/hitless/hitless/internal/control"
)

func upgradeCommand() *cobra.Command {
	var f controlFlags
	var binary string
	c := &cobra.Command{
		Use:   "upgrade [--control PATH | --name NAME] [--binary PATH] [--timeout D]",
		Short: "Replace the running hitless with a new binary in place: same pid, children and sockets kept",
		Long: `hitless upgrade asks a running "hitless run" to replace its own binary, in
the same process: the pid does not change (systemd's MAINPID, pid files and
PID 1 in a container stay right), the children are not restarted (the
serving generation and the draining ones go on, with their deadlines), and
every socket, notify socket, output pipe, the control socket, the metrics
listener, the counters and histograms are kept. The settings are kept too: the
new image runs with the command line, environment and config file contents
hitless started with; if the config file changed since, the verdict says
which keys differ (they take effect at the next start).

The new binary is the path hitless was started from, resolved afresh (a
deploy moves a new file over it, or switches a symlink), or --binary. It is
first run in a check mode: anything but a hitless that understands this one's
state (not executable, not hitless, an incompatible version, a crash) is
refused, and nothing changes. If the new image then cannot take the state
over, it runs the previous one again, which serves on with everything: the
verdict says "rolled back" and why.

A generation being started finishes first (a generation on trial goes across
the upgrade, its deadline kept); a reload asked meanwhile waits for the
upgrade and runs once after it; a stop asked during the new binary's check
kills the check and stops at once (exit 1, "hitless is stopping"), one asked
during the hand-over stops the new image. An upgrade to another --binary
while one is under way is refused. The answer comes from the new image, on
the same connection.
` + socketHelp + "\n" + exitHelp,
		Example: `  install -m 0755 hitless.new /usr/local/bin/hitless && hitless upgrade --name app`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if binary != "" && !filepath.IsAbs(binary) {
				abs, err := filepath.Abs(binary)
				if err != nil {
					return usagef("--binary %q: %w", binary, err)
				}
				binary = abs
			}
			return upgradeRun(c.Context(), &f, binary, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	f.register(c, 2*time.Minute, "how long to wait for the verdict")
	c.Flags().StringVar(&binary, "binary", "", "the new binary (default: the path hitless was started from, resolved afresh)")
	return c
}

func upgradeRun(ctx context.Context, f *controlFlags, binary string, stdout, stderr io.Writer) error {
	c, err := f.dial(stderr)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Upgrade(ctx, binary, f.timeout)
	var failed *control.UpgradeFailed
	if errors.As(err, &failed) {
		fmt.Fprintf(stderr, "hitless: %s\n", failed.Msg)
		fmt.Fprintf(stderr, "hitless: the running hitless goes on, with every child and socket\n")
		return exitCode(exitFailed)
	}
	var remote *control.RemoteError
	if errors.As(err, &remote) && remote.Code == control.CodeStopping {
		// A stop came first, or during the check, which it cancelled.
		fmt.Fprintln(stderr, "hitless: hitless is stopping; the upgrade did not happen")
		return exitCode(exitFailed)
	}
	if err != nil {
		return report(stderr, err)
	}
	fmt.Fprintf(stdout, "upgraded: hitless pid %d now runs %s", r.PID, r.Running)
	if r.Version != "" {
		fmt.Fprintf(stdout, " (%s)", r.Version)
	}
	fmt.Fprintf(stdout, "; %d generation(s) kept\n", r.Generations)
	if r.Note != "" {
		fmt.Fprintf(stdout, "note: %s\n", r.Note)
	}
	return nil
}
