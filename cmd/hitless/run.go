//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hitless/hitless/internal/config"
	"github.com/hitless/hitless/internal/control"
	"github.com/hitless/hitless/internal/pidfile"
	"github.com/hitless/hitless/internal/sdnotify"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

type runFlags struct {
	config       string
	listen       []string
	ready        string
	readyTimeout time.Duration
	drainSignal  string
	drainTimeout time.Duration
	dir          string
	env          []string
	outputPrefix bool
	backoffMin   time.Duration
	backoffMax   time.Duration
	stableAfter  time.Duration
	logFormat    string
	logLevel     string
	name         string
	control      string
	pidFile      string
}

func runCommand() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARG...]",
		Short: "Hold the sockets and run COMMAND as a child that can be replaced without downtime",
		Long: `hitless run binds every --listen socket once and keeps it for its whole life.
It starts COMMAND as a child that inherits the sockets as fds 3, 4, ... (in
--listen order) with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set as systemd
does, plus SERVER_STARTER_PORT, EINHORN_FD_* and HITLESS_GENERATION.

Signals to hitless:
  SIGHUP          reload: start a new child, wait until it is ready, then drain the old one
  SIGTERM, SIGINT stop: drain every child, then exit with the serving child's status
  second SIGINT   kill every child at once
  SIGUSR1/SIGUSR2 forwarded to the serving child's process group

Control socket (for hitless reload, hitless status, hitless stop): --control
PATH, else $HITLESS_CONTROL, else NAME.sock in $XDG_RUNTIME_DIR/hitless if
XDG_RUNTIME_DIR is set, /run/hitless for root, $TMPDIR/hitless-UID otherwise,
where NAME is --name, by default the base name of COMMAND. Mode 0600; only
root and hitless's own user may use it. A live socket there is refused (exit
status 2): give a second instance of the same program its own --name.

Socket URLs: tcp://HOST:PORT, tcp4://, tcp6://[::1]:PORT, udp://HOST:PORT,
unix:///PATH. Options as a query: ?backlog=N, and for unix ?mode=0660&owner=U&group=G.
The default NAME is SCHEME-PORT (tcp-8080, udp-53) or unix-FILENAME.`,
		Example: `  hitless run --listen http=tcp://127.0.0.1:8080 -- ./myserver --flag value
  kill -HUP $(pidof hitless)`,
		RunE: func(c *cobra.Command, args []string) error {
			return run(c, &f, args)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.config, "config", "", "YAML config file holding any of these settings; flags override it")
	fl.StringArrayVar(&f.listen, "listen", nil, "socket to hold, [NAME=]URL (repeatable)")
	fl.StringVar(&f.ready, "ready", "notify", "readiness gate: notify (the child sends READY=1) or delay:DURATION (weaker)")
	fl.DurationVar(&f.readyTimeout, "ready-timeout", config.DefaultReadyTimeout, "a new child not ready in this time fails the reload")
	fl.StringVar(&f.drainSignal, "drain-signal", "SIGTERM", "signal that tells an old child to drain")
	fl.DurationVar(&f.drainTimeout, "drain-timeout", config.DefaultDrainTimeout, "time an old child has to exit before its process group gets SIGKILL")
	fl.StringVar(&f.dir, "dir", "", "working directory of the child, resolved afresh at every start (default: hitless's)")
	fl.StringArrayVar(&f.env, "env", nil, "KEY=VALUE added to the child's environment (repeatable)")
	fl.BoolVar(&f.outputPrefix, "output-prefix", false, `prefix each line of child output with "[gen N pid P] "`)
	fl.DurationVar(&f.backoffMin, "backoff-min", config.DefaultBackoffMin, "first delay before restarting a child that died")
	fl.DurationVar(&f.backoffMax, "backoff-max", config.DefaultBackoffMax, "longest delay between restarts")
	fl.DurationVar(&f.stableAfter, "stable-after", config.DefaultStableAfter, "a child that served this long resets the restart delay")
	fl.StringVar(&f.logFormat, "log-format", "text", "hitless's own log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.name, "name", "", "service name, used in the default control socket path (default: the command's base name)")
	fl.StringVar(&f.control, "control", "", "control socket path for hitless reload/status/stop (default $HITLESS_CONTROL, else NAME.sock under $XDG_RUNTIME_DIR/hitless, /run/hitless for root, or $TMPDIR/hitless-UID)")
	fl.StringVar(&f.pidFile, "pid-file", "", "write hitless's pid here (atomically); it never changes across reloads")
	return c
}

func run(c *cobra.Command, f *runFlags, args []string) error {
	file := config.Default()
	if f.config != "" {
		var err error
		if file, err = config.Load(f.config); err != nil {
			return usageError{err}
		}
	}
	if err := applyFlags(c, f, file, args); err != nil {
		return err
	}
	if err := file.Validate(); err != nil {
		return usageError{err}
	}
	cfg := supervisor.Config{
		Command:      file.Command,
		Dir:          file.Dir,
		ReadyDelay:   file.Ready.Delay,
		ReadyTimeout: file.ReadyTimeout,
		DrainSignal:  file.DrainSignal,
		DrainTimeout: file.DrainTimeout,
		BackoffMin:   file.Restart.BackoffMin,
		BackoffMax:   file.Restart.BackoffMax,
		StableAfter:  file.Restart.StableAfter,
		OutputPrefix: file.OutputPrefix,
	}
	cfg.Env = file.Environ()
	for i, l := range file.Listen {
		spec, err := supervisor.ParseListen(l)
		if err != nil {
			if c.Flags().Changed("listen") {
				return usagef("--listen %s: %w", l, err)
			}
			return usageError{file.ErrorAt(fmt.Sprintf("listen[%d]", i), err)}
		}
		cfg.Listen = append(cfg.Listen, spec)
	}
	if len(cfg.Listen) == 0 {
		return usagef("no sockets: give at least one --listen [NAME=]URL, e.g. --listen http=tcp://127.0.0.1:8080")
	}
	if len(cfg.Command) == 0 {
		return usagef("no command: give it after --, e.g. hitless run --listen tcp://127.0.0.1:8080 -- ./server")
	}
	// The control socket: --control, else $HITLESS_CONTROL, else derived
	// from the service name (--name, else the command's base name).
	name := file.Name
	if name == "" {
		name = control.NameFromCommand(cfg.Command[0])
	} else if err := control.CheckName(name); err != nil {
		return usagef("--name: %w", err)
	}
	ctlPath := file.Control
	if ctlPath == "" {
		ctlPath = control.DefaultPath(name)
	}
	if err := control.CheckPath(ctlPath); err != nil {
		return usagef("--control: %w", err)
	}
	opts := &slog.HandlerOptions{Level: file.Log.Level}
	if file.Log.Format == config.LogJSON {
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, opts))
	}

	// Read (and unset, so no child inherits it) what systemd gave hitless.
	notifier, err := sdnotify.FromEnv()
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	cfg.Notifier = notifier

	upg, err := upgrade.New()
	if err != nil {
		return err
	}
	defer upg.Stop()
	cfg.Registry = upg.Registry()
	cfg.ReleaseSockets = upg.Stop
	sup, err := supervisor.New(cfg)
	if err != nil {
		// A busy port or a bad address: nothing was started.
		return usageError{err}
	}
	// After New, so that a busy port is reported first; before Run, so
	// that no child starts if hitless cannot be controlled.
	ctl, err := control.Listen(ctlPath)
	if err != nil {
		sup.Close()
		return usageError{err}
	}
	ctl.Log = cfg.Logger
	cfg.Logger.Info("control socket", "path", ctl.Path(), "name", name)
	go ctl.Serve(sup)
	defer ctl.Close()
	if file.PIDFile != "" {
		if err := pidfile.Write(file.PIDFile, os.Getpid()); err != nil {
			sup.Close()
			return fmt.Errorf("--pid-file: %w", err)
		}
		defer pidfile.Remove(file.PIDFile)
	}
	return sup.Run(context.Background())
}

