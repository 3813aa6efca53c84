//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hitless/hitless/internal/config"
	"github.com/hitless/hitless/internal/control"
	"github.com/hitless/hitless/internal/metrics"
	"github.com/hitless/hitless/internal/pidfile"
	"github.com/hitless/hitless/internal/sdnotify"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

func runCommand() *cobra.Command {
	var r *runFlags
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

Trial (--trial D): after a reload, the new child serves beside the old one,
which is not signalled, for D. If the new child exits, misses its watchdog or
sends WATCHDOG=trigger meanwhile, the reload is rolled back: the new child
drains and the old one goes on. If the old one dies, the new one takes over at
once. When D passes, the old one drains. hitless promote and hitless rollback
end the trial early; hitless reload waits for its end and reports the verdict.

Watchdog (--watchdog D): every child gets WATCHDOG_USEC and WATCHDOG_PID, as
under systemd's WatchdogSec=. Once ready, it must send WATCHDOG=1 at least
every D (childproc does, while Options.Healthy says so). A serving child that
misses it gets SIGABRT (a Go program prints every goroutine's stack), SIGKILL
of its process group after --watchdog-grace, and is restarted like a crash.

Metrics (--metrics ADDR): Prometheus metrics on http://ADDR/metrics (host:port,
or a unix socket path). Nothing listens without it.

Control socket (for hitless reload, status, stop, promote, rollback,
upgrade): --control PATH, else $HITLESS_CONTROL, else NAME.sock in
$XDG_RUNTIME_DIR/hitless if XDG_RUNTIME_DIR is set, /run/hitless for root,
$TMPDIR/hitless-UID otherwise, where NAME is --name, by default the base name of COMMAND. Mode 0600; only
root and hitless's own user may use it. A live socket there is refused (exit
status 2): give a second instance of the same program its own --name.

Socket URLs: tcp://HOST:PORT, tcp4://, tcp6://[::1]:PORT, udp://HOST:PORT,
unix:///PATH. Options as a query: ?backlog=N, and for unix ?mode=0660&owner=U&group=G.
The default NAME is SCHEME-PORT (tcp-8080, udp-53) or unix-FILENAME.

