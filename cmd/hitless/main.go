//go:build linux

// Command hitless runs a server as a child process on sockets that it
// holds for its whole life, and replaces the child without dropping a
// connection. See the README and "hitless help".
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	_ "github.com/hitless/hitless/cmd/hitless/internal/oneproc" // before the heavy inits: see its doc
	"github.com/hitless/hitless/internal/metrics"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

// usageError marks bad input: exit status 2, as for a bad flag.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// gcPercent is hitless's GOGC, unless the environment sets one. Its live
// heap is small (under 1 MiB) and a reload makes tens of KiB of garbage:
// with Go's default of 100, the heap may grow to 4 MiB before the first
// collection and stays resident, so hitless's memory would climb by
// megabytes over its first hundred reloads. At 25 the heap's floor is
// 1 MiB, a collection comes every few tens of reloads and takes well
// under a millisecond.
const gcPercent = 25

func init() {
	// The supervisor forks every child from the main thread, and an
	// upgrade in place execs from it (see package upgrade), which ends
	// every other thread: the main goroutine, which runs the supervisor,
	// stays on it, so that one thread owns the children and the exec.
	runtime.LockOSThread()
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == upgrade.CheckArg {
		os.Exit(upgrade.RunCheck(version()))
	}
	os.Exit(execute(os.Args[1:]))
}

func execute(args []string) int {
	root := &cobra.Command{
		Use:           "hitless",
		Short:         "Zero-downtime hot restarts for any server",
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(runCommand(), reloadCommand(), statusCommand(), stopCommand(), promoteCommand(), rollbackCommand(), upgradeCommand())
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var exit *supervisor.ExitError
	if errors.As(err, &exit) {
		return exit.Code
	}
	var code exitCode // a control command that has said why
	if errors.As(err, &code) {
		return int(code)
	}
	fmt.Fprintln(os.Stderr, "hitless:", err)
	var usage usageError
	if errors.As(err, &usage) || isCobraUsage(err) {
		return 2
	}
	return 1
}

// flagError is the error of a flag that cannot be parsed: a usage error.
// A value that the flag's parser refused reads "--flag: why", as the config
// file says "file:line: key: why"; the reason quotes the value.
func flagError(c *cobra.Command, err error) error {
	var bad *pflag.InvalidValueError
	if errors.As(err, &bad) {
		err = fmt.Errorf("--%s: %w", bad.GetFlag().Name, bad.Unwrap())
	}
	return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
}

// isCobraUsage recognises cobra's own errors for unknown commands and
// wrong argument counts, which it does not type.
func isCobraUsage(err error) bool {
	for _, p := range []string{"unknown command", "unknown flag", "accepts ", "requires at least", "invalid argument"} {
		if strings.Contains(err.Error(), p) {
			return true
		}
	}
	return false
}

// version is the module version the binary was built from, with the VCS
// revision when the build recorded one: what hitless_build_info says.
func version() string {
	b := metrics.ReadBuild()
	v := b.Version
	if b.Revision != "unknown" {
		v += " " + b.Revision[:min(12, len(b.Revision))]
	}
	return v + " " + b.GoVersion
}
