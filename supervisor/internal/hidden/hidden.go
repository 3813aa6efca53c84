//go:build linux

// Package hidden runs the supervisor's hidden modes, the shim and the
// watcher, from its init, before the rest of the program is initialised.
//
// # Model
//
// The supervisor starts its own binary (/proc/self/exe) in these modes:
// the shim once per generation, between fork and the child's program,
// and the watcher once per hitless. Neither needs anything of the
// program but a few system calls, yet a Go program initialises every
// package it links before main, the Prometheus client's, protobuf's and
// net/http's among them: milliseconds of CPU and megabytes of memory,
// paid at each reload and for the watcher's whole life. This package's
// init does the mode's work and never returns when os.Args[1] names one.
// Go initialises a package as soon as the packages it imports are, in
// import-path order among those ready (Go 1.21 and later), and this one
// imports only os, os/signal and what they import, so it runs right after
// os/signal, before the heavy packages: TestHiddenModesRunBeforeHeavyInit
// (internal/e2e) checks it with GODEBUG=inittrace=1. Any other run of
// the binary passes through with a comparison of one string.
//
// The shim (ShimArg) runs in the child's process: os/exec and
// syscall.StartProcess fix the environment before fork, so the parent
// cannot know the pid to put in LISTEN_PID. It sets LISTEN_PID (and
// WATCHDOG_PID, when the child has a watchdog) to its own pid and
// replaces itself with the program by execve, which keeps the pid, the
// process group, the parent-death signal and the inherited descriptors.
// Before that it writes the time it started running (CLOCK_MONOTONIC, 8
// bytes, little-endian) on its report pipe, which closes at the execve
// (close-on-exec): the parent reads when the shim ran and when the
// program replaced it, steps of a reload it logs.
//
// The watcher (WatchArg) makes sure nothing of a generation outlives
// hitless, however hitless dies: it reads "+PGID" and "-PGID" lines
// (Add, Remove) from fd 3 until EOF, then sends SIGKILL to each process
// group it was told of and not told is gone; or, if hitless died during
// the exec of an upgrade (between Upgrading and Running), drains them
// first. See the supervisor's watcher.go for the parent's side.
//
// # Limits
//
// Everything here must import only os, os/signal and what they import
// (syscall, time, slices, unsafe):
// the initialiser picks the first ready package by import path, so
// importing strconv or strings, light as they are, would make this one
// wait until every ready package sorted before "strconv" (crypto, net,
// protobuf...) is initialised. A program that links this package and is
// started with one of these arguments runs the mode, whatever its main
// says.
package hidden

import (
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
	"unsafe"
)

// The hidden first arguments.
const (
	// ShimArg starts the shim: hitless ShimArg FD PATH ARGV0 ARGV...
	// where FD is the write end of the report pipe ("-" for none) and
	// PATH the resolved program, run with ARGV0 ARGV...
	ShimArg = "__hitless_exec"
	// WatchArg starts the watcher, with the read end of its pipe as fd 3.
	WatchArg = "__hitless_watch"
)

// ExecFailed is the exit status of a shim that could not execute the
// program, as a shell's.
const ExecFailed = 127

func init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case ShimArg:
		os.Exit(shim(os.Args[2:]))
	case WatchArg:
		os.Exit(watch(os.NewFile(3, "watch pipe")))
	}
}

// shim is the shim's main. It returns only if it cannot execute the
// program, with the exit status to use.
func shim(args []string) int {
	if len(args) < 3 {
		os.Stderr.WriteString("hitless: internal shim called without a program\n")
		return ExecFailed
	}
	if fd, ok := atoi(args[0]); ok && fd > 2 {
		var b [8]byte
		t := uint64(Monotonic())
		for i := range b {
			b[i] = byte(t >> (8 * i))
		}
		syscall.Write(fd, b[:])
		syscall.CloseOnExec(fd)
	}
	pid := itoa(syscall.Getpid())
	env := append(syscall.Environ(), "LISTEN_PID="+pid)
	if _, ok := syscall.Getenv("WATCHDOG_USEC"); ok {
		env = append(env, "WATCHDOG_PID="+pid)
	}
	// The program starts with no signal blocked, whatever mask the
	// runtime left on this thread (a mask survives execve). Inits run on
	// the main thread, locked to it.
	var none uint64
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, 2 /* SIG_SETMASK */, uintptr(unsafe.Pointer(&none)), 0, 8, 0, 0)
	err := syscall.Exec(args[1], args[2:], env)
	os.Stderr.WriteString("hitless: exec " + args[1] + ": " + err.Error() + "\n")
	return ExecFailed
}

// Monotonic reads CLOCK_MONOTONIC, in nanoseconds: the clock of the
// shim's report, which the parent reads too.
func Monotonic() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

