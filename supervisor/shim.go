//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ShimArg is the hidden first argument with which hitless re-executes its
// own binary between fork and the child's program.
//
// os/exec and syscall.StartProcess fix the environment before fork, so the
// parent cannot know the pid to put in LISTEN_PID. The shim runs in the
// child's process, sets LISTEN_PID (and WATCHDOG_PID, when the child has a
// watchdog) to its own pid and replaces itself with
// the target by execve, which keeps the pid, the process group, the parent
// death signal and the inherited descriptors. The binary that embeds the
// supervisor must call RunShim when it sees ShimArg first.
const ShimArg = "__hitless_exec"

// RunShim is the shim's main: args are the resolved path of the program
// followed by its argv. It returns only on failure, with the exit status to
// use (127 as a shell does when the program cannot be executed).
func RunShim(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "hitless: internal shim called without a program")
		return 127
	}
	pid := strconv.Itoa(os.Getpid())
	env := append(os.Environ(), "LISTEN_PID="+pid)
	if _, ok := os.LookupEnv("WATCHDOG_USEC"); ok {
		env = append(env, "WATCHDOG_PID="+pid)
	}
	err := unix.Exec(args[0], args[1:], env)
	fmt.Fprintf(os.Stderr, "hitless: exec %s: %v\n", args[0], err)
	return 127
}
