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
// cannot know the pid to put in LISTEN_PID. It writes the time it started
// running (CLOCK_MONOTONIC, 8 bytes, little-endian) on its report pipe,
// which closes at the execve (close-on-exec), so that the parent can log
// how long each step of a start took. It then waits for its StartMessage
// on its start pipe: the program, its arguments, its working directory
// and its environment. It sets LISTEN_PID (and WATCHDOG_PID, when the
// child has a watchdog) to its own pid and replaces itself with the
// program by execve, which keeps the pid, the process group and the
// inherited descriptors. The supervisor writes the message at once when
// a generation starts; or it forks a shim ahead of time, a standby, and
// writes the message only when the next generation starts: a reload then
// costs what the execve of the program costs, not the start of a Go
// program as well.
//
// The watcher (WatchArg) makes sure nothing of a generation outlives
// hitless, however hitless dies: it reads "+PGID" and "-PGID" lines
// (Add, Remove) from fd 3, a unix stream socket, until EOF, then sends
// SIGKILL to each process group it was told of and not told is gone; or,
// if hitless died during the exec of an upgrade (between Upgrading and
// Running), drains them first, copying their output from the pipes it
// was sent (Pipes). See the supervisor's watcher.go for the parent's
// side.
//
// # Limits
//
// Everything here must import only os, os/signal and what they import
// (io, sync, syscall, time, slices, unsafe):
// the initialiser picks the first ready package by import path, so
// importing strconv or strings, light as they are, would make this one
// wait until every ready package sorted before "strconv" (crypto, net,
// protobuf...) is initialised. A program that links this package and is
// started with one of these arguments runs the mode, whatever its main
// says.
package hidden

import (
	"io"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"
)

// The hidden first arguments.
const (
	// ShimArg starts the shim: hitless ShimArg REPORT START, where
	// REPORT is the write end of its report pipe and START the read end
	// of the pipe its StartMessage comes on.
	ShimArg = "__hitless_exec"
	// WatchArg starts the watcher, with its end of hitless's socket as
	// fd 3.
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
		os.Exit(Watch(os.NewFile(3, "watcher socket")))
	}
}

// The lines that tell the watcher of a process group that starts (Add)
// and of one that is gone (Remove), and, around the exec of an upgrade,
// the children's output pipes (Pipes, with their read ends attached),
// that an exec is under way and how to drain the groups should hitless
// die before an image runs again (Upgrading, "U SIGNAL MILLISECONDS"),
// and that one runs (Running, "R"). The supervisor's watcher.go says
// which versions of this protocol a watcher speaks.
func Add(pgid int) string    { return "+" + itoa(pgid) + "\n" }
func Remove(pgid int) string { return "-" + itoa(pgid) + "\n" }
func Upgrading(sig syscall.Signal, timeout time.Duration) string {
	return "U " + itoa(int(sig)) + " " + itoa(int(timeout.Milliseconds())) + "\n"
}

// Pipes is "P STREAM...", STREAM 1 (stdout) or 2 (stderr) for each
// output pipe whose read end is attached to the line, in order: at most
// MaxRights of them.
func Pipes(stderr []bool) string {
	line := "P"
	for _, e := range stderr {
		if e {
			line += " 2"
		} else {
			line += " 1"
		}
	}
	return line + "\n"
}

// MaxRights is how many descriptors one line carries (the kernel takes
// at most 253).
const MaxRights = 200

// Running is the line that ends Upgrading's, and has the watcher close
// the pipes Pipes sent.
const Running = "R\n"

// Watch is the watcher's main (WatchArg runs it on fd 3; the supervisor's
// tests speak to it as hitless does). It reads process groups from conn,
// a unix stream socket (a pipe carries no descriptors), until EOF, then
// kills the ones it was not told are gone, or drains them if hitless died
// during the exec of an upgrade: it then copies the children's output
// from the pipes it holds to its own stdout and stderr (hitless's), so
// that a child that logs as it drains is not killed by SIGPIPE.
func Watch(conn *os.File) int {
	// Signals meant for hitless's terminal or group are not for it: it
	// ends when hitless does, and only then. Its stdout and stderr are
	// hitless's, whose reader may be gone.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	// conn is closed here, by its owner, and only here: unreferenced
	// once its number is taken, its finalizer would close it at some
	// garbage collection, and the watcher, reading EOF, would kill every
	// generation while hitless runs.
	defer conn.Close()
	w := &watched{groups: make(map[int]bool)}
	lines := &lineReader{f: conn, fd: int(conn.Fd())}
	for {
		l, fds, err := lines.next()
		w.files = append(w.files, fds...)
		if err != nil {
			break
		}
		w.apply(l)
	}
	for _, fd := range w.files {
		syscall.Close(fd) // named by no P line
	}
	w.end()
	return 0
}

// watched is what the watcher was told: the process groups, live or
// gone; the drain an upgrade's exec asks for; the children's output
// pipes it holds during that exec.
type watched struct {
	groups map[int]bool
	drain  struct {
		on      bool
		sig     syscall.Signal
		timeout time.Duration
	}
	held  []heldPipe // the output pipes, during an upgrade's exec
	files []int      // received, not yet named by a P line
}

