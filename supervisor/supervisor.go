package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/sdnotify"
)

// Defaults for the zero values of Config.
const (
	DefaultReadyTimeout = 60 * time.Second
	DefaultDrainTimeout = 30 * time.Second
	DefaultBackoffMin   = 100 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultStableAfter  = 10 * time.Second
)

// Config says what to run and how. The zero value of every field but
// Listen and Command means its default.
type Config struct {
	Listen  []ListenSpec
	Command []string // the program and its arguments
	Dir     string   // the child's working directory, resolved at each start
	Env     []string // KEY=VALUE added to the child's environment

	// ReadyDelay, if positive, declares a child ready once it has lived
	// this long, for programs that cannot send READY=1. It is the weaker
	// choice: a slow or half-started child gets traffic anyway.
	ReadyDelay   time.Duration
	ReadyTimeout time.Duration
	DrainSignal  syscall.Signal // default SIGTERM
	DrainTimeout time.Duration

	// A serving child that dies is restarted after BackoffMin, doubling
	// up to BackoffMax; a child that served StableAfter resets it.
	BackoffMin, BackoffMax, StableAfter time.Duration

	// OutputPrefix puts "[gen N pid P] " before each line the child
	// writes to stdout and stderr.
	OutputPrefix bool
	Stdout       *os.File // default os.Stdout
	Stderr       *os.File // default os.Stderr

	Logger   *slog.Logger
	Registry Registry // where sockets are kept; nil binds directly
	// ReleaseSockets, if set, is called when a stop begins, after hitless
	// closed its own copies of the sockets: it must close the copies the
	// Registry keeps (tableflip's Upgrader.Stop does).
	ReleaseSockets func()

	// Notifier reports to the service manager; nil for none.
	Notifier *sdnotify.Notifier

	// ShimPath is the binary that runs RunShim when its first argument
	// is ShimArg; default /proc/self/exe.
	ShimPath string
}

// Supervisor holds the sockets and runs generations of the child. Create
// it with New, which binds the sockets, then call Run once.
type Supervisor struct {
	cfg     Config
	log     *slog.Logger
	sockets []*socket
	rundir  string // private notify sockets live here
	reaper  *reaper

	events chan event
	reqs   chan request
	done   chan struct{} // closed when the loop has returned
	bg     sync.WaitGroup

	// Owned by the loop.
	nextID     int
	gens       []*generation // every generation not yet reaped
	serving    *generation
	starting   *generation
	pending    bool         // one more reload queued behind starting
	waiting    []chan error // callers of the reload in flight
	queued     []chan error // callers of the queued reload
	stopping   bool
	stopWait   []chan error
	everServed bool
	restart    *time.Timer
	backoff    time.Duration
	exitCode   int
	initErr    error
	lingering  []*generation // reaped, but a descendant still holds its output

	stats Stats
}

// Stats counts what happened to reloads.
type Stats struct {
	ReloadsOK     int       `json:"reloads_ok"`
	ReloadsFailed int       `json:"reloads_failed"`
	Restarts      int       `json:"restarts"`
	LastFailure   string    `json:"last_failure,omitempty"`
	LastFailureAt time.Time `json:"last_failure_at,omitzero"`
}

// ReloadError says why a new generation did not take over. The serving
// generation, if any, is untouched.
type ReloadError struct {
	Generation int
	PID        int      // 0 if it never started
	Reason     string   // exit status, signal, timeout or start error
	Stderr     []string // the last lines it wrote to stderr
}

func (e *ReloadError) Error() string {
	s := fmt.Sprintf("generation %d", e.Generation)
	if e.PID > 0 {
		s += fmt.Sprintf(" (pid %d)", e.PID)
	}
	s += " failed: " + e.Reason
	if len(e.Stderr) > 0 {
		s += ": last stderr: " + e.Stderr[len(e.Stderr)-1]
	}
	return s
}

// ExitError is returned by Run when the last serving child exited with a
// non-zero status; Code is its shell-style exit code.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("child exited with code %d", e.Code) }

// ErrStopping is returned to reloads asked for or queued after a stop.
var ErrStopping = errors.New("hitless is stopping")

// startKind says why a generation was started, which decides what its
// success or failure means and what the service manager is told.
type startKind int

