//go:build linux

package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/hitless/hitless/supervisor"
)

// Defaults of the settings only the command uses; those of the supervisor
// are supervisor.Default*.
const (
	DefaultLogFormat = LogText
	DefaultLogLevel  = slog.LevelInfo
)

// MaxSize is the largest configuration file Load reads. A config file is
// a page of text; anything bigger is a mistake (the wrong path).
const MaxSize = 1 << 20

// File is the configuration of "hitless run": what the supervisor runs,
// and what only the command uses. Defaults are filled in for everything
// the file does not set.
type File struct {
	// Config is what the supervisor runs, written by the decoder field by
	// field: the fields of Settings. The fields the file cannot set
	// (Logger, Notifier, ...) are the caller's.
	supervisor.Config

	// Log controls hitless's own log output.
	Log Log
	// Name is the service name; the default control socket path is
	// derived from it. Empty means the base name of the command.
	Name string
	// Control is the path of the control socket ("hitless reload" and
	// friends talk to it). Empty means the default.
	Control string
	// PIDFile is where hitless writes its own pid; empty means nowhere.
	PIDFile string
	// Metrics is where hitless serves /metrics: host:port, or a unix
	// socket path (see ParseMetrics). Empty means nowhere.
	Metrics string
	// FDStore keeps the sockets hitless binds in systemd's file
	// descriptor store, for systemd older than 254, which does not say
	// (with $FDSTORE) that the unit has one.
	FDStore bool

	// Path is the name the file was parsed under, used in error
	// messages. It is empty for Default().
	Path string

	// lines maps the key paths set by the file ("restart.backoff_min",
	// "listen[2]", "env.PATH") to their 1-based line number.
	lines map[string]int
}

// Log controls hitless's own log output.
type Log struct {
	Format string // LogText or LogJSON
	Level  slog.Level
}

// Default returns the configuration used when there is no file: the
// supervisor's defaults, written out, and no sockets or command.
func Default() *File {
	return &File{
		Config: supervisor.Config{
			ReadyTimeout: supervisor.DefaultReadyTimeout,
			DrainSignal:  supervisor.DefaultDrainSignal,
			DrainTimeout: supervisor.DefaultDrainTimeout,
			BackoffMin:   supervisor.DefaultBackoffMin,
			BackoffMax:   supervisor.DefaultBackoffMax,
			StableAfter:  supervisor.DefaultStableAfter,
			// Trial and Watchdog are off: zero.
			WatchdogGrace: supervisor.DefaultWatchdogGrace,
		},
		Log: Log{Format: DefaultLogFormat, Level: DefaultLogLevel},
	}
}

// Load reads and parses the configuration file at path. Errors name the
// file as path.
func Load(path string) (*File, error) {
	data, err := Read(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Read reads the configuration file at path, as Load does, without
// parsing it: an upgrade of hitless in place carries what was read at
// start, so that the new image runs with the same settings.
func Read(path string) ([]byte, error) {
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
	return data, nil
}

// Parse parses a configuration document; name is used in error messages.
// The result holds Default() overlaid with what the document sets. An
// empty document (or one with only comments) is valid and yields the
// defaults.
//
// Parse checks the result with supervisor.Config.Validate, except that
// the command and the sockets may be missing: they may come from the
// command line. A value of the file that conflicts with a default is
// reported at the file's line. Call Validate once nothing more will be
// laid over the result.
//
// The error, if any, is errors.Join of one *Error per problem found.
func Parse(name string, data []byte) (*File, error) {
	f, errs := parse(name, data)
	if err := join(name, errs); err != nil {
		return nil, err
	}
	return f, nil
}

// parse is Parse, returning what it decoded even when it found problems.
func parse(name string, data []byte) (*File, []error) {
	f := Default()
	f.Path = name
	f.lines = make(map[string]int)
	d := &decoder{file: name, f: f, settings: Settings(f)}
	d.document(data)
	if len(d.errs) > 0 {
		// The rules across fields would mostly repeat what is already
		// said, about values that were not set.
		return f, d.errs
	}
	return f, f.check(true)
}

// Validate checks f as the supervisor will run it, with the supervisor's
// own rules (supervisor.Config.Validate), command and sockets included.
// Each problem is an *Error that wraps the *supervisor.ConfigError and
// names the key of the file and the line that set it, or no line if the
// file did not set it (the value is a default). A caller that laid other
// values over the file (flags) knows which, and names them itself.
func (f *File) Validate() error {
	return join(f.Path, f.check(false))
}

// check runs the supervisor's rules. With parsing set, f holds the file
// alone: a setting it left empty (the command, the sockets) may still
// come from the command line, so a problem with one is passed over; and
// every value that is not a default is the file's.
func (f *File) check(parsing bool) []error {
	err := f.Config.Validate()
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []error
	for _, err := range errs {
		var ce *supervisor.ConfigError
		if !errors.As(err, &ce) {
			out = append(out, &Error{File: f.Path, Msg: err.Error(), err: err})
			continue
		}
		if s, i, ok := f.Lookup(ce.Field); parsing && ok && i < 0 && s.Value.empty() {
			continue
		}
		key, line := f.key(ce.Field)
		if line == 0 && parsing && ce.Other != "" {
			// The field is a default, so the other one, which the file
			// set, is what is wrong (backoff_min too high): point there.
			_, line = f.key(ce.Other)
		}
		out = append(out, &Error{File: f.Path, Line: line, Field: key, Msg: ce.Msg, err: ce})
	}
	return out
}

// key returns the key of the file that sets the supervisor's field
// ("DrainTimeout" is "drain_timeout", "Env[0]" is "env.NAME"), and the
// line that set it, 0 if none.
func (f *File) key(field string) (string, int) {
	s, i, ok := f.Lookup(field)
	if !ok {
		// A field the file has no key for: say it as the supervisor does.
		return field, 0
	}
	key := s.Value.itemKey(s.Key, i)
	return key, f.lines[key]
}

// Line returns the line of the file that set key ("metrics",
// "restart.backoff_min"), or 0 if the file did not set it.
func (f *File) Line(key string) int { return f.lines[key] }

// Error is one problem in a configuration file.
type Error struct {
	File  string // as given to Parse or Load
	Line  int    // 1-based; 0 when unknown
	Field string // key path such as "restart.backoff_min" or "listen[1].mode"; empty for syntax errors
	Msg   string
	err   error // the *supervisor.ConfigError behind it, if any
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

// Unwrap returns the *supervisor.ConfigError that Validate found, if any.
func (e *Error) Unwrap() error { return e.err }

// maxErrors bounds how many problems one Parse reports: past a few, the
// rest are usually consequences of the first, and a fuzzed or binary file
// would otherwise produce pages.
const maxErrors = 10

// join returns errs as one error, nil if none, the excess beyond
// maxErrors counted rather than shown.
func join(file string, errs []error) error {
	if len(errs) > maxErrors {
		more := len(errs) - maxErrors
		errs = append(errs[:maxErrors:maxErrors], &Error{File: file, Msg: fmt.Sprintf("%d more errors not shown", more)})
	}
	return errors.Join(errs...)
}
