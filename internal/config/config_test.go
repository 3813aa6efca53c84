//go:build linux

package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/supervisor/sockets"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, f *File)
	}{
		{"empty", "", func(t *testing.T, f *File) {
			want := Default()
			want.Path = "t.yaml"
			want.lines = map[string]int{}
			if !reflect.DeepEqual(f, want) {
				t.Errorf("got %+v, want defaults %+v", f, want)
			}
		}},
		{"comments only", "# nothing\n", func(t *testing.T, f *File) {
			if f.ReadyDelay != 0 || f.DrainTimeout != supervisor.DefaultDrainTimeout {
				t.Errorf("defaults not applied: %+v", f)
			}
		}},
		{"scalars", `
dir: /srv/app
ready: delay:2s
ready_timeout: 90s
drain_signal: usr2
drain_timeout: 1m30s
output_prefix: true
name: app@1
control: /run/app.sock
pid_file: /run/app.pid
`, func(t *testing.T, f *File) {
			if f.Dir != "/srv/app" || f.Name != "app@1" || f.Control != "/run/app.sock" || f.PIDFile != "/run/app.pid" {
				t.Errorf("strings: %+v", f)
			}
			if f.ReadyDelay != 2*time.Second {
				t.Errorf("ready = %v", f.ReadyDelay)
			}
			if f.ReadyTimeout != 90*time.Second || f.DrainTimeout != 90*time.Second {
				t.Errorf("timeouts: %v %v", f.ReadyTimeout, f.DrainTimeout)
			}
			if f.DrainSignal != syscall.SIGUSR2 {
				t.Errorf("drain_signal = %v", f.DrainSignal)
			}
			if !f.OutputPrefix {
				t.Error("output_prefix not set")
			}
			if f.lines["drain_timeout"] != 6 || f.lines["restart"] != 0 || f.lines["dir"] != 2 {
				t.Errorf("lines wrong: %v", f.lines)
			}
		}},
		{"trial, watchdog and metrics", `
trial: 2m
watchdog: 10s
watchdog_grace: 1s
metrics: 127.0.0.1:9180
`, func(t *testing.T, f *File) {
			if f.Trial != 2*time.Minute || f.Watchdog != 10*time.Second || f.WatchdogGrace != time.Second || f.Metrics != "127.0.0.1:9180" {
				t.Errorf("trial %v, watchdog %v, grace %v, metrics %q", f.Trial, f.Watchdog, f.WatchdogGrace, f.Metrics)
			}
			if f.Line("metrics") != 5 || f.Line("pid_file") != 0 {
				t.Errorf("lines: metrics %d, pid_file %d", f.Line("metrics"), f.Line("pid_file"))
			}
		}},
		{"trial and watchdog off", "trial: 0\nwatchdog: 0s\nmetrics: ./m.sock\n", func(t *testing.T, f *File) {
			if f.Trial != 0 || f.Watchdog != 0 || f.WatchdogGrace != supervisor.DefaultWatchdogGrace || f.Metrics != "./m.sock" {
				t.Errorf("trial %v, watchdog %v, grace %v, metrics %q", f.Trial, f.Watchdog, f.WatchdogGrace, f.Metrics)
			}
		}},
		{"nested", `
restart: {backoff_min: 1s, backoff_max: 1s, stable_after: 1m}
log: {format: json, level: debug}
`, func(t *testing.T, f *File) {
			if f.BackoffMin != time.Second || f.BackoffMax != time.Second || f.StableAfter != time.Minute {
				t.Errorf("restart = %v %v %v", f.BackoffMin, f.BackoffMax, f.StableAfter)
			}
			if f.Log != (Log{Format: LogJSON, Level: slog.LevelDebug}) {
				t.Errorf("log = %+v", f.Log)
			}
			if f.lines["restart.stable_after"] != 2 {
				t.Errorf("line of restart.stable_after = %d", f.lines["restart.stable_after"])
			}
		}},
		{"command and env", `
command: [./server, --port, 8080, "", x y]
env:
  PORT: 8080
  DEBUG: true
  EMPTY: ""
  ARGS: "a=b c"
`, func(t *testing.T, f *File) {
			if want := []string{"./server", "--port", "8080", "", "x y"}; !reflect.DeepEqual(f.Command, want) {
				t.Errorf("command = %q", f.Command)
			}
			// In the order of the file, so that a child's environment
			// is the same at every start.
			if want := []string{"PORT=8080", "DEBUG=true", "EMPTY=", "ARGS=a=b c"}; !reflect.DeepEqual(f.Env, want) {
				t.Errorf("env = %q", f.Env)
			}
		}},
		{"listen both forms", `
listen:
  - tcp://127.0.0.1:8080
  - http=tcp://:80?backlog=5
  - {name: web, url: "unix:///run/a.sock", backlog: 64, mode: 0660, owner: root, group: 33}
  - {url: "unix:///run/b.sock?backlog=9", mode: "0o600"}
  - {url: "udp6://[::1]:53"}
`, func(t *testing.T, f *File) {
			want := []string{
				"tcp-8080 tcp 127.0.0.1:8080 backlog=0 mode=0 uid=-1 gid=-1 spec=tcp://127.0.0.1:8080",
				"http tcp :80 backlog=5 mode=0 uid=-1 gid=-1 spec=http=tcp://:80?backlog=5",
				"web unix /run/a.sock backlog=64 mode=660 uid=0 gid=33 spec=",
				"unix-b.sock unix /run/b.sock backlog=9 mode=600 uid=-1 gid=-1 spec=",
				"udp-53 udp6 [::1]:53 backlog=0 mode=0 uid=-1 gid=-1 spec=",
			}
			var got []string
			for _, l := range f.Listen {
				got = append(got, fmt.Sprintf("%s %s %s backlog=%d mode=%o uid=%d gid=%d spec=%s", l.Name, l.Network, l.Address, l.Backlog, l.Mode, l.UID, l.GID, l.Spec))
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("listen =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if f.lines["listen[2]"] != 5 {
				t.Errorf("line of listen[2] = %d", f.lines["listen[2]"])
			}
			if s := f.Listen[2].String(); s != "web=unix:///run/a.sock" {
				t.Errorf("a mapping item shows as %q", s)
			}
		}},
		{"null sections are empty", "env:\nlisten:\nrestart:\n", func(t *testing.T, f *File) {
			if f.Env != nil || f.Listen != nil || f.BackoffMin != supervisor.DefaultBackoffMin {
				t.Errorf("%+v", f)
			}
		}},
		{"aliases", `
restart: {backoff_min: &d 2s, backoff_max: *d}
`, func(t *testing.T, f *File) {
			if f.BackoffMax != 2*time.Second {
				t.Errorf("backoff_max = %v", f.BackoffMax)
			}
		}},
		{"signal number", "drain_signal: 3\n", func(t *testing.T, f *File) {
			if f.DrainSignal != syscall.SIGQUIT {
				t.Errorf("drain_signal = %v", f.DrainSignal)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("t.yaml", []byte(tt.doc))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, f)
		})
	}
}

