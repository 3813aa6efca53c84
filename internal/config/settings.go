//go:build linux

package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/hitless/hitless/internal/control"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/supervisor/sockets"
)

// A Setting is one thing "hitless run" can be told, by a flag or by a key
// of the file. Settings is the one place that says, for each, its flag,
// key, field, parser and help: the flags, the decoder, the message about
// an unknown key and the key of a field the supervisor refused are all
// built from it.
type Setting struct {
	Flag  string // of "hitless run", without "--"; "" for none (the command comes after --)
	Key   string // in the file; "restart.backoff_min" is backoff_min in the mapping restart
	Field string // the supervisor.Config field it sets, as a *supervisor.ConfigError names it; "" for the command's own
	Value Value  // the value in one File, and how its text reads
	Help  string // for --help
}

// Settings returns every setting, bound to f's fields, in the order of
// the keys in the message about an unknown key. The parsers are the
// supervisor's own where it has one (sockets, users, variables, the drain
// signal), so that a flag and the file accept the same text and say the
// same about text they refuse.
func Settings(f *File) []Setting {
	return []Setting{
		{"listen", "listen", "Listen",
			&list[sockets.ListenSpec]{p: &f.Listen, parse: sockets.ParseListen, format: sockets.ListenSpec.String, read: (*decoder).listen},
			"socket to hold, [NAME=]URL (repeatable)"},
		{"", "command", "Command", &list[string]{p: &f.Command, format: same, read: (*decoder).command}, ""},
		{"dir", "dir", "Dir", text(&f.Dir, nil),
			"working directory of the child, resolved afresh at every start (default: hitless's)"},
		{"env", "env", "Env",
			&list[string]{p: &f.Env, parse: Checked(supervisor.CheckEnv), format: same, read: (*decoder).env, name: envName},
			"KEY=VALUE added to the child's environment (repeatable)"},
		{"user", "user", "User", parsed(&f.User, supervisor.LookupUser, (*supervisor.User).String),
			"run every child as USER[:GROUP] (names or ids), as systemd's User= and Group=; hitless keeps its privileges to bind and supervise"},
		{"ready", "ready", "ReadyDelay", parsed(&f.ReadyDelay, ParseReady, FormatReady),
			"readiness gate: notify (the child sends READY=1) or delay:DURATION (weaker)"},
		{"ready-timeout", "ready_timeout", "ReadyTimeout", Duration(&f.ReadyTimeout),
			"a new child not ready in this time fails the reload"},
		{"drain-signal", "drain_signal", "DrainSignal", parsed(&f.DrainSignal, drainSignal, SignalName),
			"signal that tells an old child to drain"},
		{"drain-timeout", "drain_timeout", "DrainTimeout", Duration(&f.DrainTimeout),
			"time an old child has to exit before its process group gets SIGKILL"},
		{"backoff-min", "restart.backoff_min", "BackoffMin", Duration(&f.BackoffMin),
			"first delay before restarting a child that died"},
		{"backoff-max", "restart.backoff_max", "BackoffMax", Duration(&f.BackoffMax),
			"longest delay between restarts"},
		{"stable-after", "restart.stable_after", "StableAfter", Duration(&f.StableAfter),
			"a child that served this long resets the restart delay"},
		{"trial", "trial", "Trial", optionalDuration(&f.Trial),
			"after a reload, the new child serves beside the old one this long, and any failure rolls the reload back (0: none)"},
		{"watchdog", "watchdog", "Watchdog", optionalDuration(&f.Watchdog),
			"a ready child must send WATCHDOG=1 at least this often (WATCHDOG_USEC), or it is aborted and restarted (0: none)"},
		{"watchdog-grace", "watchdog_grace", "WatchdogGrace", Duration(&f.WatchdogGrace),
			"time a child has to exit after the watchdog's SIGABRT before its process group gets SIGKILL"},
		{"output-prefix", "output_prefix", "OutputPrefix", boolean(&f.OutputPrefix),
			`prefix each line of child output with "[gen N pid P] "`},
		{"no-standby", "no_standby", "NoStandby", boolean(&f.NoStandby),
			"fork no standby: each start forks its process then (by default the next child's process is forked ahead and waits, so that a reload only executes the program)"},
		{"log-format", "log.format", "", text(&f.Log.Format, ParseLogFormat),
			"hitless's own log format: text or json"},
		{"log-level", "log.level", "", parsed(&f.Log.Level, ParseLogLevel, formatLogLevel),
			"debug, info, warn or error"},
		{"name", "name", "", text(&f.Name, Checked(control.CheckName)),
			"service name, used in the default control socket path (default: the command's base name)"},
		{"control", "control", "", text(&f.Control, Checked(checkSocketPath)),
			"control socket path for hitless reload/status/stop/promote/rollback/upgrade (default $HITLESS_CONTROL, else NAME.sock under $XDG_RUNTIME_DIR/hitless, /run/hitless for root, or $TMPDIR/hitless-UID)"},
		{"pid-file", "pid_file", "", text(&f.PIDFile, nil),
			"write hitless's pid here (atomically); it never changes across reloads"},
		{"metrics", "metrics", "", text(&f.Metrics, ParseMetrics),
			"serve Prometheus metrics on /metrics at this address: host:port, or a unix socket path (default: none)"},
		{"fdstore", "fdstore", "", boolean(&f.FDStore),
			"keep the sockets hitless binds in systemd's fd store (FileDescriptorStoreMax=); systemd 254 and later say so themselves ($FDSTORE)"},
	}
}