// apply takes one line of the protocol (see Add, Remove, Upgrading,
// Pipes, Running).
func (w *watched) apply(l string) {
	switch {
	case l == "R":
		w.drain.on = false
		w.release()
	case len(l) > 2 && l[:2] == "U ":
		sig, ms, ok := twoNumbers(l[2:])
		if ok && sig > 0 && sig < 65 {
			w.drain.on, w.drain.sig, w.drain.timeout = true, syscall.Signal(sig), time.Duration(ms)*time.Millisecond
		} else {
			ignoring(l)
		}
	case len(l) > 2 && l[:2] == "P ":
		streams, ok := pipeStreams(l[2:])
		if !ok || len(streams) > len(w.files) {
			ignoring(l)
			return
		}
		for i, stderr := range streams {
			w.held = append(w.held, heldPipe{f: os.NewFile(uintptr(w.files[i]), "output"), stderr: stderr})
		}
		w.files = w.files[len(streams):]
	default:
		pgid, ok := 0, false
		if len(l) >= 2 && (l[0] == '+' || l[0] == '-') {
			pgid, ok = atoi(l[1:])
		}
		if ok && pgid > 1 {
			w.groups[pgid] = l[0] == '+'
		} else {
			ignoring(l)
		}
	}
}

// release closes the output pipes held for an exec that is over.
func (w *watched) release() {
	for _, p := range w.held {
		p.f.Close()
	}
	w.held = nil
}

// end is the watcher's work once hitless is gone: kill every live group
// or, if hitless died during an upgrade's exec, drain them first while
// their output is copied.
func (w *watched) end() {
	var live []int
	for pgid, on := range w.groups {
		if on {
			live = append(live, pgid)
		}
	}
	var copied sync.WaitGroup
	if w.drain.on {
		os.Stderr.WriteString("hitless watcher: hitless died during an upgrade; draining " + itoa(len(live)) +
			" process group(s) with " + signalName(w.drain.sig) + ", for at most " + w.drain.timeout.String() + "\n")
		for _, p := range w.held {
			copied.Add(1)
			go func() {
				defer copied.Done()
				to := os.Stdout
				if p.stderr {
					to = os.Stderr
				}
				io.Copy(to, p.f)
			}()
		}
		live = drainGroups(live, w.drain.sig, w.drain.timeout)
	}
	for _, pgid := range live {
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
			os.Stderr.WriteString("hitless watcher: kill process group " + itoa(pgid) + ": " + err.Error() + "\n")
		}
	}
	if len(w.held) > 0 {
		// The children's last words, within a bound: a process that left
		// its group may hold a pipe open.
		done := make(chan struct{})
		go func() { copied.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
}

// ignoring says that the watcher ignores line l.
func ignoring(l string) {
	os.Stderr.WriteString("hitless watcher: ignoring the line " + l[:min(len(l), 64)] + "\n")
}

// pipeStreams parses a P line's streams, "1 2 ...": true for stderr.
func pipeStreams(s string) ([]bool, bool) {
	var streams []bool
	for i := 0; i < len(s); i += 2 {
		if (s[i] != '1' && s[i] != '2') || (i+1 < len(s) && s[i+1] != ' ') {
			return nil, false
		}
		streams = append(streams, s[i] == '2')
	}
	return streams, len(streams) > 0
}

// heldPipe is the read end of a child's output pipe, held by the watcher
// during an upgrade's exec.
type heldPipe struct {
	f      *os.File
	stderr bool
}

// lineReader reads lines, and the descriptors attached to them, from a
// unix socket (or, without descriptors, a pipe).
type lineReader struct {
	f      *os.File // held, so that fd stays open
	fd     int
	buf    []byte
	noSock bool
}

// next returns the next line, without its newline, and the descriptors
// received with it; an error at the end.
func (lr *lineReader) next() (string, []int, error) {
	var fds []int
	for {
		for i, b := range lr.buf {
			if b == '\n' {
				line := string(lr.buf[:i])
				lr.buf = lr.buf[i+1:]
				return line, fds, nil
			}
		}
		chunk := make([]byte, 4096)
		oob := make([]byte, syscall.CmsgSpace(4*MaxRights))
		var n, oobn int
		var err error
		if !lr.noSock {
			n, oobn, _, _, err = syscall.Recvmsg(lr.fd, chunk, oob, syscall.MSG_CMSG_CLOEXEC)
			if err == syscall.ENOTSOCK {
				lr.noSock = true
			}
		}
		if lr.noSock {
			n, err = syscall.Read(lr.fd, chunk)
		}
		if err == syscall.EINTR {
			continue
		}
		if oobn > 0 {
			if msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, m := range msgs {
					if got, perr := syscall.ParseUnixRights(&m); perr == nil {
						fds = append(fds, got...)
					}
				}
			}
		}
		if err != nil {
			return "", fds, err
		}
		if n <= 0 {
			return "", fds, io.EOF
		}
		lr.buf = append(lr.buf, chunk[:n]...)
	}
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