func TestParseErrors(t *testing.T) {
	// Each error must name the file, the line and the field, and say what
	// would be valid: the want strings are the full messages.
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"bad duration", "\n\n\n\n\n\ndrain_timeout: 3x\n",
			[]string{`t.yaml:7: drain_timeout: "3x" is not a duration (want e.g. 30s, 1m30s)`}},
		{"duration without unit", "ready_timeout: 30\n",
			[]string{`t.yaml:1: ready_timeout: "30" has no unit (want e.g. 30s, 1m30s)`}},
		{"negative duration", "restart:\n  stable_after: -1s\n",
			[]string{`t.yaml:2: restart.stable_after: "-1s" is not positive (want e.g. 30s, 1m30s)`}},
		{"bad trial", "trial: soon\n",
			[]string{`t.yaml:1: trial: "soon" is not a duration (want e.g. 30s, 1m30s), or 0 for none`}},
		{"negative watchdog", "watchdog: -1s\n",
			[]string{`t.yaml:1: watchdog: "-1s" is not positive (want e.g. 30s, 1m30s), or 0 for none`}},
		{"zero watchdog grace", "watchdog_grace: 0s\n",
			[]string{`t.yaml:1: watchdog_grace: "0s" is not positive (want e.g. 30s, 1m30s)`}},
		{"metrics without a port", "metrics: localhost\n",
			[]string{`t.yaml:1: metrics: "localhost" is not host:port or a path (want host:port such as 127.0.0.1:9180, or a unix socket path such as /run/app/metrics.sock)`}},
		{"metrics port", "metrics: ':http'\n",
			[]string{`t.yaml:1: metrics: ":http": port "http" is not a number from 0 to 65535`}},
		{"unknown key", "drain_timout: 3s\n",
			[]string{`t.yaml:1: drain_timout: unknown key (valid keys here: listen, command, dir, env, user, ready, ready_timeout, drain_signal, drain_timeout, restart, trial, watchdog, watchdog_grace, output_prefix, no_standby, log, name, control, pid_file, metrics, fdstore)`}},
		{"unknown nested key", "log:\n  colour: true\n",
			[]string{`t.yaml:2: log.colour: unknown key (valid keys here: format, level)`}},
		{"duplicate key", "dir: a\ndir: b\n",
			[]string{`t.yaml:2: dir: set twice (first on line 1)`}},
		{"bad ready", "ready: sometimes\n",
			[]string{`t.yaml:1: ready: "sometimes" is not a readiness mode (want notify or delay:DURATION, e.g. delay:2s)`}},
		{"bad signal", "drain_signal: SIGFOO\n",
			[]string{`t.yaml:1: drain_signal: "SIGFOO" is not a signal (want a signal name such as SIGTERM, TERM, SIGUSR2, or a number)`}},
		{"uncatchable signal", "drain_signal: KILL\n",
			[]string{`t.yaml:1: drain_signal: "KILL": signal 9 cannot be used to drain (want a signal the child can catch, e.g. SIGTERM)`}},
		{"bad log level", "log: {level: verbose}\n",
			[]string{`t.yaml:1: log.level: "verbose" is not a log level (want debug, info, warn or error)`}},
		{"bad log format", "log: {format: xml}\n",
			[]string{`t.yaml:1: log.format: "xml" is not a log format (want text or json)`}},
		{"backoff order", "restart:\n  backoff_min: 5s\n  backoff_max: 1s\n",
			[]string{`t.yaml:3: restart.backoff_max: 1s is below the minimum backoff (5s)`}},
		// The file did not set backoff_max: its backoff_min is too high.
		{"backoff min above default max", "restart:\n  backoff_min: 1m\n",
			[]string{`t.yaml:2: restart.backoff_max: 30s is below the minimum backoff (1m0s)`}},
		{"bool expected", "output_prefix: yes\n",
			[]string{`t.yaml:1: output_prefix: "yes" is not a boolean (want true or false)`}},
		{"command as string", "command: ./server --flag\n",
			[]string{`t.yaml:1: command: want a list, found "./server --flag" (want the program and its arguments`}},
		{"command empty", "command: []\n",
			[]string{`t.yaml:1: command: is empty`}},
		{"command empty program", "command: ['', x]\n",
			[]string{`t.yaml:1: command[0]: the program is empty`}},
		{"command nested list", "command:\n  - a\n  - [b]\n",
			[]string{`t.yaml:3: command[1]: want a single value, found a list`}},
		{"null scalar", "dir:\n",
			[]string{`t.yaml:1: dir: has no value (give one, or remove the key)`}},
		{"bool as text", "name: true\n",
			[]string{`t.yaml:1: name: true is a boolean; quote it if you mean the text`}},
		{"bad name", "name: my/app\n",
			[]string{`t.yaml:1: name: "my/app" is not a service name`}},
		{"env reserved", "env:\n  LISTEN_FDS: 3\n",
			[]string{`t.yaml:2: env.LISTEN_FDS: hitless sets LISTEN_FDS for each child itself`}},
		{"env bad name", "env:\n  A-B: 1\n",
			[]string{`t.yaml:2: env.A-B: "A-B" is not a variable name`}},
		{"env name with =", "env: {\"A=B\": 1}\n",
			[]string{`t.yaml:1: env.A=B: "A=B" contains '=', which ends a variable's name`}},
		{"env reserved by the supervisor", "env:\n  HITLESS_GENERATION: 1\n",
			[]string{`t.yaml:2: env.HITLESS_GENERATION: hitless sets HITLESS_GENERATION for each child itself`}},
		{"env null", "env:\n  A:\n",
			[]string{`t.yaml:2: env.A: has no value (write "" for an empty variable)`}},
		{"env list", "env: [A=1]\n",
			[]string{`t.yaml:1: env: want a mapping of keys to values, found a list`}},
		{"listen not list", "listen: tcp://:80\n",
			[]string{`t.yaml:1: listen: want a list, found "tcp://:80"`}},
		{"listen mapping without url", "listen:\n  - name: web\n",
			[]string{`t.yaml:2: listen[0]: has no url`}},
		{"listen bad mode", "listen:\n  - {url: 'unix:///a', mode: 999}\n",
			[]string{`t.yaml:2: listen[0].mode: mode="999": want octal permissions such as 0660`}},
		{"listen mode on tcp", "listen:\n  - {url: 'tcp://:80', mode: '0600'}\n",
			[]string{`t.yaml:2: listen[0].mode: unknown option "mode" (valid: backlog, nonblock)`}},
		{"listen mode in the url and the mapping", "listen:\n  - url: unix:///a?mode=0600\n    mode: '0660'\n",
			[]string{`t.yaml:3: listen[0].mode: is also set in the url "unix:///a?mode=0600"; set it in one place`}},
		{"listen backlog twice", "listen:\n  - {url: 'tcp://:80?backlog=1', backlog: 2}\n",
			[]string{`t.yaml:2: listen[0].backlog: is also set in the url "tcp://:80?backlog=1"; set it in one place`}},
		{"listen bad backlog", "listen:\n  - {url: 'tcp://:80', backlog: many}\n",
			[]string{`t.yaml:2: listen[0].backlog: backlog="many": want a number from 1 to 65536`}},
		{"listen bad name", "listen:\n  - {name: 'a:b', url: 'tcp://:80'}\n",
			[]string{`t.yaml:2: listen[0].name: socket name "a:b": want printable ASCII without spaces, ':' or '='`}},
		{"listen name with =", "listen:\n  - {name: 'a=b', url: 'tcp://:80'}\n",
			[]string{`t.yaml:2: listen[0].name: socket name "a=b": want printable ASCII without spaces, ':' or '='`}},
		{"listen bad url", "listen:\n  - tcp://:80\n  - bogus://x\n",
			[]string{`t.yaml:3: listen[1]: "bogus://x": unknown scheme "bogus"`}},
		{"listen mapping bad url", "listen:\n  - name: web\n    url: tcp://127.0.0.1\n",
			[]string{`t.yaml:3: listen[0].url: "tcp://127.0.0.1": want tcp://HOST:PORT`}},
		{"listen mapping url with a name", "listen:\n  - {url: 'web=tcp://:80'}\n",
			[]string{`t.yaml:2: listen[0].url: "web=tcp://:80" starts with NAME=; give the name as name:`}},
		{"listen mapping url with a name that has a slash", "listen:\n  - {url: 'a/b=tcp://:80'}\n",
			[]string{`t.yaml:2: listen[0].url: "a/b=tcp://:80" starts with NAME=`}},
		{"listen unknown owner", "listen:\n  - {url: 'unix:///a', owner: no-such-user-hitless}\n",
			[]string{`t.yaml:2: listen[0].owner: owner="no-such-user-hitless": no such user`}},
		{"listen same name twice", "listen:\n  - a=tcp://:80\n  - {name: a, url: 'tcp://:81'}\n",
			[]string{`t.yaml:3: listen[1]: name "a" is already used by a=tcp://:80: give each socket its own name`}},
		{"listen same default name twice", "listen:\n  - tcp://127.0.0.1:80\n  - tcp6://[::1]:80\n",
			[]string{`t.yaml:3: listen[1]: name "tcp-80" is already used by tcp://127.0.0.1:80`}},
		{"listen unknown key", "listen:\n  - {url: 'tcp://:80', reuseport: true}\n",
			[]string{`t.yaml:2: listen[0].reuseport: unknown key (valid keys here: name, url, backlog, nonblock, mode, owner, group)`}},
		{"control too long", "control: /" + strings.Repeat("x", 120) + "\n",
			[]string{`t.yaml:1: control: "/xxx`, `is 121 bytes long; unix socket paths are limited to 107`}},
		{"not a mapping", "- a\n- b\n",
			[]string{`t.yaml:1: the file must be a mapping of keys such as listen:, command:, drain_timeout: (found a list)`}},
		{"syntax", "listen: [a\n",
			[]string{`t.yaml:1: invalid YAML: did not find expected ',' or ']'`}},
		{"two documents", "dir: a\n---\ndir: b\n",
			[]string{`t.yaml:2: a second YAML document (after ---); a config file holds one`}},
		{"merge key", "base: &b {format: json}\nlog:\n  <<: *b\n",
			[]string{`base: unknown key`, `t.yaml:3: log: merge keys (<<) are not supported`}},
		{"binary tag", "dir: !!binary aGVsbG8=\n",
			[]string{`t.yaml:1: dir: values with the tag !!binary are not supported`}},
		{"NUL", "dir: \"a\\0b\"\n",
			[]string{`t.yaml:1: dir: contains a NUL byte`}},
		{"delay not below ready_timeout", "ready: delay:1m\nready_timeout: 30s\n",
			[]string{`t.yaml:1: ready: 1m0s is not shorter than the ready timeout (30s): no child would ever be ready in time`}},
		{"ready delay not positive", "ready: delay:0s\n",
			[]string{`t.yaml:1: ready: "delay:0s": the delay "0s" is not positive (want e.g. 30s, 1m30s)`}},
		{"several errors reported together", "drain_timeout: x\nready_timeout: y\n",
			[]string{`t.yaml:1: drain_timeout:`, `t.yaml:2: ready_timeout:`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("t.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", f)
			}
			if f != nil {
				t.Errorf("Parse returned a File along with an error")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error:\n%v\nwant it to contain:\n%s", err, want)
				}
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error %T is not an *Error", err)
			}
		})
	}
}