// drainSignal parses the drain signal: a signal the supervisor can drain
// with, so that a bad one is reported where it was written.
func drainSignal(s string) (syscall.Signal, error) {
	sig, err := ParseSignal(s)
	if err != nil {
		return 0, err
	}
	if err := supervisor.CheckDrainSignal(sig); err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	return sig, nil
}

// Lookup returns the setting of f that sets the supervisor's field, named
// as a *supervisor.ConfigError names it: "DrainTimeout", or "Listen[1]",
// an item, whose index it returns too (-1 for none).
func (f *File) Lookup(field string) (s Setting, index int, ok bool) {
	base, rest, indexed := strings.Cut(field, "[")
	settings := Settings(f)
	i := slices.IndexFunc(settings, func(s Setting) bool { return s.Field != "" && s.Field == base })
	if i < 0 {
		return Setting{}, -1, false
	}
	index = -1
	if n, err := strconv.Atoi(strings.TrimSuffix(rest, "]")); indexed && err == nil && n >= 0 {
		index = n
	}
	return settings[i], index, true
}

// Lay sets each setting of f that given selects to its value in from, as
// flags given on the command line override the file: a list of named
// items (env) keeps f's items, from's replacing those of the same name;
// any other setting is replaced.
func (f *File) Lay(from *File, given func(Setting) bool) {
	src := Settings(from)
	for i, s := range Settings(f) {
		if given(s) {
			s.Value.lay(src[i].Value)
		}
	}
}

// Differ returns the keys of the settings whose values differ between a
// and b, in the order of Settings.
func Differ(a, b *File) []string {
	var keys []string
	sb := Settings(b)
	for i, s := range Settings(a) {
		if !s.Value.equal(sb[i].Value) {
			keys = append(keys, s.Key)
		}
	}
	return keys
}

// keys returns the keys of the mapping section ("" for the top level; a
// key such as "restart" for the mapping it holds), in the order of
// settings. It is empty if section is no mapping.
func keys(settings []Setting, section string) []string {
	var out []string
	for _, s := range settings {
		rest, ok := s.Key, true
		if section != "" {
			rest, ok = strings.CutPrefix(s.Key, section+".")
		}
		if key, _, _ := strings.Cut(rest, "."); ok && !slices.Contains(out, key) {
			out = append(out, key)
		}
	}
	return out
}
