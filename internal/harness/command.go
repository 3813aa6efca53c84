package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// CLIResult is the outcome of one run of a command, such as a hitless
// client (`hitless reload`, `status`, `stop`).
type CLIResult struct {
	Code           int // exit status
	Stdout, Stderr string
	Took           time.Duration
}

func (r CLIResult) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout: %s\nstderr: %s", r.Code, r.Took.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// NoRaceExitSleep returns this process's GORACE with atexit_sleep_ms=0
// added. A binary built with the race detector sleeps a second before it
// exits, to catch late reports: a child or client that is run often
// would pay it at each run, and every wait for its exit would wait that
// long. A TestMain that runs race-built children sets GORACE to it.
func NoRaceExitSleep() string {
	return strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
}

// environ is the environment of every hitless the harness runs: this
// process's, GORACE as NoRaceExitSleep gives it, then extra (which wins
// over both).
func environ(extra ...string) []string {
	env := append(os.Environ(), "GORACE="+NoRaceExitSleep())
	return append(env, extra...)
}

// RunCLI runs argv, killing it if it still runs after d; an exit status
// other than 0 is a result, not an error. A binary built with the race
// detector is told not to sleep as it exits (see environ).
func RunCLI(d time.Duration, argv ...string) (CLIResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := CLIResult{Stdout: stdout.String(), Stderr: stderr.String(), Took: time.Since(start)}
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s: still running after %v", strings.Join(argv, " "), d)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.Code = exit.ExitCode()
	default:
		return r, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return r, nil
}

// Build compiles the Go package pkg into the binary out, running go build
// in dir (the current directory if empty) with flags such as -race.
func Build(dir, out, pkg string, flags ...string) error {
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}
