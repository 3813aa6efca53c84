//go:build linux

package hidden

import (
	"os"
	"syscall"
	"unsafe"
)

// startVersion is the first field of a start message. The message never
// crosses a release: the shim runs the image of the hitless that forked
// it (/proc/self/exe), and a standby is let go of before an upgrade's
// exec. The version only makes a garbled message fail loudly.
const startVersion = "1"

// StartMessage is what the supervisor writes on a shim's start pipe, then
// closes: the working directory, the program, its argv and its whole
// environment, each field ended by a NUL, the lists preceded by their
// lengths:
//
//	"1" DIR PROG ARGC ARGV... ENVC ENV...
//
// All of it is decided when the generation starts, not when the shim was
// forked (a standby may wait for minutes): a deploy that switched a
// "current" symlink in between starts in the new release.
func StartMessage(dir, prog string, argv, env []string) []byte {
	n := len(startVersion) + len(dir) + len(prog) + 4 + 2*20
	for _, s := range argv {
		n += len(s) + 1
	}
	for _, s := range env {
		n += len(s) + 1
	}
	b := make([]byte, 0, n)
	field := func(s string) { b = append(append(b, s...), 0) }
	field(startVersion)
	field(dir)
	field(prog)
	field(itoa(len(argv)))
	for _, s := range argv {
		field(s)
	}
	field(itoa(len(env)))
	for _, s := range env {
		field(s)
	}
	return b
}

// start is a parsed StartMessage.
type start struct {
	dir, prog string
	argv, env []string
}

// parseStart reads a whole StartMessage, and nothing after it; a message
// cut short (its writer died) is not one.
func parseStart(b []byte) (st start, ok bool) {
	next := func() (string, bool) {
		for i, c := range b {
			if c == 0 {
				s := string(b[:i])
				b = b[i+1:]
				return s, true
			}
		}
		return "", false
	}
	list := func() ([]string, bool) {
		f, ok := next()
		n, okn := atoi(f)
		if !ok || !okn || n > len(b) {
			return nil, false
		}
		l := make([]string, n)
		for i := range l {
			if l[i], ok = next(); !ok {
				return nil, false
			}
		}
		return l, true
	}
	v, ok1 := next()
	dir, ok2 := next()
	prog, ok3 := next()
	argv, ok4 := list()
	env, ok5 := list()
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || v != startVersion || len(b) != 0 || len(argv) == 0 {
		return start{}, false
	}
	return start{dir: dir, prog: prog, argv: argv, env: env}, true
}

// shim is the shim's main: hitless ShimArg REPORT START, the numbers of
// its report pipe's write end and of its start pipe's read end. It
// returns only if it does not execute the program, with the exit status
// to use.
//
// It reports when it ran, then waits for its StartMessage: at once for a
// generation that starts now, for as long as hitless lets it for a
// standby. An empty start pipe at EOF is hitless letting go of it (or
// gone): the shim exits 0 having run nothing.
func shim(args []string) int {
	report, ok1 := atoi(get(args, 0))
	startFD, ok2 := atoi(get(args, 1))
	if len(args) != 2 || !ok1 || !ok2 || report < 3 || startFD < 3 {
		os.Stderr.WriteString("hitless: internal shim called without its pipes\n")
		return ExecFailed
	}
	var b [8]byte
	t := uint64(Monotonic())
	for i := range b {
		b[i] = byte(t >> (8 * i))
	}
	syscall.Write(report, b[:])
	syscall.CloseOnExec(report)
	msg, err := readAll(startFD)
	syscall.Close(startFD)
	if err == nil && len(msg) == 0 {
		return 0
	}
	st, ok := parseStart(msg)
	if err != nil || !ok {
		os.Stderr.WriteString("hitless: internal shim got no whole start message\n")
		return ExecFailed
	}
	pid := itoa(syscall.Getpid())
	env := append(st.env, "LISTEN_PID="+pid)
	for _, kv := range st.env {
		if len(kv) > len("WATCHDOG_USEC=") && kv[:len("WATCHDOG_USEC=")] == "WATCHDOG_USEC=" {
			env = append(env, "WATCHDOG_PID="+pid)
			break
		}
	}
	// A shim dies with hitless until it is given its program (see the
	// supervisor's standby.go); the program must not: when hitless dies
	// during an upgrade's exec, the watcher drains it.
	syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, 0, 0)
	if err := syscall.Chdir(st.dir); err != nil {
		os.Stderr.WriteString("hitless: chdir " + st.dir + ": " + err.Error() + "\n")
		return ExecFailed
	}
	// The program starts with no signal blocked, whatever mask the
	// runtime left on this thread (a mask survives execve). Inits run on
	// the main thread, locked to it.
	var none uint64
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, 2 /* SIG_SETMASK */, uintptr(unsafe.Pointer(&none)), 0, 8, 0, 0)
	err = syscall.Exec(st.prog, st.argv, env)
	os.Stderr.WriteString("hitless: exec " + st.prog + ": " + err.Error() + "\n")
	return ExecFailed
}

func get(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

// readAll reads fd until EOF.
func readAll(fd int) ([]byte, error) {
	var msg []byte
	buf := make([]byte, 16<<10)
	for {
		n, err := syscall.Read(fd, buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, err
		case n == 0:
			return msg, nil
		}
		msg = append(msg, buf[:n]...)
	}
}

// Monotonic reads CLOCK_MONOTONIC, in nanoseconds: the clock of the
// shim's report, which the parent reads too.
func Monotonic() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}
