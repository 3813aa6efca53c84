//go:build linux

package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/hitless/hitless/supervisor"
)

// Defaults, shared with the flags of "hitless run" so that both document
// and apply the same values: the supervisor's own.
const (
	DefaultReadyTimeout = supervisor.DefaultReadyTimeout
	DefaultDrainSignal  = syscall.SIGTERM
	DefaultDrainTimeout = supervisor.DefaultDrainTimeout
	DefaultBackoffMin   = supervisor.DefaultBackoffMin
	DefaultBackoffMax   = supervisor.DefaultBackoffMax
	DefaultStableAfter  = supervisor.DefaultStableAfter
	DefaultLogFormat    = LogText
	DefaultLogLevel     = slog.LevelInfo
)

// MaxSize is the largest configuration file Load reads. A config file is
// a page of text; anything bigger is a mistake (the wrong path).
const MaxSize = 1 << 20

// maxSocketPath is the longest path a unix socket can be bound to: the
// 108 bytes of sockaddr_un.sun_path on Linux, minus the terminating NUL.
const maxSocketPath = 107

// File is the content of a configuration file, with defaults filled in
// for everything the file does not set.
type File struct {
	// Path is the name the file was parsed under, used in error
	// messages. It is empty for Default().
	Path string

	// Listen holds the sockets to bind, each in the syntax of the
	// --listen flag: "[NAME=]URL", where URL may carry query options
	// (backlog, mode, owner, group). Items given in mapping form are
	// converted to this syntax. They are not validated here.
	Listen []string
	// Command is the child's argv. It is empty when the file does not
	// set it; the command may then come after "--" on the command line.
	Command []string
	// Dir is the working directory of the child; empty means hitless's.
	Dir string
	// Env holds extra environment variables for the child.
	Env map[string]string

	// Ready says how a new child is judged ready (default notify).
	Ready ReadyMode
	// ReadyTimeout bounds the wait for a new child to become ready.
	ReadyTimeout time.Duration
	// DrainSignal is sent to an old child to make it drain.
	DrainSignal syscall.Signal
	// DrainTimeout bounds a drain; then the old child gets SIGKILL.
	DrainTimeout time.Duration

	// Restart controls the restarts of a child that exits on its own.
	Restart Restart

	// OutputPrefix prefixes every line of child output with the child's
	// generation and pid.
	OutputPrefix bool

	// Log controls hitless's own log output.
	Log Log

	// Name is the service name; the default control socket path is
	// derived from it.
	Name string
	// Control is the path of the control socket ("hitless reload" and
	// friends talk to it).
	Control string
	// PIDFile is where hitless writes its own pid; empty means nowhere.
	PIDFile string

	// lines maps the key paths set by the file ("restart.backoff_min",
	// "listen[2]") to their 1-based line number.
	lines map[string]int
}

// Restart controls how hitless restarts a child that exits on its own:
// after a delay that starts at BackoffMin and doubles up to BackoffMax, and
// goes back to BackoffMin once a child has run for StableAfter.
type Restart struct {
	BackoffMin  time.Duration
	BackoffMax  time.Duration
	StableAfter time.Duration
}

// Log controls hitless's own log output.
type Log struct {
	Format string // LogText or LogJSON
	Level  slog.Level
}

// Default returns the configuration used when there is no file.
func Default() *File {
	return &File{
		Ready:        ReadyMode{Notify: true},
		ReadyTimeout: DefaultReadyTimeout,
		DrainSignal:  DefaultDrainSignal,
		DrainTimeout: DefaultDrainTimeout,
		Restart: Restart{
			BackoffMin:  DefaultBackoffMin,
			BackoffMax:  DefaultBackoffMax,
			StableAfter: DefaultStableAfter,
		},
		Log: Log{Format: DefaultLogFormat, Level: DefaultLogLevel},
	}
}

// Load reads and parses the configuration file at path. Errors name the
// file as path.
func Load(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("config: %s: larger than %d bytes; is this the right file?", path, MaxSize)
	}
	return Parse(path, data)
}

