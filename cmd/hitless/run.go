//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hitless/hitless/internal/config"
	"github.com/hitless/hitless/internal/control"
	"github.com/hitless/hitless/internal/metrics"
	"github.com/hitless/hitless/internal/pidfile"
	"github.com/hitless/hitless/internal/sdnotify"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/supervisor/sockets"
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
Beside the children, ps shows two helpers of hitless's own binary: its
watcher ("hitless __hitless_watch"), which ends the children if hitless dies,
and the standby ("hitless __hitless_exec"), the next child's process forked
ahead so that a reload only executes COMMAND (--no-standby: none).

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
	flags *config.File
	// passed is what systemd passed (LISTEN_FDS): with no --listen,
	// hitless takes all of it.
	passed sockets.Passed
	// configData is what the settings come from: the config file as read
	// at the first start, which upgrades carry (see carry.go).
	configData []byte
	// kept are the keys whose values running are not configData's, and
	// legacy is set in an image that a release which did not carry its
	// settings upgraded to, which listens on carried, and could not use
	// the config file if legacyErr says why (see carry.go).
	kept      []string
	legacy    bool
	carried   []sockets.ListenSpec
	legacyErr error
}

func newRunFlags(fl *pflag.FlagSet) *runFlags {
	r := &runFlags{flags: config.Default()}
	fl.StringVar(&r.config, "config", "", "YAML config file holding any of these settings; flags override it")
	for _, s := range config.Settings(r.flags) {
		if s.Flag == "" {
			continue
		}
		f := fl.VarPF(s.Value, s.Flag, "", s.Help)
		if s.Value.Type() == "bool" {
			f.NoOptDefVal = "true" // --output-prefix alone means true
		}
	}
	return r
}

// configure reads the config file, lays the flags that were given over
// it and the command (args) last, and validates the result. Its errors
// are usageError.
func (r *runFlags) configure(fs *pflag.FlagSet, args []string) (*config.File, error) {
	if r.legacy {
		return r.configureLegacy(fs, args)
	}
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
	file.Lay(r.flags, func(s config.Setting) bool { return s.Flag != "" && fs.Changed(s.Flag) })
	if len(args) > 0 {
		file.Command = args
	}
	file.Passed = r.passed
	if r.carried != nil && !fs.Changed("listen") {
		file.Listen = r.carried
	}
	if err := file.Validate(); err != nil {
		return nil, usageError{r.explain(err, fs, file)}
	}
	return file, nil
}

// configureLegacy is configure in an image that a release which did not
// carry its settings upgraded to: the sockets are those the state
// carries, whatever the file says now (its listen is left out); the rest
// is read from the file again. If the file cannot be used now, the
// command line and the defaults give the rest, and the verdict says why:
// a rollback would not help, for that release reads the file again too,
// and would fail the same way, again and again.
func (r *runFlags) configureLegacy(fs *pflag.FlagSet, args []string) (*config.File, error) {
	data, err := config.Read(r.config)
	if err == nil {
		data, err = config.Without(data, "listen")
	}
	if err == nil {
		r.legacy, r.configData = false, data
		var file *config.File
		if file, err = r.configure(fs, args); err == nil {
			r.legacy = true
			return file, nil
		}
	}
	r.legacy, r.legacyErr, r.configData = false, err, []byte{}
	defer func() { r.legacy = true }()
	return r.configure(fs, args)
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
	if slices.Contains(r.kept, "listen") {
		// From a release that did not carry its settings: the sockets
		// are the ones it held, whatever the settings say.
		carried, err := supervisor.CarriedListen(st)
		if err != nil {
			return rollback(err)
		}
		r.carried = carried
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
	fs      *pflag.FlagSet
}

func (r *runFlags) prepare(fs *pflag.FlagSet, args []string, self *upgrade.Self) (*prepared, error) {
	// Read (and unset, so no child inherits them) the sockets systemd
	// passed, first: the descriptors are ours from now on. After an
	// upgrade in place there are none: the sockets come in the state.
	passed, err := sockets.PassedFromEnv()
	if err != nil {
		return nil, usageError{err}
	}
	r.passed = passed
	file, err := r.configure(fs, args)
	if err != nil {
		return nil, err
	}
	p := &prepared{file: file, cfg: file.Config, fs: fs}
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

	// At rest, hitless returns what its last reload freed (its heap
	// pages) to the system: its memory stays that of a hitless that has
	// just started, however many reloads it has run.
	cfg.Idle = debug.FreeOSMemory

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
		return nil, fmt.Errorf("%s: %w", origin(fs, p.file, "metrics"), err)
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
	if path := p.file.PIDFile; path != "" && r.keepsPIDFile(p.fs, path) {
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
func origin(fs *pflag.FlagSet, file *config.File, key string) string {
	settings := config.Settings(file)
	flag := settings[slices.IndexFunc(settings, func(s config.Setting) bool { return s.Key == key })].Flag
	if line := file.Line(key); line > 0 && !fs.Changed(flag) {
		return fmt.Sprintf("%s:%d: %s", file.Path, line, key)
	}
	return "--" + flag
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
	out := make([]error, len(errs))
	for i, err := range errs {
		out[i] = r.where(err, fs, file)
	}
	return errors.Join(out...)
}

// where is explain for one problem.
func (r *runFlags) where(err error, fs *pflag.FlagSet, file *config.File) error {
	var fe *config.Error
	var ce *supervisor.ConfigError
	if !errors.As(err, &fe) || !errors.As(err, &ce) {
		return err
	}
	switch ce.Field {
	case "Command":
		return errors.New("no command: give it after --, e.g. hitless run --listen tcp://127.0.0.1:8080 -- ./server")
	case "Listen":
		msg := "no sockets: give at least one --listen [NAME=]URL, e.g. --listen http=tcp://127.0.0.1:8080"
		if r.passed.Ignored != "" {
			msg += " (systemd's " + r.passed.Ignored + ")"
		}
		return errors.New(msg)
	}
	s, i, ok := file.Lookup(ce.Field)
	if !ok || s.Flag == "" {
		return err
	}
	flag, fromFlag := "--"+s.Flag, fs.Changed(s.Flag)
	if i >= 0 {
		// An item of a repeatable flag: say which, and whether the flag
		// gave it (--env adds to the file's items).
		items := s.Value.Items()
		given, _, _ := r.flags.Lookup(ce.Field)
		if i < len(items) {
			flag += " " + items[i]
		}
		fromFlag = fromFlag && i < len(items) && slices.Contains(given.Value.Items(), items[i])
	}
	if fromFlag || fe.Line == 0 && i < 0 {
		return fmt.Errorf("%s: %s", flag, ce.Msg)
	}
	return err
}