func TestTooManyErrors(t *testing.T) {
	var doc strings.Builder
	for i := range 2 * maxErrors {
		doc.WriteString("k" + strings.Repeat("x", i) + ": 1\n")
	}
	_, err := Parse("t.yaml", []byte(doc.String()))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxErrors+1 || !strings.Contains(lines[maxErrors], "10 more errors not shown") {
		t.Errorf("got %d lines:\n%v", len(lines), err)
	}
}

func TestValidate(t *testing.T) {
	f, err := Parse("t.yaml", []byte("restart: {backoff_max: 1s}\nlisten: [tcp://:80]\ncommand: [./server]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("Validate of a parsed file: %v", err)
	}
	// Values laid over the file, as flags are.
	f.BackoffMin = 2 * time.Second
	f.DrainTimeout = -time.Second
	err = f.Validate()
	for _, want := range []string{
		"t.yaml:1: restart.backoff_max: 1s is below the minimum backoff (2s)",
		"t.yaml: drain_timeout: -1s is negative",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error:\n%v\nwant it to contain:\n%s", err, want)
		}
	}
	var ce *supervisor.ConfigError
	if !errors.As(err, &ce) || ce.Field != "DrainTimeout" && ce.Field != "BackoffMax" {
		t.Errorf("Validate error does not wrap the supervisor's: %v", err)
	}

	// Parse lets the command and the sockets come later; Validate does not.
	err = Default().Validate()
	if err == nil || err.Error() != "command: no program to run\nlisten: no sockets: give at least one" {
		t.Errorf("Default().Validate() = %v", err)
	}
}