const (
	kindInitial startKind = iota // the first child
	kindReload                   // SIGHUP, or Reload
	kindRestart                  // after the serving child died
)

type evKind int

const (
	evExit evKind = iota
	evReady
	evReadyTimeout
	evDrainTimeout
	evRestart
)

type event struct {
	kind   evKind
	gen    *generation
	ws     unix.WaitStatus
	copied bool // evExit: the output copiers have finished
}

type reqKind int

const (
	reqReload reqKind = iota
	reqStop
	reqStatus
)

type request struct {
	kind   reqKind
	reply  chan error
	status chan Status
}

// New checks cfg and binds every socket. Nothing is started yet. Errors
// name the offending listener; on error nothing stays bound.
func New(cfg Config) (*Supervisor, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("no command to run: give it after --")
	}
	if len(cfg.Listen) == 0 {
		return nil, errors.New("no sockets: give at least one --listen")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.ReadyTimeout, DefaultReadyTimeout)
	def(&cfg.DrainTimeout, DefaultDrainTimeout)
	def(&cfg.BackoffMin, DefaultBackoffMin)
	def(&cfg.BackoffMax, DefaultBackoffMax)
	def(&cfg.StableAfter, DefaultStableAfter)
	if cfg.BackoffMax < cfg.BackoffMin {
		return nil, fmt.Errorf("backoff max %v is below backoff min %v", cfg.BackoffMax, cfg.BackoffMin)
	}
	if cfg.DrainSignal == 0 {
		cfg.DrainSignal = syscall.SIGTERM
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(cfg.Stderr, nil))
	}
	if cfg.Registry == nil {
		cfg.Registry = directRegistry{}
	}
	if cfg.ShimPath == "" {
		cfg.ShimPath = "/proc/self/exe"
	}
	names := make(map[string]string)
	for _, l := range cfg.Listen {
		if prev, ok := names[l.Name]; ok {
			return nil, fmt.Errorf("--listen %s: name %q is already used by %s: give each a NAME=", l.Spec, l.Name, prev)
		}
		names[l.Name] = l.Spec
	}
	s := &Supervisor{
		cfg:     cfg,
		log:     cfg.Logger,
		events:  make(chan event),
		reqs:    make(chan request),
		done:    make(chan struct{}),
		backoff: cfg.BackoffMin,
	}
	for _, l := range cfg.Listen {
		sock, err := bind(cfg.Registry, l)
		if err != nil {
			s.closeSockets()
			return nil, fmt.Errorf("--listen %s: %w", l.Spec, err)
		}
		s.sockets = append(s.sockets, sock)
	}
	return s, nil
}

func (s *Supervisor) closeSockets() {
	for _, sock := range s.sockets {
		sock.close()
	}
	s.sockets = nil
}

// Close releases the sockets of a Supervisor whose Run will not be
// called, and removes the unix socket files New created. Run does this
// itself when it returns; do not call Close while Run runs.
func (s *Supervisor) Close() { s.closeSockets() }

// Addrs returns the bound address of each socket, in --listen order.
func (s *Supervisor) Addrs() []string {
	a := make([]string, len(s.sockets))
	for i, sock := range s.sockets {
		a[i] = sock.addr
	}
	return a
}

// Run starts the first generation and supervises until ctx is done, a
// stop is asked for, or SIGTERM or SIGINT arrives; then it drains every
// child and closes the sockets. It returns an error if the first child
// never became ready, and *ExitError if the last serving child exited
// with a non-zero status.
//
// Run handles SIGHUP (reload), SIGTERM and SIGINT (graceful stop; a
// second SIGINT kills at once), and forwards SIGUSR1 and SIGUSR2 to the
// serving child's process group.
func (s *Supervisor) Run(ctx context.Context) error {
	defer s.closeSockets()
	// Before anything can be announced: a SIGHUP sent as soon as hitless
	// says it listens must reload, not kill it.
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigc)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		s.log.Warn("cannot become a subreaper; orphans of children will not be reaped", "err", err)
	}
	dir, err := os.MkdirTemp("", "hitless-")
	if err != nil {
		return fmt.Errorf("create notify socket directory: %w", err)
	}
	s.rundir = dir
	defer os.RemoveAll(dir)

	// Descriptors hitless inherited without close-on-exec (from a shell,
	// a test runner, a leaky parent) must not reach the children, which
	// get exactly stdio and the sockets.
	if err := closeOnExecFrom(3); err != nil {
		return fmt.Errorf("mark descriptors close-on-exec: %w", err)
	}
	s.reaper = newReaper()
	defer s.reaper.stop()

	s.log.Info("listening", "sockets", strings.Join(s.Addrs(), " "), "command", strings.Join(s.cfg.Command, " "))
	s.loop(ctx, sigc)
	close(s.done)
	s.bg.Wait()
	for _, g := range s.lingering {
		for _, p := range g.pipes {
			p.Close()
		}
		g.outw.Wait()
	}
	if s.initErr != nil {
		return s.initErr
	}
	if s.exitCode != 0 {
		return &ExitError{Code: s.exitCode}
	}
	return nil
}

