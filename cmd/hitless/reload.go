//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hitless/hitless/internal/config"
	"github.com/hitless/hitless/internal/control"
	"github.com/hitless/hitless/supervisor"
)

// Exit statuses of the control commands (reload, status, stop, promote,
// rollback, upgrade).
const (
	exitFailed      = 1 // the reload failed, or hitless refused the command
	exitUsage       = 2 // bad flags or arguments
	exitUnreachable = 3 // no control socket, nothing listening, permission denied
	exitNoVerdict   = 4 // the timeout passed before the outcome was known
)

// exitCode ends the program with that status; the command has already
// said why on stderr.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const exitHelp = `
Exit status:
  0  done (for reload: the new generation serves, its trial passed if any;
     for upgrade: the new binary runs, same pid, children untouched)
  1  failed: the reload failed or was rolled back during its trial (the
     reason and the new child's last stderr lines are printed; the old
     generation keeps serving), the upgrade was refused, failed or rolled
     back (the old binary keeps running), or hitless refused the command
     (for instance because it is stopping, or because no generation is on
     trial)
  2  usage error
  3  cannot reach hitless: no control socket, nothing listening on it,
     permission denied (only root and the user hitless runs as may use it)
  4  --timeout passed before the outcome was known: the command goes on
     inside hitless ("hitless status" tells how it ended)`

const socketHelp = `
The control socket is --control PATH if given, else $HITLESS_CONTROL, else
NAME.sock in the default directory, NAME being --name (as given to hitless
run, where it defaults to the base name of the command). The default
directory is $XDG_RUNTIME_DIR/hitless if XDG_RUNTIME_DIR is set, /run/hitless
for root, $TMPDIR/hitless-UID otherwise. Without --name, the only live socket
in that directory is used.`

// controlFlags are the flags every control command has.
type controlFlags struct {
	control string
	name    string
	timeout time.Duration
}

func (f *controlFlags) register(c *cobra.Command, timeout time.Duration, timeoutHelp string) {
	fl := c.Flags()
	fl.StringVar(&f.control, "control", "", "control socket of the hitless to talk to (default $HITLESS_CONTROL, else derived from --name)")
	fl.StringVar(&f.name, "name", "", "service name as given to hitless run (default: the only control socket in the default directory)")
	f.timeout = timeout
	fl.Var(config.Duration(&f.timeout), "timeout", timeoutHelp)
}

// dial finds the control socket and connects to it. Its errors are
// already reported: it returns exitCode.
func (f *controlFlags) dial(stderr io.Writer) (*control.Client, error) {
	path, err := control.Resolve(f.control, f.name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintln(stderr, "hitless:", err)
			return nil, exitCode(exitUnreachable)
		}
		return nil, usageError{err}
	}
	c, err := control.Dial(path)
	if err != nil {
		var unreach *control.UnreachableError
		if errors.As(err, &unreach) {
			fmt.Fprintln(stderr, "hitless:", err)
			return nil, exitCode(exitUnreachable)
		}
		return nil, usageError{err} // a path no socket can have
	}
	return c, nil
}

// report prints an error from a control command and returns its exit code.
func report(stderr io.Writer, err error) error {
	fmt.Fprintln(stderr, "hitless:", err)
	var unreach *control.UnreachableError
	switch {
	case errors.As(err, &unreach):
		return exitCode(exitUnreachable)
	case errors.Is(err, control.ErrNoVerdict):
		return exitCode(exitNoVerdict)
	}
	return exitCode(exitFailed)
}

func reloadCommand() *cobra.Command {
	var f controlFlags
	c := &cobra.Command{
		Use:   "reload [--control PATH | --name NAME] [--timeout D]",
		Short: "Reload a running hitless and wait until the new generation serves, or failed",
		Long: `hitless reload asks a running "hitless run" to start a new generation of its
child (or joins the reload already queued) and waits for the verdict: it
exits 0 once the new generation is ready and serving, and non-zero if it
exited or was not ready within hitless run's --ready-timeout, printing the
reason and the last lines the new child wrote to stderr. Either way, the old
generation keeps serving until a new one is ready.

With hitless run --trial, the verdict comes at the end of the trial: exit 0
once the trial passed (or hitless promote ended it) and the old generation
drains; exit 1 if the new generation exited, missed its watchdog or was
rolled back (hitless rollback) meanwhile: then it drains, and the old
generation, which was never signalled, serves on.

This is what systemd's ExecReload= and deploy scripts should run; unlike
"kill -HUP", it tells whether the new version serves.

If --timeout passes first, the verdict is unknown: the reload goes on, and
"hitless status" tells how it ended (exit status 4).
` + socketHelp + "\n" + exitHelp,
		Example: `  hitless reload --control /run/hitless-app/control.sock --timeout 90s
  hitless reload --name orders`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return reload(c.Context(), &f, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	f.register(c, 90*time.Second, "how long to wait for the verdict; keep it above hitless run's --ready-timeout plus --trial")
	return c
}

func reload(ctx context.Context, f *controlFlags, stdout, stderr io.Writer) error {
	c, err := f.dial(stderr)
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Reload(ctx, f.timeout)
	var failed *control.ReloadFailed
	if errors.As(err, &failed) {
		r := failed.Result
		fmt.Fprintf(stderr, "hitless: reload failed: %s: %s\n", genName(r.Generation, r.PID), r.Reason)
		switch {
		case r.Serving != nil && r.RolledBack:
			fmt.Fprintf(stderr, "hitless: %s is still serving; it was never signalled\n", genName(r.Serving.Generation, r.Serving.PID))
		case r.Serving != nil:
			fmt.Fprintf(stderr, "hitless: %s is still serving\n", genName(r.Serving.Generation, r.Serving.PID))
		default:
			fmt.Fprintln(stderr, "hitless: no generation is serving")
		}
		if len(r.Stderr) > 0 {
			fmt.Fprintf(stderr, "hitless: last lines generation %d wrote to stderr:\n", r.Generation)
			for _, l := range r.Stderr {
				fmt.Fprintf(stderr, "  | %s\n", l)
			}
		}
		return exitCode(exitFailed)
	}
	if errors.Is(err, control.ErrNoVerdict) {
		explainNoVerdict(ctx, c, stderr)
	}
	if err != nil {
		return report(stderr, err)
	}
	fmt.Fprintf(stdout, "reload ok: %s serving\n", genName(res.Generation, res.PID))
	return nil
}

// explainNoVerdict says why a reload has no verdict yet when the reason is
// a trial: the verdict comes at its end, which may be after --timeout.
func explainNoVerdict(ctx context.Context, c *control.Client, stderr io.Writer) {
	st, err := c.Status(ctx)
	if err != nil {
		return
	}
	for _, g := range st.Generations {
		if g.State == supervisor.Trial {
			fmt.Fprintf(stderr, "hitless: %s is on trial until %s (%s from now); the verdict comes then (give hitless reload a --timeout above --ready-timeout plus --trial)\n",
				genName(g.ID, g.PID), g.TrialEndsAt.Format(time.TimeOnly), fmtAge(time.Until(g.TrialEndsAt)))
		}
	}
}

func genName(gen, pid int) string {
	s := "generation " + fmt.Sprint(gen)
	if gen == 0 {
		s = "the new generation"
	}
	if pid > 0 {
		s += fmt.Sprintf(" (pid %d)", pid)
	}
	return s
}

// oneLine keeps text from a child on one line of output.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