func TestValidateEnvKey(t *testing.T) {
	f, err := Parse("t.yaml", []byte("env:\n  A: 1\n  B: 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The index of the supervisor's field is turned into the variable.
	f.Env[1] = "B"
	err = f.Validate()
	if want := `t.yaml:3: env.B: "B" is not KEY=VALUE`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Validate error:\n%v\nwant it to contain:\n%s", err, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.yaml")
	if err := os.WriteFile(path, []byte("drain_timeout: soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":1: drain_timeout:") {
		t.Errorf("Load error = %v, want it to start with the path and line", err)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want ErrNotExist", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load of a big file: %v", err)
	}
}

// TestShippedConfigs loads every example configuration in configs/, so that
// an example can never drift from what the parser accepts.
func TestShippedConfigs(t *testing.T) {
	paths, err := filepath.Glob("../../configs/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no configs/*.yaml found")
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, errs := parse(path, data)
			for _, err := range errs {
				// An example names the users and groups of the machine it
				// is written for, and the parser looks them up; that they
				// are missing on this one is the only error allowed.
				var e *Error
				if errors.As(err, &e) && (strings.HasSuffix(e.Field, ".owner") || strings.HasSuffix(e.Field, ".group")) &&
					strings.Contains(e.Msg, "no such") {
					t.Logf("not on this machine: %v", err)
					continue
				}
				t.Error(err)
			}
			if len(f.Command) == 0 || len(f.Listen) == 0 {
				t.Errorf("example sets no command or no listen: %+v", f)
			}
		})
	}
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		err  bool
	}{
		{"SIGTERM", syscall.SIGTERM, false},
		{"TERM", syscall.SIGTERM, false},
		{"term", syscall.SIGTERM, false},
		{"SigUsr2", syscall.SIGUSR2, false},
		{"15", syscall.SIGTERM, false},
		{"1", syscall.SIGHUP, false},
		{"40", syscall.Signal(40), false},
		{"64", syscall.Signal(64), false},
		{"0", 0, true},
		{"65", 0, true},
		{"32", 0, true},
		{"-15", 0, true},
		{"KILL", 0, true},
		{"SIGSTOP", 0, true},
		{"9", 0, true},
		{"", 0, true},
		{"SIG", 0, true},
		{"SIGTERM ", 0, true},
	}
	for _, tt := range tests {
		got, err := drainSignal(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("drainSignal(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			if back, err := drainSignal(SignalName(got)); err != nil || back != got {
				t.Errorf("drainSignal(SignalName(%v)) = %v, %v", got, back, err)
			}
		}
	}
}

