//go:build linux

package supervisor

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/hitless/hitless/supervisor/internal/hidden"
)

// The hidden modes of a binary that embeds the supervisor: it starts
// itself (Config.ShimPath, /proc/self/exe by default) with one of these
// as its first argument, and the init of package hidden, which this
// package imports, runs the mode before the rest of the program is
// initialised.
const (
	// ShimArg starts the shim, which runs between fork and the child's
	// program: it sets LISTEN_PID (and WATCHDOG_PID) to its own pid,
	// which the parent cannot know before fork, and executes the
	// program in the same process.
	ShimArg = hidden.ShimArg
	// WatchArg starts the watcher: see watcher.go.
	WatchArg = hidden.WatchArg
)

// steps are the times (CLOCK_MONOTONIC, ns; 0 when unknown) at which a
// generation passed each step of its start, for the debug log's "reload
// steps" record: what a reload costs, step by step.
type steps struct {
	standby bool  // its process was the standby, forked before the start was asked for
	fork    int64 // StartProcess called
	forked  int64 // StartProcess returned: the shim's execve is done (CLONE_VFORK)
	begun   int64 // the start message written: the shim may run the program
	ready   int64 // READY=1 read (set by the notify reader before it posts evReady)

	// Read from the shim's report pipe; valid once reported is closed.
	reported chan struct{}
	shim     int64 // the shim's init running
	exec     int64 // the program's execve done: the pipe's write end closed
}

// readReport reads the shim's report pipe r until EOF, which comes when
// the shim's execve closes the write end (or the shim exits), and closes
// r. It is owned by the child: forget closes r to end it early.
func (st *steps) readReport(r *os.File) {
	defer close(st.reported)
	defer r.Close()
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return
	}
	st.shim = int64(binary.LittleEndian.Uint64(b[:]))
	if n, err := r.Read(b[:]); n == 0 && err == io.EOF {
		st.exec = hidden.Monotonic()
	}
}

// pendingSteps is a reload whose new generation serves, logged once the
// actions of the same step are done (the old generation signalled).
type pendingSteps struct {
	gen       int
	requested int64 // the reload's request, on the same clock
	serving   int64
	signalled int64 // the old generation got its drain signal; 0 if none did
}

// logSteps logs, at debug level, how long each step of reload p took,
// from the request to the old generation signalled. A step whose start
// or end the supervisor could not see (a shim started before an upgrade,
// a readiness by delay) is left out.
func (s *Supervisor) logSteps(p *pendingSteps) {
	c := s.children[p.gen]
	if c == nil || !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	st := &c.steps
	var shim, exec int64
	if st.reported != nil {
		// READY=1 came after the execve closed the pipe: the report is
		// all but read.
		select {
		case <-st.reported:
			shim, exec = st.shim, st.exec
		case <-time.After(100 * time.Millisecond):
		}
	}
	attrs := []any{"generation", p.gen, "pid", c.pid}
	step := func(name string, from, to int64) {
		if from != 0 && to != 0 {
			attrs = append(attrs, name, time.Duration(to-from))
		}
	}
	if st.standby {
		// Forked ahead, at rest: the start only wrote the message.
		attrs = append(attrs, "standby", true)
		step("request_to_begin", p.requested, st.begun)
		step("shim", st.begun, exec)
	} else {
		step("request_to_fork", p.requested, st.fork)
		step("fork", st.fork, st.forked)
		step("shim_start", st.forked, shim)
		step("shim", max(shim, st.begun), exec)
	}
	step("child_start", exec, st.ready)
	step("ready_to_serving", st.ready, p.serving)
	step("serving_to_signal", p.serving, p.signalled)
	end := p.serving
	if p.signalled != 0 {
		end = p.signalled
	}
	attrs = append(attrs, "total", time.Duration(end-p.requested))
	s.log.Debug("reload steps", attrs...)
}
