//go:build linux

// Package earlysig catches, from the first moments of an image that an
// upgrade in place started, the signals the supervisor handles, and holds
// them until the program takes them (Take).
//
// # Model
//
// The old image executes the new one with SIGHUP, SIGINT and SIGTERM
// ignored and SIGUSR1 and SIGUSR2 blocked (see package upgrade). A Go
// program cannot keep a signal pending across its own start: the runtime
// unblocks SIGHUP, SIGINT and SIGTERM on every thread before any Go code
// runs, and from its signal set-up on it kills the process on a SIGTERM
// nobody asked for with signal.Notify. Until then the new image is deaf
// to those three (an ignored signal is discarded), and from then until
// Notify a SIGTERM is fatal. This package shortens both windows to the
// start of the runtime: its init calls signal.Notify as soon as the
// packages it imports are initialised, and Go initialises a package as
// soon as its imports are, in import-path order among those ready, so it
// runs before the heavy initialisation of the rest of the program (HTTP,
// metrics, protobuf, the CLI). The signals wait in a buffered channel
// until the supervisor takes it.
//
// It also ignores SIGPIPE from then on, as the image before did: a log
// reader that went away (hitless run | tee, and tee exits) must not end
// the new image at its first log line. And it gives the process back
// the name it had (CommVar), for pgrep -x, pkill and killall.
//
// It does nothing unless the process was started by an upgrade: the
// variable HITLESS_UPGRADE_STATE is set (by the old image, for the new
// one, or by a new image rolling back, for the old one). Any other run of
// the same binary (a fresh start, a control command, a hidden mode) keeps
// the default behaviour of these signals.
//
// # Limits
//
// It must stay small and import only what os/signal needs, or it would
// wait for heavier packages to be initialised first. Signals sent while
// the runtime starts (SIGHUP, SIGINT, SIGTERM) are lost, and a SIGTERM in
// its last part ends the process: docs/reliability.md gives the measured
// window. More than Buffer signals before the program takes the channel
// are dropped, as os/signal drops what a full channel cannot take.
package earlysig

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// StateVar is the variable an upgrade sets for the image it starts.
const StateVar = "HITLESS_UPGRADE_STATE"

// CommVar is the variable an upgrade sets for the image it starts: the
// process's name (/proc/PID/comm) before the exec, which an exec through
// /proc/self/fd/N would change to "N", out of reach of pgrep -x, pkill
// and killall.
const CommVar = "HITLESS_UPGRADE_COMM"

// Signals are those caught: the signals the supervisor handles. SIGTERM
// comes first: signal.Notify enables them in this order, and until it is
// enabled a SIGTERM ends the process.
var Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2}

// Buffer is how many signals the channel holds until it is taken.
const Buffer = 64

// caught is set by init in an image an upgrade started, and handed over
// once by Take; at is when (CLOCK_MONOTONIC, in nanoseconds).
var (
	caught chan os.Signal
	at     int64
)

func init() {
	if _, ok := os.LookupEnv(StateVar); !ok {
		return
	}
	caught = make(chan os.Signal, Buffer)
	signal.Notify(caught, Signals...)
	// The image that executed this one ignored SIGPIPE, but a Go runtime
	// does not keep that: its first write to a stdout or stderr whose
	// reader went away would end it, and the new image logs before the
	// supervisor ignores SIGPIPE again (see supervisor.Output).
	signal.Ignore(syscall.SIGPIPE)
	if name := os.Getenv(CommVar); name != "" {
		// The main thread's name is the process's; init runs on it.
		b := append([]byte(name), 0)
		syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0)
	}
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	at = ts.Nano()
}

// At is when init caught the signals, as a CLOCK_MONOTONIC reading in
// nanoseconds; 0 if it did not.
func At() int64 { return at }

// Take returns the channel on which Signals have been caught since this
// image's first moments, and the caller owns it from then on (to read it,
// and to signal.Stop it); nil when this image was not started by an
// upgrade, or on any call but the first.
func Take() chan os.Signal {
	c := caught
	caught = nil
	return c
}