// applyFlags lays the flags that were given over the file's settings.
func applyFlags(c *cobra.Command, f *runFlags, file *config.File, args []string) error {
	set := c.Flags().Changed
	var err error
	if set("listen") {
		file.Listen = f.listen
	}
	if len(args) > 0 {
		file.Command = args
	}
	if set("ready") || f.config == "" {
		if file.Ready, err = config.ParseReady(f.ready); err != nil {
			return usagef("--ready: %w", err)
		}
	}
	if set("ready-timeout") || f.config == "" {
		if file.ReadyTimeout, err = positive("--ready-timeout", f.readyTimeout); err != nil {
			return err
		}
	}
	if set("drain-signal") || f.config == "" {
		if file.DrainSignal, err = config.ParseSignal(f.drainSignal); err != nil {
			return usagef("--drain-signal: %w", err)
		}
	}
	if set("drain-timeout") || f.config == "" {
		if file.DrainTimeout, err = positive("--drain-timeout", f.drainTimeout); err != nil {
			return err
		}
	}
	if set("dir") {
		file.Dir = f.dir
	}
	for _, kv := range f.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usagef("--env %q: want KEY=VALUE", kv)
		}
		if file.Env == nil {
			file.Env = map[string]string{}
		}
		file.Env[k] = v
	}
	if set("output-prefix") {
		file.OutputPrefix = f.outputPrefix
	}
	for name, dst := range map[string]*time.Duration{
		"backoff-min": &file.Restart.BackoffMin, "backoff-max": &file.Restart.BackoffMax, "stable-after": &file.Restart.StableAfter,
	} {
		if set(name) {
			v, _ := c.Flags().GetDuration(name)
			if *dst, err = positive("--"+name, v); err != nil {
				return err
			}
		}
	}
	for flag, dst := range map[string]*string{"name": &file.Name, "control": &file.Control, "pid-file": &file.PIDFile} {
		if set(flag) {
			*dst, _ = c.Flags().GetString(flag)
		}
	}
	if set("log-format") || f.config == "" {
		if file.Log.Format, err = config.ParseLogFormat(f.logFormat); err != nil {
			return usagef("--log-format: %w", err)
		}
	}
	if set("log-level") || f.config == "" {
		if file.Log.Level, err = config.ParseLogLevel(f.logLevel); err != nil {
			return usagef("--log-level: %w", err)
		}
	}
	return nil
}

func positive(flag string, d time.Duration) (time.Duration, error) {
	if d <= 0 {
		return 0, usagef("%s %v: want a positive duration such as 30s", flag, d)
	}
	return d, nil
}
