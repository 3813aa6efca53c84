//go:build linux

package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/hitless/hitless/internal/config"
	"github.com/hitless/hitless/supervisor"
)

// configure parses args as "hitless run" does, with file (if not empty) as
// the config file app.yaml.
func configure(t *testing.T, file string, args ...string) (*config.File, error) {
	t.Helper()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	r := newRunFlags(fs)
	if file != "" {
		path := filepath.Join(t.TempDir(), "app.yaml")
		if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	f, err := r.configure(fs, fs.Args())
	if err != nil {
		var usage usageError
		if !errors.As(err, &usage) {
			t.Errorf("%v is not a usage error (exit status 2)", err)
		}
		if r.config != "" {
			// The file's path is the test's: keep only its base name.
			err = errors.New(strings.ReplaceAll(err.Error(), filepath.Dir(r.config)+"/", ""))
		}
	}
	return f, err
}

func TestConfigureLaysFlagsOverFile(t *testing.T) {
	const file = `
listen: [tcp://127.0.0.1:8080]
command: [./server]
drain_timeout: 5s
ready: delay:1s
env: {A: 1, B: 2}
log: {level: debug}
`
	f, err := configure(t, file, "--drain-timeout", "7s", "--env", "A=9", "--env", "C=3", "--drain-signal", "usr2", "--output-prefix")
	if err != nil {
		t.Fatal(err)
	}
	if f.DrainTimeout != 7*time.Second || f.ReadyDelay != time.Second || f.DrainSignal != syscall.SIGUSR2 || !f.OutputPrefix {
		t.Errorf("flags not laid over the file: %+v", f.Config)
	}
	// --env replaces the file's value in place, and adds the rest.
	if want := []string{"A=9", "B=2", "C=3"}; !reflect.DeepEqual(f.Env, want) {
		t.Errorf("env = %q, want %q", f.Env, want)
	}
	if f.ReadyTimeout != supervisor.DefaultReadyTimeout || f.Log.Level.String() != "DEBUG" {
		t.Errorf("defaults or file lost: %+v", f)
	}

	// --trial 0 turns off the file's trial; --watchdog sets one.
	f, err = configure(t, file+"trial: 1m\nwatchdog_grace: 2s\nmetrics: 127.0.0.1:1\n", "--trial", "0", "--watchdog", "3s", "--metrics", "/run/m.sock")
	if err != nil {
		t.Fatal(err)
	}
	if f.Trial != 0 || f.Watchdog != 3*time.Second || f.WatchdogGrace != 2*time.Second || f.Metrics != "/run/m.sock" {
		t.Errorf("trial %v, watchdog %v, grace %v, metrics %q", f.Trial, f.Watchdog, f.WatchdogGrace, f.Metrics)
	}

	// --listen replaces the file's sockets; the command after -- its command.
	f, err = configure(t, file, "--listen", "a=tcp://127.0.0.1:1", "--listen", "unix:///tmp/x.sock?mode=0600", "--", "./other", "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Listen) != 2 || f.Listen[0].Name != "a" || f.Listen[1].Mode != 0o600 {
		t.Errorf("listen = %v", f.Listen)
	}
	if want := []string{"./other", "x"}; !reflect.DeepEqual(f.Command, want) {
		t.Errorf("command = %q", f.Command)
	}
}

func TestConfigureErrors(t *testing.T) {
	listen := []string{"--listen", "tcp://127.0.0.1:0"}
	tests := []struct {
		name string
		file string
		args []string
		want string // the whole message
	}{
		{"no sockets", "", []string{"--", "./server"},
			"no sockets: give at least one --listen [NAME=]URL, e.g. --listen http=tcp://127.0.0.1:8080"},
		{"no command", "", listen,
			"no command: give it after --, e.g. hitless run --listen tcp://127.0.0.1:8080 -- ./server"},
		{"empty program", "", append(listen, "--", ""),
			"no command: give it after --, e.g. hitless run --listen tcp://127.0.0.1:8080 -- ./server"},
		{"flag against a default", "", append(listen, "--backoff-min", "1m", "--", "./server"),
			"--backoff-max: 30s is below the minimum backoff (1m0s)"},
		{"flag against a flag", "", append(listen, "--backoff-min", "2s", "--backoff-max", "1s", "--", "./server"),
			"--backoff-max: 1s is below the minimum backoff (2s)"},
		{"flag against the file", "restart: {backoff_max: 10s}\n", append(listen, "--backoff-min", "20s", "--", "./server"),
			"app.yaml:1: restart.backoff_max: 10s is below the minimum backoff (20s)"},
		{"file against a flag", "ready: delay:45s\n", append(listen, "--ready-timeout", "30s", "--", "./server"),
			"app.yaml:1: ready: 45s is not shorter than the ready timeout (30s): no child would ever be ready in time"},
		{"ready flag", "ready_timeout: 30s\n", append(listen, "--ready", "delay:1m", "--", "./server"),
			"--ready: 1m0s is not shorter than the ready timeout (30s): no child would ever be ready in time"},
		{"listen flags", "", []string{"--listen", "a=tcp://127.0.0.1:0", "--listen", "a=tcp://127.0.0.1:1", "--", "./server"},
			`--listen a=tcp://127.0.0.1:1: name "a" is already used by a=tcp://127.0.0.1:0: give each socket its own name`},
		{"listen in the file", "listen:\n  - a=tcp://127.0.0.1:0\n  - {name: b, url: 'tcp://127.0.0.1:1'}\n", []string{"--", "./server"}, ""},
		{"the file alone", "restart:\n  backoff_min: 1m\n", listen,
			"app.yaml:2: restart.backoff_max: 30s is below the minimum backoff (1m0s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := configure(t, tt.file, tt.args...)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("error:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// A flag's value goes through the parser of the config file, which says
// what is wrong with it; nothing else parses it again.
func TestFlagValues(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--drain-timeout", "3x"}, `"3x" is not a duration (want e.g. 30s, 1m30s)`},
		{[]string{"--ready-timeout", "-5s"}, `"-5s" is not positive (want e.g. 30s, 1m30s)`},
		{[]string{"--backoff-min", "30"}, `"30" has no unit (want e.g. 30s, 1m30s)`},
		{[]string{"--ready", "soon"}, `"soon" is not a readiness mode`},
		{[]string{"--drain-signal", "KILL"}, `"KILL": signal 9 cannot be used to drain`},
		{[]string{"--listen", "sctp://127.0.0.1:80"}, `unknown scheme "sctp"`},
		{[]string{"--env", "LISTEN_FDS=3"}, "hitless sets LISTEN_FDS for each child itself"},
		{[]string{"--env", "FOO"}, `"FOO" is not KEY=VALUE`},
		{[]string{"--name", "my/app"}, `"my/app" is not a service name`},
		{[]string{"--log-level", "verbose"}, `"verbose" is not a log level`},
		{[]string{"--trial", "30"}, `"30" has no unit (want e.g. 30s, 1m30s), or 0 for none`},
		{[]string{"--watchdog-grace", "0"}, `"0" is not positive`},
		{[]string{"--metrics", "9180"}, `"9180" is not host:port or a path`},
	} {
		_, err := configure(t, "", tt.args...)
		var bad *pflag.InvalidValueError
		if !errors.As(err, &bad) || bad.GetFlag().Name != strings.TrimPrefix(tt.args[0], "--") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want an invalid value of %s saying %q", tt.args, err, tt.args[0], tt.want)
		}
	}
}

func TestFlagMessage(t *testing.T) {
	c := runCommand()
	c.SetArgs([]string{"--drain-timeout", "3x"})
	c.SilenceErrors, c.SilenceUsage = true, true
	c.SetFlagErrorFunc(flagError)
	err := c.Execute()
	if want := `--drain-timeout: "3x" is not a duration (want e.g. 30s, 1m30s) (see run --help)`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}