Under systemd: systemd://NAME is the socket a socket unit passed under that
FileDescriptorName=; without --listen, hitless takes every socket systemd
passed. A URL whose address systemd passed is taken, not bound. With the
unit's fd store ($FDSTORE, set by systemd 254 and later, or --fdstore),
hitless keeps the sockets it binds there, and takes them back, by name,
when systemd restarts it: a crash of hitless refuses no connection.`,
		Example: `  hitless run --listen http=tcp://127.0.0.1:8080 -- ./myserver --flag value
  kill -HUP $(pidof hitless)`,
		RunE: func(c *cobra.Command, args []string) error {
			return run(c.Flags(), r, args)
		},
	}
	r = newRunFlags(c.Flags())
	return c
}

// runFlags are the flags of "hitless run".
type runFlags struct {
	config string // --config
	// flags holds what the flags say; configure lays those that were
	// given over the config file.
	flags    *config.File
	settings []setting
	// passed is what systemd passed (LISTEN_FDS): with no --listen,
	// hitless takes all of it.
	passed supervisor.Passed
	// configData is what the settings come from: the config file as read
	// at the first start, which upgrades carry (see carry.go).
	configData []byte
}

func newRunFlags(fl *pflag.FlagSet) *runFlags {
	r := &runFlags{flags: config.Default()}
	r.settings = runSettings(r.flags)
	fl.StringVar(&r.config, "config", "", "YAML config file holding any of these settings; flags override it")
	for _, s := range r.settings {
		f := fl.VarPF(s.value, s.flag, "", s.usage)
		if s.value.Type() == "bool" {
			f.NoOptDefVal = "true" // --output-prefix alone means true
		}
	}
	return r
}

// A setting is a flag of "hitless run" that the config file also sets.
type setting struct {
	flag  string      // the flag's name, without "--"
	field string      // the supervisor.Config field it sets, as a *supervisor.ConfigError names it; "" if none
	usage string      // for --help
	value pflag.Value // parses the flag into a File of the flags' own
	lay   func(file *config.File)
}

// runSettings returns the flags of "hitless run", which parse into
// flags. The flags given on the command line are laid over the config
// file in this order; no two of them set the same field, so the order
// matters only to a reader.
func runSettings(flags *config.File) []setting {
	return []setting{
		{"listen", "Listen", "socket to hold, [NAME=]URL (repeatable)",
			&list[supervisor.ListenSpec]{&flags.Listen, supervisor.ParseListen, supervisor.ListenSpec.String},
			func(f *config.File) { f.Listen = flags.Listen }},
		{"ready", "ReadyDelay", "readiness gate: notify (the child sends READY=1) or delay:DURATION (weaker)",
			&value[time.Duration]{&flags.ReadyDelay, config.ParseReady, config.FormatReady, "string"},
			func(f *config.File) { f.ReadyDelay = flags.ReadyDelay }},
		{"ready-timeout", "ReadyTimeout", "a new child not ready in this time fails the reload",
			durationFlag(&flags.ReadyTimeout),
			func(f *config.File) { f.ReadyTimeout = flags.ReadyTimeout }},
		{"drain-signal", "DrainSignal", "signal that tells an old child to drain",
			&value[syscall.Signal]{&flags.DrainSignal, config.ParseSignal, config.SignalName, "string"},
			func(f *config.File) { f.DrainSignal = flags.DrainSignal }},
		{"drain-timeout", "DrainTimeout", "time an old child has to exit before its process group gets SIGKILL",
			durationFlag(&flags.DrainTimeout),
			func(f *config.File) { f.DrainTimeout = flags.DrainTimeout }},
		{"dir", "Dir", "working directory of the child, resolved afresh at every start (default: hitless's)",
			textFlag(&flags.Dir, nil),
			func(f *config.File) { f.Dir = flags.Dir }},
		{"env", "Env", "KEY=VALUE added to the child's environment (repeatable)",
			&list[string]{&flags.Env, func(kv string) (string, error) { return kv, supervisor.CheckEnv(kv) }, func(kv string) string { return kv }},
			func(f *config.File) {
				for _, kv := range flags.Env {
					f.Env = setEnv(f.Env, kv)
				}
			}},
		{"user", "User", "run every child as USER[:GROUP] (names or ids), as systemd's User= and Group=; hitless keeps its privileges to bind and supervise",
			&value[*supervisor.User]{&flags.User, supervisor.LookupUser, (*supervisor.User).String, "string"},
			func(f *config.File) { f.User = flags.User }},
		{"output-prefix", "OutputPrefix", `prefix each line of child output with "[gen N pid P] "`,
			&value[bool]{&flags.OutputPrefix, strconv.ParseBool, strconv.FormatBool, "bool"},
			func(f *config.File) { f.OutputPrefix = flags.OutputPrefix }},
		{"backoff-min", "BackoffMin", "first delay before restarting a child that died",
			durationFlag(&flags.BackoffMin),
			func(f *config.File) { f.BackoffMin = flags.BackoffMin }},
		{"backoff-max", "BackoffMax", "longest delay between restarts",
			durationFlag(&flags.BackoffMax),
			func(f *config.File) { f.BackoffMax = flags.BackoffMax }},
		{"stable-after", "StableAfter", "a child that served this long resets the restart delay",
			durationFlag(&flags.StableAfter),
			func(f *config.File) { f.StableAfter = flags.StableAfter }},
		{"trial", "Trial", "after a reload, the new child serves beside the old one this long, and any failure rolls the reload back (0: none)",
			optionalDurationFlag(&flags.Trial),
			func(f *config.File) { f.Trial = flags.Trial }},
		{"watchdog", "Watchdog", "a ready child must send WATCHDOG=1 at least this often (WATCHDOG_USEC), or it is aborted and restarted (0: none)",
			optionalDurationFlag(&flags.Watchdog),
			func(f *config.File) { f.Watchdog = flags.Watchdog }},
		{"watchdog-grace", "WatchdogGrace", "time a child has to exit after the watchdog's SIGABRT before its process group gets SIGKILL",
			durationFlag(&flags.WatchdogGrace),
			func(f *config.File) { f.WatchdogGrace = flags.WatchdogGrace }},
		{"log-format", "", "hitless's own log format: text or json",
			&value[string]{&flags.Log.Format, config.ParseLogFormat, func(s string) string { return s }, "string"},
			func(f *config.File) { f.Log.Format = flags.Log.Format }},
		{"log-level", "", "debug, info, warn or error",
			&value[slog.Level]{&flags.Log.Level, config.ParseLogLevel, func(l slog.Level) string { return strings.ToLower(l.String()) }, "string"},
			func(f *config.File) { f.Log.Level = flags.Log.Level }},
		{"name", "", "service name, used in the default control socket path (default: the command's base name)",
			textFlag(&flags.Name, control.CheckName),
			func(f *config.File) { f.Name = flags.Name }},
		{"control", "", "control socket path for hitless reload/status/stop/promote/rollback/upgrade (default $HITLESS_CONTROL, else NAME.sock under $XDG_RUNTIME_DIR/hitless, /run/hitless for root, or $TMPDIR/hitless-UID)",
			textFlag(&flags.Control, nil),
			func(f *config.File) { f.Control = flags.Control }},
		{"pid-file", "", "write hitless's pid here (atomically); it never changes across reloads",
			textFlag(&flags.PIDFile, nil),
			func(f *config.File) { f.PIDFile = flags.PIDFile }},
		{"metrics", "", "serve Prometheus metrics on /metrics at this address: host:port, or a unix socket path (default: none)",
			&value[string]{&flags.Metrics, config.ParseMetrics, func(s string) string { return s }, "string"},
			func(f *config.File) { f.Metrics = flags.Metrics }},
		{"fdstore", "", "keep the sockets hitless binds in systemd's fd store (FileDescriptorStoreMax=); systemd 254 and later say so themselves ($FDSTORE)",
			&value[bool]{&flags.FDStore, strconv.ParseBool, strconv.FormatBool, "bool"},
			func(f *config.File) { f.FDStore = flags.FDStore }},
	}
}

// setEnv sets the variable of kv in env: in place if env has it, as a
// flag overrides the file's value, else at the end.
func setEnv(env []string, kv string) []string {
	key, _, _ := strings.Cut(kv, "=")
	for i, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

// configure reads the config file, lays the flags that were given over it
// in the order of the settings and the command (args) last, and validates
// the result. Its errors are usageError.
func (r *runFlags) configure(fs *pflag.FlagSet, args []string) (*config.File, error) {
	file := config.Default()
	if r.config != "" {
		var err error
		if r.configData == nil {
			if r.configData, err = config.Read(r.config); err != nil {
				return nil, usageError{err}
			}
		}
		if file, err = config.Parse(r.config, r.configData); err != nil {
			return nil, usageError{err}
		}
	}
	for _, s := range r.settings {
		if fs.Changed(s.flag) {
			s.lay(file)
		}
	}
	if len(args) > 0 {
		file.Command = args
	}
	file.Passed = r.passed
	if err := file.Validate(); err != nil {
		return nil, usageError{r.explain(err, fs, file)}
	}
	return file, nil
}

func run(fs *pflag.FlagSet, r *runFlags, args []string) error {
	// What this image is, for an upgrade in place: recorded before
	// anything changes the environment.
	self, err := upgrade.Open()
	if err != nil {
		return err
	}
	defer self.Close()
	st, err := upgrade.Inherited()
	if err != nil {
		return err
	}
	if st != nil {
		return r.resume(fs, args, self, st)
	}
	p, err := r.prepare(fs, args, self)
	if err != nil {
		return err
	}
	sup, err := supervisor.New(p.cfg)
	if err != nil {
		// A busy port or a bad address: nothing was started.
		return usageError{err}
	}
	// After New, so that a busy port is reported first; before Run, so
	// that no child starts if hitless cannot be controlled.
	ctl, err := control.Listen(p.ctlPath)
	if err != nil {
		sup.Close()
		return usageError{err}
	}
	msrv, err := p.listenMetrics(fs, r, sup)
	if err != nil {
		ctl.Close()
		sup.Close()
		return usageError{err}
	}
	return p.serve(sup, ctl, msrv, r)
}

// restoreFault, set at link time (-ldflags "-X main.restoreFault=why"),
// makes a new image fail to take over after an upgrade: the tests use it
// to check the rollback. Builds for use leave it empty.
var restoreFault string

// resume is run in the image an upgrade started: it takes over what the
// previous image handed over in st. If it cannot, it executes the
// previous image again (it never returns then), which takes it all back.
func (r *runFlags) resume(fs *pflag.FlagSet, args []string, self *upgrade.Self, st *upgrade.State) error {
	rollback := func(err error) error {
		fmt.Fprintf(os.Stderr, "hitless: the new image cannot take over (%v); running the previous one again\n", err)
		return fmt.Errorf("rollback failed; hitless cannot go on: %w", st.Rollback(self.Args, self.Env, err.Error()))
	}
	if restoreFault != "" {
		return rollback(fmt.Errorf("restore: injected failure: %s", restoreFault))
	}
	if err := r.takeSettings(st); err != nil {
		return rollback(err)
	}
	p, err := r.prepare(fs, args, self)
	if err != nil {
		return rollback(err)
	}
	sup, err := supervisor.Restore(p.cfg, st)
	if err != nil {
		return rollback(err)
	}
	sup.NoteUpgrade(r.settingsNote(p.cfg.Logger))
	ctl, err := control.Restore(st)
	if err != nil {
		return rollback(err)
	}
	msrv, err := p.restoreMetrics(fs, r, sup, st)
	if err != nil {
		return rollback(err)
	}
	st.Commit()
	return p.serve(sup, ctl, msrv, r)
}

// restoreMetrics takes back the metrics an earlier image carried (the
// listener, and the histograms' values), or binds them as at a first
// start if it carried none.
func (p *prepared) restoreMetrics(fs *pflag.FlagSet, r *runFlags, sup *supervisor.Supervisor, st *upgrade.State) (*metrics.Server, error) {
	if p.mtr == nil {
		return nil, nil
	}
	if err := p.mtr.Restore(st); err != nil {
		return nil, err
	}
	msrv, err := metrics.Restore(st, p.mtr.Handler(sup, p.cfg.Logger))
	if msrv != nil || err != nil {
		return msrv, err
	}
	return p.listenMetrics(fs, r, sup)
}

// prepared is "hitless run" configured, before anything is bound.
type prepared struct {
	file    *config.File
	cfg     supervisor.Config
	name    string
	ctlPath string
	mtr     *metrics.Metrics
}

func (r *runFlags) prepare(fs *pflag.FlagSet, args []string, self *upgrade.Self) (*prepared, error) {
	// Read (and unset, so no child inherits them) the sockets systemd
	// passed, first: the descriptors are ours from now on. After an
	// upgrade in place there are none: the sockets come in the state.
	passed, err := supervisor.PassedFromEnv()
	if err != nil {
		return nil, usageError{err}
	}
	r.passed = passed
	file, err := r.configure(fs, args)
	if err != nil {
		return nil, err
	}
	p := &prepared{file: file, cfg: file.Config}
	cfg := &p.cfg
	cfg.Self, cfg.Version = self, version()

	// The control socket: --control, else $HITLESS_CONTROL, else derived
	// from the service name (--name, else the command's base name).
	p.name = file.Name
	if p.name == "" {
		p.name = control.NameFromCommand(cfg.Command[0])
	}
	p.ctlPath = file.Control
	if p.ctlPath == "" {
		p.ctlPath = control.DefaultPath(p.name)
	}
	if err := control.CheckPath(p.ctlPath); err != nil {
		return nil, usagef("--control: %w", err)
	}
	// The log and the children's output share hitless's stdout and
	// stderr, whose lost lines one count holds (a reader that went away).
	cfg.Outputs = supervisor.NewOutputs(os.Stdout, os.Stderr)
	opts := &slog.HandlerOptions{Level: file.Log.Level}
	if file.Log.Format == config.LogJSON {
		cfg.Logger = slog.New(slog.NewJSONHandler(cfg.Outputs.Stderr, opts))
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(cfg.Outputs.Stderr, opts))
	}

	// Read (and unset, so no child inherits it) what systemd gave hitless.
	notifier, err := sdnotify.FromEnv()
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	if notifier != nil {
		// Only then: a nil *Notifier in the interface is not a nil
		// interface, and the supervisor would call it.
		cfg.Notifier = notifier
		if file.FDStore || notifier.FDStoreMax() > 0 {
			cfg.FDStore = notifier
		}
	} else if file.FDStore {
		cfg.Logger.Info("fd store: NOTIFY_SOCKET is not set, so there is none: sockets will not outlive hitless")
	}
	if passed.Ignored != "" {
		cfg.Logger.Info("socket activation", "ignored", passed.Ignored)
	}

	// Metrics only when asked: without --metrics nothing listens.
	if file.Metrics != "" {
		p.mtr = metrics.New(metrics.Options{DrainTimeout: cfg.DrainTimeout})
		cfg.Observer = p.mtr
	}
	return p, nil
}

// listenMetrics binds the metrics server, if asked for, before any child
// starts, as the sockets are: an address that cannot be bound is a
// start-up error.
func (p *prepared) listenMetrics(fs *pflag.FlagSet, r *runFlags, sup *supervisor.Supervisor) (*metrics.Server, error) {
	if p.mtr == nil {
		return nil, nil
	}
	msrv, err := metrics.Listen(p.file.Metrics, p.mtr.Handler(sup, p.cfg.Logger))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.origin(fs, p.file, "metrics"), err)
	}
	return msrv, nil
}

// serve runs sup until it stops, with the control socket and the metrics.
func (p *prepared) serve(sup *supervisor.Supervisor, ctl *control.Server, msrv *metrics.Server, r *runFlags) error {
	log := p.cfg.Logger
	ctl.Log = log
	// An upgrade in place carries the control socket and the requests
	// waiting on it, the settings and the metrics.
	sup.AddCarrier(ctl)
	p.carryAcross(sup, r)
	log.Info("control socket", "path", ctl.Path(), "name", p.name)
	go ctl.Serve(sup)
	if msrv != nil {
		sup.AddCarrier(msrv)
		log.Info("metrics", "addr", msrv.Addr(), "path", "/metrics")
		go msrv.Serve() // returns at Close
		// The metrics go on until Run has returned: a scrape during the
		// drain still sees the generations leave.
		defer msrv.Close()
	}
	// Deferred calls run in reverse: at exit the pid file goes, and the
	// control server closes last, for it answers a waiting "hitless
	// stop" only then: whoever runs hitless again next finds nothing of
	// this one left.
	defer ctl.Close()
	if path := p.file.PIDFile; path != "" {
		if err := pidfile.Write(path, os.Getpid()); err != nil {
			sup.Close()
			return fmt.Errorf("--pid-file: %w", err)
		}
		defer pidfile.Remove(path)
	}
	return sup.Run(context.Background())
}

// origin names where the value of a setting the supervisor does not
// check came from, for a message about it: the flag, if given, else the
// line of the config file.
func (r *runFlags) origin(fs *pflag.FlagSet, file *config.File, key string) string {
	flag := "--" + strings.ReplaceAll(key, "_", "-")
	if line := file.Line(key); line > 0 && !fs.Changed(flag[2:]) {
		return fmt.Sprintf("%s:%d: %s", file.Path, line, key)
	}
	return flag
}

// explain turns the problems Validate found into messages that name where
// each value came from: the flag that set it ("--drain-timeout: ..."), else
// the file's line ("app.yaml:7: drain_timeout: ..."), else, the value
// being a default, the flag that would change it.
func (r *runFlags) explain(err error, fs *pflag.FlagSet, file *config.File) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	out := make([]error, 0, len(errs))
	for _, err := range errs {
		var fe *config.Error
		var ce *supervisor.ConfigError
		if !errors.As(err, &fe) || !errors.As(err, &ce) {
			out = append(out, err)
			continue
		}
		switch ce.Field {
		case "Command":
			out = append(out, errors.New("no command: give it after --, e.g. hitless run --listen tcp://127.0.0.1:8080 -- ./server"))
			continue
		case "Listen":
			msg := "no sockets: give at least one --listen [NAME=]URL, e.g. --listen http=tcp://127.0.0.1:8080"
			if r.passed.Ignored != "" {
				msg += " (systemd's " + r.passed.Ignored + ")"
			}
			out = append(out, errors.New(msg))
			continue
		}
		field, index, indexed := strings.Cut(ce.Field, "[")
		i := slices.IndexFunc(r.settings, func(s setting) bool { return s.field == field })
		if i < 0 {
			out = append(out, err)
			continue
		}
		flag := "--" + r.settings[i].flag
		fromFlag := fs.Changed(r.settings[i].flag)
		if indexed {
			// An item of a repeatable flag: say which.
			n, _ := strconv.Atoi(strings.TrimSuffix(index, "]"))
			switch {
			case field == "Listen" && n < len(file.Listen):
				flag += " " + file.Listen[n].String()
			case field == "Env" && n < len(file.Env):
				flag += " " + file.Env[n]
				// --env adds to the file's variables.
				fromFlag = fromFlag && slices.Contains(r.flags.Env, file.Env[n])
			default:
				fromFlag = false
			}
		}
		if fromFlag || fe.Line == 0 && !indexed {
			out = append(out, fmt.Errorf("%s: %s", flag, ce.Msg))
		} else {
			out = append(out, err)
		}
	}
	return errors.Join(out...)
}
