//go:build linux

package supervisor

import (
	"bytes"
	"os"
	"sync/atomic"
)

// Output is one of hitless's own output streams, its stdout or its
// stderr, which its log and its children's output share: every write
// succeeds, and what cannot be written (the reader is gone: EPIPE; the
// descriptor is closed) is dropped and counted, in lines. A broken log
// pipe (a "| tee" that exits, a log shipper that restarts) never ends
// supervision, nor blocks or signals a child: children write to pipes
// that hitless reads, never to its own descriptors.
//
// A reader that stops reading without going away (a stopped process)
// still blocks writers, as any pipe does.
type Output struct {
	f       *os.File
	dropped atomic.Int64 // lines
}

// NewOutput returns the Output that writes to f.
func NewOutput(f *os.File) *Output { return &Output{f: f} }

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