func (s *Supervisor) loop(ctx context.Context, sigc <-chan os.Signal) {
	s.startReload(kindInitial)
	var watchdog <-chan time.Time
	if d := s.cfg.Notifier.WatchdogInterval(); d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		watchdog = t.C
	}
	ctxDone := ctx.Done()
	for !s.stopping || len(s.gens) > 0 {
		select {
		case sig := <-sigc:
			s.handleSignal(sig.(syscall.Signal))
		case <-ctxDone:
			ctxDone = nil
			s.stop()
		case ev := <-s.events:
			s.handleEvent(ev)
		case <-watchdog:
			// Only a service that serves is alive to the service manager.
			if s.serving != nil {
				s.notify(s.cfg.Notifier.Watchdog())
			}
		case req := <-s.reqs:
			switch req.kind {
			case reqReload:
				s.reload(req.reply)
			case reqStop:
				s.stopWait = append(s.stopWait, req.reply)
				s.stop()
			case reqStatus:
				req.status <- s.snapshot()
			}
		}
	}
	if s.restart != nil {
		s.restart.Stop()
	}
	for _, c := range s.stopWait {
		c <- nil
	}
}

func (s *Supervisor) handleSignal(sig syscall.Signal) {
	switch sig {
	case syscall.SIGHUP:
		s.log.Info("SIGHUP: reload")
		s.reload(nil)
	case syscall.SIGTERM, syscall.SIGINT:
		if sig == syscall.SIGINT && s.stopping {
			s.log.Warn("second SIGINT: killing every child now")
			for _, g := range s.gens {
				g.signal(syscall.SIGKILL)
			}
			return
		}
		s.log.Info("stop", "signal", unix.SignalName(sig))
		s.stop()
	case syscall.SIGUSR1, syscall.SIGUSR2:
		if s.serving != nil {
			s.log.Info("forwarding signal", "signal", unix.SignalName(sig), "generation", s.serving.id, "pid", s.serving.pid)
			s.serving.signal(sig)
		}
	}
}

// reload starts a new generation now, or queues one behind the one in
// flight. Requests that arrive while one is queued join it: a burst of
// reloads ends in at most two starts, never in aborting the one running.
func (s *Supervisor) reload(reply chan error) {
	if s.stopping {
		if reply != nil {
			reply <- ErrStopping
		}
		return
	}
	if s.starting != nil {
		s.pending = true
		if reply != nil {
			s.queued = append(s.queued, reply)
		}
		return
	}
	if reply != nil {
		s.waiting = append(s.waiting, reply)
	}
	if s.restart != nil {
		// An operator's reload during a crash-restart backoff runs now.
		s.restart.Stop()
		s.restart = nil
	}
	s.startReload(kindReload)
}

// startReload starts a generation; a start error fails the reload at once.
func (s *Supervisor) startReload(kind startKind) {
	for {
		if kind == kindReload {
			s.notify(s.cfg.Notifier.Reloading())
		}
		g, err := s.start(kind)
		if err == nil {
			s.starting = g
			return
		}
		s.failed(g, err.Error())
		if !s.takeQueued() {
			if s.serving == nil && !s.stopping {
				s.scheduleRestart()
			}
			return
		}
		kind = kindReload
	}
}

// takeQueued moves the queued reload's callers to the front; false when
// none is queued.
func (s *Supervisor) takeQueued() bool {
	if !s.pending || s.stopping {
		return false
	}
	s.pending = false
	s.waiting, s.queued = s.queued, nil
	return true
}

