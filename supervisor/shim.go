//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// The hidden modes of the binary that embeds the supervisor. It starts
// itself (ShimPath, /proc/self/exe by default) in these modes, so its main
// must call RunHidden before anything else.
const (
	// ShimArg starts the shim, which runs between fork and the child's
	// program. os/exec and syscall.StartProcess fix the environment before
	// fork, so the parent cannot know the pid to put in LISTEN_PID. The
	// shim runs in the child's process, sets LISTEN_PID (and WATCHDOG_PID,
	// when the child has a watchdog) to its own pid and replaces itself
	// with the target by execve, which keeps the pid, the process group
	// and the inherited descriptors.
	ShimArg = "__hitless_exec"
	// WatchArg starts the watcher: see watcher.go.
	WatchArg = "__hitless_watch"
)

// RunHidden runs the hidden mode args[0] names, if it names one, and
// returns the exit status for it and true; otherwise 0 and false.
//
//	func main() {
//		if code, ok := supervisor.RunHidden(os.Args[1:]); ok {
//			os.Exit(code)
//		}
//		...
//	}
func RunHidden(args []string) (int, bool) {
	if len(args) == 0 {
		return 0, false
	}
	switch args[0] {
	case ShimArg:
		return runShim(args[1:]), true
	case WatchArg:
		return runWatcher(os.NewFile(3, "watch pipe")), true
	}
	return 0, false
}

// runShim is the shim's main: args are the resolved path of the program
// followed by its argv. It returns only on failure, with the exit status to
// use (127 as a shell does when the program cannot be executed).
func runShim(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "hitless: internal shim called without a program")
		return 127
	}
	pid := strconv.Itoa(os.Getpid())
	env := append(os.Environ(), "LISTEN_PID="+pid)
	if _, ok := os.LookupEnv("WATCHDOG_USEC"); ok {
		env = append(env, "WATCHDOG_PID="+pid)
	}
	// The child starts with no signal blocked, whatever mask hitless's
	// runtime started with (a mask survives fork and execve).
	var none unix.Sigset_t
	unix.PthreadSigmask(unix.SIG_SETMASK, &none, nil)
	err := unix.Exec(args[0], args[1:], env)
	fmt.Fprintf(os.Stderr, "hitless: exec %s: %v\n", args[0], err)
	return 127
}