// Parse parses a configuration document; name is used in error messages.
// The result holds Default() overlaid with what the document sets. An
// empty document (or one with only comments) is valid and yields the
// defaults.
//
// The error, if any, is errors.Join of one *Error per problem found.
func Parse(name string, data []byte) (*File, error) {
	f := Default()
	f.Path = name
	f.lines = make(map[string]int)
	d := &decoder{file: name, f: f}
	d.document(data)
	if len(d.errs) == 0 {
		f.validate(d)
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	return f, nil
}

// Validate checks the values of f as a whole: ranges, and relations between
// fields such as BackoffMin <= BackoffMax. Parse already does this; call
// Validate again after overriding fields with flags. Errors from Validate
// name the field but no line, since the value may come from a flag.
func (f *File) Validate() error {
	d := &decoder{file: f.Path, f: f}
	f.validate(d)
	return d.err()
}

// validate reports to d the problems of f that no single value shows. When
// d.lines is set, the errors point at the line that set the field.
func (f *File) validate(d *decoder) {
	check := func(field string, v time.Duration) {
		if v <= 0 {
			d.add(field, "%s is not positive (%s)", v, durationWant)
		}
	}
	if !f.Ready.Notify && f.Ready.Delay <= 0 {
		d.add("ready", "delay must be positive (%s)", readyWant)
	}
	check("ready_timeout", f.ReadyTimeout)
	if !f.Ready.Notify && f.Ready.Delay >= f.ReadyTimeout && f.ReadyTimeout > 0 {
		// Every reload would time out before the child counts as ready.
		field := "ready"
		if f.Line(field) == 0 {
			field = "ready_timeout"
		}
		d.add(field, "delay (%s) must be shorter than ready_timeout (%s), or no child is ever ready in time",
			f.Ready.Delay, f.ReadyTimeout)
	}
	check("drain_timeout", f.DrainTimeout)
	check("restart.backoff_min", f.Restart.BackoffMin)
	check("restart.backoff_max", f.Restart.BackoffMax)
	check("restart.stable_after", f.Restart.StableAfter)
	if f.Restart.BackoffMin > f.Restart.BackoffMax {
		// Point at whichever of the two the file set, preferring max:
		// with both set, the second one written is where the reader is.
		field, other := "restart.backoff_max", "restart.backoff_min"
		if f.Line(field) == 0 && f.Line(other) != 0 {
			field, other = other, field
		}
		d.add(field, "backoff_min (%s) is greater than backoff_max (%s)",
			f.Restart.BackoffMin, f.Restart.BackoffMax)
	}
	if f.DrainSignal == syscall.SIGKILL || f.DrainSignal == syscall.SIGSTOP || f.DrainSignal <= 0 {
		d.add("drain_signal", "%s cannot be used to drain (want a signal the child can catch, e.g. SIGTERM)", SignalName(f.DrainSignal))
	}
	if _, err := ParseLogFormat(f.Log.Format); err != nil {
		d.add("log.format", "%v", err)
	}
	if len(f.Control) > maxSocketPath {
		d.add("control", "%q is %d bytes long; unix socket paths are limited to %d", f.Control, len(f.Control), maxSocketPath)
	}
}

// Environ returns Env as "KEY=VALUE" strings sorted by key, ready to
// append to a child's environment. Sorted, so that children get the same
// environment in the same order every time.
func (f *File) Environ() []string {
	keys := slices.Sorted(maps.Keys(f.Env))
	env := make([]string, 0, len(keys))
	for _, k := range keys {
		env = append(env, k+"="+f.Env[k])
	}
	return env
}

// IsSet reports whether the file set the key at the given path, such as
// "drain_timeout", "restart.backoff_min", "listen[0]" or "env.PATH".
func (f *File) IsSet(key string) bool {
	return f.Line(key) != 0
}

// Line returns the line on which the file set the key at the given path
// (see IsSet), or 0.
func (f *File) Line(key string) int {
	return f.lines[key]
}

// ErrorAt returns err as an *Error located at the line where the file set
// key, so that problems found later (such as a listen URL the supervisor
// cannot parse) point into the file. If the file did not set key, the
// error names the key without a line.
func (f *File) ErrorAt(key string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{File: f.Path, Line: f.Line(key), Field: key, Msg: err.Error(), err: err}
}

// Error is one problem in a configuration file.
type Error struct {
	File  string // as given to Parse or Load
	Line  int    // 1-based; 0 when unknown
	Field string // key path such as "restart.backoff_min" or "listen[1].mode"; empty for syntax errors
	Msg   string
	err   error // the underlying error, for ErrorAt
}

func (e *Error) Error() string {
	var s string
	switch {
	case e.File != "" && e.Line > 0:
		s = fmt.Sprintf("%s:%d: ", e.File, e.Line)
	case e.File != "":
		s = e.File + ": "
	}
	if e.Field != "" {
		s += e.Field + ": "
	}
	return s + e.Msg
}

// Unwrap returns the error given to ErrorAt, if any.
func (e *Error) Unwrap() error { return e.err }

// maxErrors bounds how many problems one Parse reports: past a few, the
// rest are usually consequences of the first, and a fuzzed or binary file
// would otherwise produce pages.
const maxErrors = 10

// err returns the collected errors, nil if none.
func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	errs := d.errs
	if len(errs) > maxErrors {
		more := len(errs) - maxErrors
		errs = append(errs[:maxErrors:maxErrors], &Error{File: d.file, Msg: fmt.Sprintf("%d more errors not shown", more)})
	}
	return errors.Join(errs...)
}