func (s *Supervisor) handleEvent(ev event) {
	g := ev.gen
	switch ev.kind {
	case evReady:
		if g == s.starting {
			s.promote(g)
		}
	case evReadyTimeout:
		if g == s.starting {
			s.failed(g, fmt.Sprintf("not ready within %v", s.cfg.ReadyTimeout))
			s.afterFailure()
		}
	case evDrainTimeout:
		if g.state == Draining || g.state == Failed {
			s.log.Warn("drain timeout: killing process group", "generation", g.id, "pid", g.pid, "timeout", s.cfg.DrainTimeout)
			g.signal(syscall.SIGKILL)
		}
	case evRestart:
		s.restart = nil
		if !s.stopping && s.serving == nil && s.starting == nil {
			s.stats.Restarts++
			s.startReload(kindRestart)
		}
	case evExit:
		s.exit(g, ev.ws, ev.copied)
	}
}

// promote makes g the serving generation and drains the one before it.
func (s *Supervisor) promote(g *generation) {
	g.readyAt = time.Now()
	g.stopTimers()
	old := s.serving
	g.state, s.serving, s.starting = Serving, g, nil
	took := g.readyAt.Sub(g.started).Round(time.Millisecond)
	s.everServed = true
	s.log.Info("serving", "generation", g.id, "pid", g.pid, "ready_after", took)
	switch g.kind {
	case kindInitial:
		s.notify(s.cfg.Notifier.Ready(fmt.Sprintf("serving: generation %d (pid %d)", g.id, g.pid)))
	case kindReload:
		s.stats.ReloadsOK++
		s.notify(s.cfg.Notifier.Ready(fmt.Sprintf("reload succeeded: generation %d (pid %d) serving", g.id, g.pid)))
	case kindRestart:
		s.notify(s.cfg.Notifier.Status(fmt.Sprintf("restarted: generation %d (pid %d) serving", g.id, g.pid)))
	}
	if old != nil {
		s.drain(old)
	}
	for _, c := range s.waiting {
		c <- nil
	}
	s.waiting = nil
	if s.takeQueued() {
		s.startReload(kindReload)
	}
}

func (s *Supervisor) drain(g *generation) {
	g.state, g.drainAt = Draining, time.Now()
	g.stopTimers()
	s.log.Info("draining", "generation", g.id, "pid", g.pid, "signal", unix.SignalName(s.cfg.DrainSignal), "timeout", s.cfg.DrainTimeout)
	if err := g.signal(s.cfg.DrainSignal); err != nil {
		s.log.Error("signal", "generation", g.id, "pid", g.pid, "err", err)
	}
	g.timer = time.AfterFunc(s.cfg.DrainTimeout, func() { s.post(event{kind: evDrainTimeout, gen: g}) })
}

// failed records that g did not take over and stops what is left of it.
func (s *Supervisor) failed(g *generation, reason string) {
	err := &ReloadError{Generation: g.id, PID: g.pid, Reason: reason}
	if g.stderr != nil {
		err.Stderr = g.stderr.Lines(5)
	}
	if g.pid > 0 && !g.reaped && g.state != Failed {
		// A child that is not ready may still have accepted connections
		// from the shared queue: drain it like an old generation, so they
		// are answered, and kill its group at the drain deadline.
		g.state, g.drainAt = Failed, time.Now()
		g.stopTimers()
		g.signal(s.cfg.DrainSignal)
		g.timer = time.AfterFunc(s.cfg.DrainTimeout, func() { s.post(event{kind: evDrainTimeout, gen: g}) })
	}
	if s.starting == g {
		s.starting = nil
	}
	s.stats.ReloadsFailed++
	s.stats.LastFailure, s.stats.LastFailureAt = err.Error(), time.Now()
	msg := map[startKind]string{kindInitial: "start failed", kindReload: "reload failed", kindRestart: "restart failed"}[g.kind]
	s.log.Error(msg, "generation", g.id, "pid", g.pid, "reason", reason, "stderr", strings.Join(err.Stderr, " | "))
	still := "nothing serving"
	if s.serving != nil {
		still = fmt.Sprintf("generation %d (pid %d) still serving", s.serving.id, s.serving.pid)
	}
	switch g.kind {
	case kindReload:
		// systemd has no "reload failed" message: READY=1 ends the
		// reload job, and STATUS= says how it went.
		s.notify(s.cfg.Notifier.Ready(fmt.Sprintf("reload failed: %s; %s", err, still)))
	case kindRestart:
		s.notify(s.cfg.Notifier.Status(fmt.Sprintf("restart failed: %s", err)))
	}
	for _, c := range s.waiting {
		c <- err
	}
	s.waiting = nil
	if !s.everServed && !s.stopping && s.serving == nil && s.initErr == nil {
		// The first child goes through the same gate; failing it ends hitless.
		s.initErr = fmt.Errorf("first child: %w", err)
		s.stopping = true
		s.pending = false
		for _, c := range s.queued {
			c <- ErrStopping
		}
		s.queued = nil
	}
}

