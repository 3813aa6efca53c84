//go:build linux

package supervisor

import (
	"bytes"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Output is one of hitless's own output streams, its stdout or its
// stderr, which its log and its children's output share: every write
// succeeds, and what cannot be written (the reader is gone: EPIPE; the
// descriptor is closed) is dropped and counted, in lines. A broken log
// pipe (a "| tee" that exits, a log shipper that restarts) never ends
// supervision, nor blocks or signals a child.
//
// Where the reader can go away (the stream is a pipe or a socket),
// children write to pipes that hitless reads and copies here, never to
// hitless's own descriptor. Where it cannot (a terminal, a regular file,
// /dev/null), children get hitless's descriptor itself, as a shell would
// give it: a program sees its terminal (line buffering, colours), and
// hitless copies nothing; unless --output-prefix asks for the copy. Then
// a failed reload's verdict cannot quote the child's last lines on
// stderr: they are on the terminal, or in the file, already.
//
// A reader that stops reading without going away (a stopped process)
// still blocks writers, as any pipe does.
type Output struct {
	f       *os.File
	direct  bool         // children may write to f itself
	dropped atomic.Int64 // lines
}

// NewOutput returns the Output that writes to f.
func NewOutput(f *os.File) *Output {
	var st unix.Stat_t
	direct := false
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if unix.Fstat(int(fd), &st) == nil {
				typ := st.Mode & unix.S_IFMT
				direct = typ != unix.S_IFIFO && typ != unix.S_IFSOCK
			}
		})
	}
	return &Output{f: f, direct: direct}
}

// Direct reports whether children write to the stream itself: it is not a
// pipe or a socket, whose reader could go away.
func (o *Output) Direct() bool { return o.direct }

// Write writes p, or drops it; it never fails.
func (o *Output) Write(p []byte) (int, error) {
	if _, err := o.f.Write(p); err != nil {
		// A line cut short counts as one.
		n := bytes.Count(p, []byte{'\n'})
		if len(p) > 0 && p[len(p)-1] != '\n' {
			n++
		}
		o.dropped.Add(int64(n))
	}
	return len(p), nil
}

// Dropped is how many lines could not be written.
func (o *Output) Dropped() int64 { return o.dropped.Load() }

// File is the stream written to.
func (o *Output) File() *os.File { return o.f }

// Outputs are hitless's stdout and stderr. Give the same Outputs to the
// supervisor (Config.Outputs) and to hitless's logger (Stderr), so that
// one count holds every line dropped.
type Outputs struct {
	Stdout, Stderr *Output
}

// NewOutputs returns the Outputs that write to stdout and stderr.
func NewOutputs(stdout, stderr *os.File) *Outputs {
	return &Outputs{Stdout: NewOutput(stdout), Stderr: NewOutput(stderr)}
}

// OutputDropped counts the lines hitless could not write to its own
// stdout and stderr (its log and its children's output).
type OutputDropped struct {
	Stdout int64 `json:"stdout"`
	Stderr int64 `json:"stderr"`
}

func (o *Outputs) dropped() OutputDropped {
	return OutputDropped{Stdout: o.Stdout.Dropped(), Stderr: o.Stderr.Dropped()}
}

// carry adds what an earlier image counted (an upgrade keeps the count).
func (o *Outputs) carry(d OutputDropped) {
	o.Stdout.dropped.Add(d.Stdout)
	o.Stderr.dropped.Add(d.Stderr)
}