func TestParseReady(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"notify", 0, false},
		{"delay:2s", 2 * time.Second, false},
		{"delay:1m30s", 90 * time.Second, false},
		{"delay:0s", 0, true},
		{"delay:-1s", 0, true},
		{"delay:", 0, true},
		{"delay:2", 0, true},
		{"delay", 0, true},
		{"Notify", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseReady(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseReady(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			if back, err := ParseReady(FormatReady(got)); err != nil || back != got {
				t.Errorf("ParseReady(FormatReady(%v)) = %v, %v", got, back, err)
			}
		}
	}
}

// FuzzParse checks that no input crashes Parse, and that whatever it
// accepts satisfies the invariants the supervisor relies on.
func FuzzParse(f *testing.F) {
	// Small seeds: the fuzzer spends its time minimizing large ones.
	if data, err := os.ReadFile("../../configs/minimal.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("command: [a]\nenv: {A: 1, B: true}\nlog: {format: json, level: warn}\noutput_prefix: true\n"))
	f.Add([]byte("drain_timeout: 1m\nready_timeout: 2s\nrestart: {stable_after: 3s}\nname: x\ncontrol: /c\npid_file: p\ndir: d\n"))
	f.Add([]byte("listen:\n  - {name: a, url: 'unix:///x', mode: 0660, backlog: 3}\n"))
	f.Add([]byte("restart: {backoff_min: &d 2s, backoff_max: *d}\n"))
	f.Add([]byte("a: &x [*x]\nlisten: *x\n"))
	f.Add([]byte("drain_signal: 64\nready: delay:1ns\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			if cfg != nil {
				t.Fatal("File and error both returned")
			}
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		// What Parse accepts, the supervisor runs once it has a command
		// and a socket.
		if len(cfg.Command) == 0 {
			cfg.Command = []string{"./server"}
		}
		if len(cfg.Listen) == 0 {
			l, _ := sockets.ParseListen("tcp://127.0.0.1:0")
			cfg.Listen = []sockets.ListenSpec{l}
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate rejects: %v", err)
		}
		if cfg.ReadyTimeout <= 0 || cfg.DrainTimeout <= 0 || cfg.StableAfter <= 0 ||
			cfg.BackoffMin <= 0 || cfg.BackoffMin > cfg.BackoffMax || cfg.ReadyDelay < 0 {
			t.Fatalf("invalid durations accepted: %+v", cfg)
		}
		if cfg.DrainSignal == syscall.SIGKILL || cfg.DrainSignal == syscall.SIGSTOP {
			t.Fatalf("uncatchable drain signal accepted")
		}
		for _, s := range append(append([]string{}, cfg.Command...), cfg.Env...) {
			if strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("NUL accepted: %q", s)
			}
		}
		for _, l := range cfg.Listen {
			if strings.IndexByte(l.Name+l.Address, 0) >= 0 {
				t.Fatalf("NUL accepted: %+v", l)
			}
		}
		if cfg.Command[0] == "" {
			t.Fatal("empty program accepted")
		}
	})
}