// afterFailure starts what must follow a failed start: the queued reload,
// or a restart if nothing serves.
func (s *Supervisor) afterFailure() {
	if s.takeQueued() {
		s.startReload(kindReload)
		return
	}
	if s.serving == nil && s.starting == nil && !s.stopping {
		s.scheduleRestart()
	}
}

func (s *Supervisor) scheduleRestart() {
	d := s.backoff
	s.backoff = min(2*s.backoff, s.cfg.BackoffMax)
	s.log.Warn("no serving child: restarting", "in", d)
	s.restart = time.AfterFunc(d, func() { s.post(event{kind: evRestart}) })
}

func (s *Supervisor) exit(g *generation, ws unix.WaitStatus, copied bool) {
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
	g.reaped = true
	g.stopTimers()
	g.notify.Close()
	if !copied {
		s.lingering = append(s.lingering, g)
	}
	reason := exitReason(ws)
	switch {
	case g == s.starting && s.stopping:
		s.starting = nil
		s.log.Info("stopped before ready", "generation", g.id, "pid", g.pid, "status", reason)
	case g == s.starting:
		s.failed(g, "exited before ready: "+reason)
		s.afterFailure()
	case g == s.serving:
		s.serving = nil
		s.exitCode = exitCode(ws)
		if s.stopping {
			s.log.Info("stopped", "generation", g.id, "pid", g.pid, "status", reason, "took", time.Since(g.drainAt).Round(time.Millisecond))
			return
		}
		s.log.Error("serving child died", "generation", g.id, "pid", g.pid, "status", reason, "stderr", strings.Join(g.stderr.Lines(3), " | "))
		if time.Since(g.readyAt) >= s.cfg.StableAfter {
			s.backoff = s.cfg.BackoffMin
		}
		if s.starting == nil {
			s.scheduleRestart()
		}
	case g.state == Draining:
		s.log.Info("drained", "generation", g.id, "pid", g.pid, "status", reason, "took", time.Since(g.drainAt).Round(time.Millisecond))
	case g.state == Failed && !g.drainAt.IsZero():
		s.log.Info("failed generation drained", "generation", g.id, "pid", g.pid, "status", reason, "took", time.Since(g.drainAt).Round(time.Millisecond))
	default:
		s.log.Debug("reaped", "generation", g.id, "pid", g.pid, "status", reason)
	}
}

// stop drains every generation; the loop ends when all are reaped.
func (s *Supervisor) stop() {
	if s.stopping && s.initErr == nil {
		return
	}
	s.stopping = true
	s.notify(s.cfg.Notifier.Stopping())
	if s.restart != nil {
		s.restart.Stop()
		s.restart = nil
	}
	s.pending = false
	for _, c := range append(s.waiting, s.queued...) {
		c <- ErrStopping
	}
	s.waiting, s.queued = nil, nil
	for _, g := range s.gens {
		if g.state == Starting || g.state == Serving || g.state == Ready {
			s.drain(g)
		}
	}
	// Let go of hitless's own copies of the sockets: they close once the
	// children have closed theirs, so a client that connects after that
	// is refused at once rather than queued behind a process that will
	// never accept, and reset when hitless exits.
	s.closeSockets()
	if s.cfg.ReleaseSockets != nil {
		s.cfg.ReleaseSockets()
	}
}

// notify logs a failure to reach the service manager; it is not fatal.
func (s *Supervisor) notify(err error) {
	if err != nil {
		s.log.Warn("notify service manager", "err", err)
	}
}

// post hands an event to the loop, or drops it once the loop is gone.
func (s *Supervisor) post(ev event) {
	select {
	case s.events <- ev:
	case <-s.done:
	}
}