// The lines that tell the watcher of a process group that starts (Add)
// and of one that is gone (Remove), and, around the exec of an upgrade,
// that an exec is under way and how to drain the groups should hitless
// die before an image runs again (Upgrading, "U SIGNAL MILLISECONDS"),
// and that one runs (Running, "R").
func Add(pgid int) string    { return "+" + itoa(pgid) + "\n" }
func Remove(pgid int) string { return "-" + itoa(pgid) + "\n" }
func Upgrading(sig syscall.Signal, timeout time.Duration) string {
	return "U " + itoa(int(sig)) + " " + itoa(int(timeout.Milliseconds())) + "\n"
}

// Running is the line that ends Upgrading's.
const Running = "R\n"

// watch is the watcher's main: it reads process groups from pipe until
// EOF, then kills the ones it was not told are gone, or drains them if
// hitless died during the exec of an upgrade.
func watch(pipe *os.File) int {
	// Signals meant for hitless's terminal or group are not for it: it
	// ends when hitless does, and only then.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	groups := make(map[int]bool)
	var drain struct {
		on      bool
		sig     syscall.Signal
		timeout time.Duration
	}
	var buf [512]byte
	var line []byte
	for {
		n, err := pipe.Read(buf[:])
		for _, b := range buf[:n] {
			if b != '\n' {
				line = append(line, b)
				continue
			}
			switch l := string(line); {
			case l == "R":
				drain.on = false
			case len(l) > 2 && l[:2] == "U ":
				sig, ms, ok := twoNumbers(l[2:])
				if ok && sig > 0 && sig < 65 {
					drain.on, drain.sig, drain.timeout = true, syscall.Signal(sig), time.Duration(ms)*time.Millisecond
				} else {
					os.Stderr.WriteString("hitless watcher: ignoring the line " + l[:min(len(l), 64)] + "\n")
				}
			default:
				pgid, ok := 0, false
				if len(l) >= 2 && (l[0] == '+' || l[0] == '-') {
					pgid, ok = atoi(l[1:])
				}
				if ok && pgid > 1 {
					groups[pgid] = l[0] == '+'
				} else {
					os.Stderr.WriteString("hitless watcher: ignoring the line " + l[:min(len(l), 64)] + "\n")
				}
			}
			line = line[:0]
		}
		if err != nil {
			break
		}
	}
	var live []int
	for pgid, on := range groups {
		if on {
			live = append(live, pgid)
		}
	}
	if drain.on {
		os.Stderr.WriteString("hitless watcher: hitless died during an upgrade; draining " + itoa(len(live)) +
			" process group(s) with " + signalName(drain.sig) + ", for at most " + drain.timeout.String() + "\n")
		live = drainGroups(live, drain.sig, drain.timeout)
	}
	for _, pgid := range live {
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
			os.Stderr.WriteString("hitless watcher: kill process group " + itoa(pgid) + ": " + err.Error() + "\n")
		}
	}
	return 0
}

// drainGroups sends sig to each process group and waits until they are
// gone or timeout passes; it returns those left. Not its children, it
// cannot wait for them: it looks every 50 ms.
func drainGroups(groups []int, sig syscall.Signal, timeout time.Duration) []int {
	for _, pgid := range groups {
		syscall.Kill(-pgid, sig)
	}
	deadline := time.Now().Add(timeout)
	for len(groups) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		groups = slices.DeleteFunc(groups, func(pgid int) bool { return syscall.Kill(-pgid, 0) == syscall.ESRCH })
	}
	return groups
}

// signalName names the signals a drain may use, as x/sys/unix would.
func signalName(sig syscall.Signal) string {
	for _, s := range []struct {
		sig  syscall.Signal
		name string
	}{
		{syscall.SIGTERM, "SIGTERM"}, {syscall.SIGINT, "SIGINT"}, {syscall.SIGQUIT, "SIGQUIT"}, {syscall.SIGHUP, "SIGHUP"},
		{syscall.SIGUSR1, "SIGUSR1"}, {syscall.SIGUSR2, "SIGUSR2"}, {syscall.SIGWINCH, "SIGWINCH"}, {syscall.SIGKILL, "SIGKILL"},
	} {
		if s.sig == sig {
			return s.name
		}
	}
	return "signal " + itoa(int(sig))
}

// twoNumbers parses "A B", two non-negative decimal numbers.
func twoNumbers(s string) (a, b int, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			a, ok1 := atoi(s[:i])
			b, ok2 := atoi(s[i+1:])
			return a, b, ok1 && ok2
		}
	}
	return 0, 0, false
}

// itoa and atoi stand for strconv's, which would make this package wait
// for the packages sorted before "strconv" to be initialised: non-negative
// numbers only.
func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func atoi(s string) (int, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
