package childproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/handover"
)

// Defaults for Options.
const (
	// DefaultDrainTimeout is below hitless's default drain timeout (30s),
	// after which the supervisor kills the process group: the margin leaves
	// time for closers and for main's deferred functions.
	DefaultDrainTimeout = 25 * time.Second
	// DefaultLameDuck bounds the lame-duck window. It usually ends much
	// sooner: as soon as no connection is new or active and idle ones have
	// been quiet for LameDuckQuiet.
	DefaultLameDuck = 5 * time.Second
	// DefaultLameDuckQuiet is how long a keep-alive connection must have
	// been idle before the drain closes it. A client in a request loop
	// sends its next request within microseconds of a response; one that
	// has been silent this long is, most likely, not about to.
	DefaultLameDuckQuiet = 250 * time.Millisecond
	// closerGrace is the least time closers get, even after the deadline
	// passed or a second signal: a database must still be closed (and its
	// WAL checkpointed) and logs flushed.
	closerGrace = 2 * time.Second
)

var (
	// ErrClosed is returned by Go once the drain has stopped accepting
	// background tasks.
	ErrClosed = errors.New("lifecycle closed to new tasks")
	// ErrDrainIncomplete is wrapped by Run's error when a second signal or
	// the deadline cut the drain short.
	ErrDrainIncomplete = errors.New("childproc: drain incomplete")
	// ErrDrainDeadline is the cause of request contexts cancelled because
	// the drain's deadline is near (see Options.RequestCancelMargin).
	ErrDrainDeadline = errors.New("childproc: drain deadline is near")
)

// Options configure a Lifecycle. The zero value is ready to use.
type Options struct {
	// DrainTimeout is the overall deadline of the drain, from the signal to
	// Run's return. Default DefaultDrainTimeout (25s). Keep it below the
	// supervisor's own kill deadline.
	DrainTimeout time.Duration
	// Signals start the drain; a second one cuts it short. Default SIGTERM
	// and SIGINT. einhorn workers use SIGUSR2.
	Signals []os.Signal
	// LameDuck is the longest the lame-duck phase may last (see Run).
	// Zero means DefaultLameDuck; a negative value skips the phase, which
	// only makes sense to measure what it buys.
	LameDuck time.Duration
	// LameDuckQuiet: during the lame duck, an idle keep-alive connection
	// is closed only once it has been idle this long. Default
	// DefaultLameDuckQuiet; negative means zero.
	LameDuckQuiet time.Duration
	// RequestCancelMargin: request contexts are cancelled this long before
	// the drain's deadline. Default DrainTimeout/10, between 100ms and 3s.
	RequestCancelMargin time.Duration
	// ReadyStatus is sent as STATUS= with READY=1.
	ReadyStatus string
	// Healthy, when set, is asked before each watchdog ping whether the
	// process still works; while it returns an error no ping is sent, so
	// that the supervisor, once the watchdog timeout passes, deals with a
	// process that runs but no longer serves (systemd aborts it and
	// restarts the service). Nil means always healthy.
	//
	// The pings: when WATCHDOG_USEC is set, and WATCHDOG_PID is unset or
	// names this process, Run sends WATCHDOG=1 to NOTIFY_SOCKET every half
	// WATCHDOG_USEC (see WatchdogInterval), from READY=1 until the drain
	// starts, when the supervisor stops expecting them. Healthy is called
	// from one goroutine, never concurrently with itself, with a context
	// that ends at the next ping or when the drain starts: return by then,
	// since a late answer is a missed ping. Each change, from healthy to
	// failing and back, is logged once.
	Healthy func(ctx context.Context) error
	// Context, when done, starts the drain as a signal would. It is not
	// the parent of Lifecycle.Context: that one is cancelled only at the
	// right step of the drain.
	Context context.Context
	// Logger receives one record per drain phase. Default slog.Default().
	Logger *slog.Logger
	// DisableHandOver turns the hand-over of connections off (see the
	// package doc, "Handing connections over"): the drain then ends
	// every keep-alive connection itself, as in releases before it, and
	// this generation adopts nothing from the one before.
	DisableHandOver bool
	// AdoptTimeout is how long a connection handed over under a name
	// waits for Adopter.Accept before it is closed. Default
	// DefaultAdoptTimeout (5s).
	AdoptTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if len(o.Signals) == 0 {
		o.Signals = []os.Signal{syscall.SIGTERM, os.Interrupt}
	}
	if o.LameDuck == 0 {
		o.LameDuck = DefaultLameDuck
	}
	if o.AdoptTimeout <= 0 {
		o.AdoptTimeout = DefaultAdoptTimeout
	}
	if o.LameDuckQuiet == 0 {
		o.LameDuckQuiet = DefaultLameDuckQuiet
	} else if o.LameDuckQuiet < 0 {
		o.LameDuckQuiet = 0
	}
	if o.RequestCancelMargin <= 0 {
		o.RequestCancelMargin = min(max(o.DrainTimeout/10, 100*time.Millisecond), 3*time.Second)
	}
	if o.RequestCancelMargin >= o.DrainTimeout {
		o.RequestCancelMargin = o.DrainTimeout / 2
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Lifecycle owns a server process's life: its servers, its background
// tasks and its closers. Create it with New, register everything, then
// call Run from main and return what it returns.
type Lifecycle struct {
	opts Options
	log  *slog.Logger

	ctx    context.Context // root: background tasks; cancelled at drain step 4
	cancel context.CancelCauseFunc

	reqCtx    context.Context // base of every request context
	reqCancel context.CancelCauseFunc

	stopOnce sync.Once
	stopCh   chan struct{} // closed by Stop
	draining chan struct{} // closed when the drain begins

	tasks taskGroup

	mu            sync.Mutex
	state         lcState
	servers       []*server
	closers       []closer
	closersCalled bool
	failures      chan error // a server that stopped on its own

	// The hand-over (handover.go): ho is the channel to hitless, nil when
	// there is none; adopters, by name; closedIdle counts connections
	// the drain closed while idle, for the report to hitless.
	ho          *handoverClient
	lameDuckSet bool // Options.LameDuck was given, not defaulted
	adopters    map[string]*Adopter
	closedIdle  atomic.Int64
}

type lcState int

const (
	stateNew lcState = iota
	stateRunning
	stateDraining
	stateDone
)

type closer struct {
	name string
	fn   func(context.Context) error
}

// server is one thing Run serves: an http.Server (http != nil) or a generic
// serve/stop pair.
type server struct {
	name  string
	http  *httpServer
	serve func() error
	stop  func(context.Context) error

	stopping bool          // guarded by Lifecycle.mu: an error from serve is expected
	done     chan struct{} // closed when serve returned
	stopDone chan struct{} // closed when stop returned (generic servers)
	stopErr  error
	accepts  *acceptTracker // ServeListener's: closed at step 1, before stop
}

// New returns a Lifecycle. Its Context is live at once, so background
// tasks may start before Run.
func New(opts Options) *Lifecycle {
	lameDuckSet := opts.LameDuck != 0
	opts = opts.withDefaults()
	l := &Lifecycle{
		opts:        opts,
		log:         opts.Logger,
		stopCh:      make(chan struct{}),
		draining:    make(chan struct{}),
		failures:    make(chan error, 1),
		lameDuckSet: lameDuckSet,
		adopters:    make(map[string]*Adopter),
	}
	if opts.DisableHandOver {
		os.Unsetenv(handover.EnvVar)
	} else {
		l.ho = handoverFromEnv(l.log)
	}
	values := context.WithoutCancel(opts.Context)
	l.ctx, l.cancel = context.WithCancelCause(values)
	l.reqCtx, l.reqCancel = context.WithCancelCause(values)
	return l
}

// Context is the root context for background work. It is cancelled at
// step 4 of the drain, after every request has been answered, so a task
// that serves requests (a queue writer) keeps working while they finish.
func (l *Lifecycle) Context() context.Context { return l.ctx }

// Draining returns a channel closed when the drain begins: a health check
// can report it, a long poll can answer early.
func (l *Lifecycle) Draining() <-chan struct{} { return l.draining }

// Stop starts the drain, as a signal would. It does not wait; Run returns
// when the drain is over.
func (l *Lifecycle) Stop() { l.stopOnce.Do(func() { close(l.stopCh) }) }

// ServeHTTP serves srv on ln from Run until the drain. It takes srv over:
// it wraps srv.Handler (nil means http.DefaultServeMux), srv.ConnState,
// srv.ConnContext and srv.BaseContext, chaining to what was set, so call
// it before touching srv from other goroutines. srv serves TLS when
// srv.TLSConfig has certificates. Hijacked connections (WebSockets) are
// waited for as long as their handler runs; tell them to leave with
// srv.RegisterOnShutdown.
func (l *Lifecycle) ServeHTTP(srv *http.Server, ln net.Listener) {
	h := newHTTPServer(srv, ln, l.reqCtx, l.ho, &l.closedIdle)
	l.add(&server{name: h.name(), http: h, serve: h.serve})
	if h.hl != nil {
		l.mu.Lock()
		announce := l.state == stateRunning
		l.mu.Unlock()
		if announce {
			l.ho.hello(l.kinds())
		}
	}
}

// Serve runs serve until the drain calls stop. serve must block while it
// serves and return once stop was called; stop must stop accepting at once
// and return when what is in flight finished, or when ctx (the drain's
// deadline) is done, forcing the rest. stop runs during steps 1 to 3 of
// the drain, alongside the HTTP servers.
//
// A server that accepts on a net.Listener, gRPC's among them, is better
// served by ServeListener, which closes the listener first and calls stop
// only once the server holds every connection it accepted.
func (l *Lifecycle) Serve(name string, serve func() error, stop func(ctx context.Context) error) {
	l.add(&server{name: name, serve: serve, stop: stop})
}

func (l *Lifecycle) add(s *server) {
	s.done = make(chan struct{})
	s.stopDone = make(chan struct{})
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.state {
	case stateNew:
		l.servers = append(l.servers, s)
	case stateRunning:
		l.servers = append(l.servers, s)
		l.startLocked(s)
	default:
		// Too late to serve: the drain already closed the listeners it
		// knows of. Close this one too rather than leave it accepting.
		l.log.Error("childproc: server added during the drain; not serving it", "server", s.name)
		if s.http != nil {
			s.http.ln.Close()
		}
		if s.accepts != nil {
			s.accepts.Close()
		}
		close(s.done)
		close(s.stopDone)
	}
}

func (l *Lifecycle) startLocked(s *server) {
	go func() {
		defer close(s.done)
		err := s.serve()
		l.mu.Lock()
		expected := s.stopping
		l.mu.Unlock()
		if expected {
			return
		}
		if err == nil {
			err = errors.New("stopped serving on its own")
		}
		select {
		case l.failures <- fmt.Errorf("childproc: %s: %w", s.name, err):
		default: // one failure is enough to start the drain
			l.log.Error("childproc: server failed", "server", s.name, "err", err)
		}
	}()
}

// Go runs fn in a goroutine that the drain waits for at step 4, after
// cancelling ctx (Context()). Request handlers may start tasks while the
// process drains; once step 4 began, Go returns an error wrapping
// ErrClosed and does not run fn, so the caller can do the work inline or
// report it, instead of it being lost.
func (l *Lifecycle) Go(name string, fn func(ctx context.Context)) error {
	t, err := l.tasks.add(name)
	if err != nil {
		return err
	}
	go func() {
		defer l.tasks.done(t)
		fn(l.ctx)
	}()
	return nil
}

// AddCloser registers fn to run at step 5 of the drain. Closers run one at
// a time, in reverse order of registration (register the database before
// the queue client that writes to it), each with a context bounded by the
// drain's deadline (but at least a short grace period). A failing closer is
// logged and reported by Run; the others still run.
func (l *Lifecycle) AddCloser(name string, fn func(ctx context.Context) error) {
	l.mu.Lock()
	if !l.closersCalled {
		l.closers = append(l.closers, closer{name, fn})
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.log.Warn("childproc: closer added after closers ran; running it now", "closer", name)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), closerGrace)
	defer cancel()
	if err := fn(ctx); err != nil {
		l.log.Error("childproc: closer failed", "closer", name, "err", err)
	}
}

// Run starts the servers, sends READY=1 (see Ready), pings the watchdog if
// the supervisor set one (see Options.Healthy), and waits for one of the
// signals, Stop, Options.Context, or a server that stops on its own.
// Then it drains, in this order, under one deadline (Options.DrainTimeout):
//
//  1. Stop accepting: close this process's copy of each listener (close,
//     never shutdown(2), which would stop the shared socket for the next
//     generation too) and wait for each Serve to return, so every accepted
//     connection is known. Generic servers' stop functions start here.
//  2. Lame duck: keep serving existing connections, every HTTP/1 response
//     with "Connection: close", until no connection is new or active and
//     idle ones have been quiet for Options.LameDuckQuiet (at most
//     Options.LameDuck). Keep-alive clients leave after an answer instead
//     of sending into a connection that is about to close. HTTP/2
//     connections (known from their first request) are not waited for:
//     HTTP/2 has no "Connection: close", and a busy client keeps its
//     connection active for good. When hitless names a generation that
//     adopts them, connections are handed over instead, each at its next
//     request boundary, and those that cannot move are served and closed
//     after a response, until the deadline (see the package doc,
//     "Handing connections over").
//  3. http.Server.Shutdown for what is left: idle HTTP/1 connections are
//     closed, HTTP/2 ones get GOAWAY and finish their streams in flight.
//     Wait for handlers of hijacked connections, and for generic servers
//     to stop.
//  4. Cancel Context() and wait for every task started with Go, including
//     those handlers started during steps 1-3. Go fails from here on.
//  5. Run the closers in reverse order of registration.
//  6. Return, so that main's deferred functions run.
//
// Why this order: net/http's Shutdown drops the request of a connection it
// accepted but had not read yet (conn.serve returns without a response
// once shutting down), so Shutdown must come only after every accepted
// connection was served.
//
// Request contexts are cancelled Options.RequestCancelMargin before the
// deadline. A second signal, or the deadline, cuts the drain short: the
// remaining steps do not wait (closers still run, briefly), and the error
// (wrapping ErrDrainIncomplete) names what was still running.
//
// Run returns nil after a clean drain; otherwise the errors of servers
// that failed, of closers, and of an incomplete drain, joined.
func (l *Lifecycle) Run() error {
	l.mu.Lock()
	if l.state != stateNew {
		l.mu.Unlock()
		return errors.New("childproc: Run called twice")
	}
	// Handle the signals before telling anyone we are ready: the
	// supervisor may send the next one at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, l.opts.Signals...)
	defer signal.Stop(sigs)
	l.state = stateRunning
	for _, s := range l.servers {
		l.startLocked(s)
	}
	n := len(l.servers)
	l.mu.Unlock()
	pingEvery := l.readWatchdog()
	l.openHandOver()
	defer l.ho.close()

	if err := Ready(l.opts.ReadyStatus); err != nil {
		// The supervisor will time the start-up out; keep serving until it
		// signals, as a process that cannot report must not guess.
		l.log.Error("childproc: could not report readiness", "err", err)
	} else {
		l.log.Info("childproc: serving", "servers", n, "pid", os.Getpid())
	}
	wd := l.startWatchdog(pingEvery)

	var reason string
	var failure error
	select {
	case sig := <-sigs:
		reason = "signal " + sig.String()
	case <-l.stopCh:
		reason = "Stop called"
	case <-l.opts.Context.Done():
		reason = "context done: " + context.Cause(l.opts.Context).Error()
	case failure = <-l.failures:
		reason = "server failed: " + failure.Error()
	}
	// The supervisor stops expecting pings when the drain starts.
	wd.stop()
	return errors.Join(failure, l.drain(reason, sigs))
}

// drain runs the steps documented on Run, one method each, under one
// deadline.
func (l *Lifecycle) drain(reason string, sigs <-chan os.Signal) error {
	start := time.Now()
	d := l.beginDrain(reason)
	ctx, release := l.drainContext(sigs)
	defer release()
	d.ctx = ctx

	d.stopAccepting()
	d.lameDuck()
	d.shutdown()
	d.backgroundTasks()
	closeErr := d.closers()
	return d.finish(start, closeErr)
}

// drainState is what the steps of one drain share.
type drainState struct {
	l *Lifecycle
	// ctx is done at the drain's deadline, or when a second signal cuts
	// the drain short; steps stop waiting then.
	ctx      context.Context
	servers  []*server     // every server, in registration order
	httpSrvs []*httpServer // the HTTP ones among them
	generic  []*server     // the serve/stop pairs among them (Serve)
	// stillRunning collects what steps left running when the drain was
	// cut short; Run's error names it.
	stillRunning []string
	// patient: a generation adopts connections; those that cannot move
	// to it are closed after a response, not while idle (see
	// httpServer.settle).
	patient bool
}

// beginDrain marks the drain as begun, to the servers, to Draining's
// waiters and to the supervisor, and returns the state its steps share.
func (l *Lifecycle) beginDrain(reason string) *drainState {
	// Which connections go to the next generation is known before any
	// response may say "Connection: close".
	adopter, adopts := l.adoptedKinds()
	l.mu.Lock()
	l.state = stateDraining
	servers := l.servers
	for _, s := range servers {
		s.stopping = true
		if h := s.http; h != nil {
			if h.hl != nil && l.opts.LameDuck > 0 && slices.Contains(adopts, h.kind) {
				h.handing.Store(true)
			}
			// From here on every response says "Connection: close"
			// (but those of connections handed over); set before
			// Draining() fires, so a handler that waits for it
			// answers with it.
			h.lameDuck.Store(true)
		}
	}
	l.mu.Unlock()
	l.closeAdopters()
	close(l.draining)
	if err := Notify(notifyPayload("STOPPING=1", "draining: "+reason)); err != nil {
		l.log.Warn("childproc: could not report STOPPING=1", "err", err)
	}
	l.log.Info("childproc: drain started", "reason", reason, "timeout", l.opts.DrainTimeout)

	d := &drainState{l: l, servers: servers, patient: adopter != 0 && l.opts.LameDuck > 0}
	for _, s := range servers {
		if s.http != nil {
			d.httpSrvs = append(d.httpSrvs, s.http)
		} else {
			d.generic = append(d.generic, s)
		}
	}
	return d
}

// drainContext returns the context the drain's steps wait under: done at
// the deadline (Options.DrainTimeout from now) or at a second signal on
// sigs. Request contexts are cancelled RequestCancelMargin before the
// deadline, or as soon as the drain is cut short. release stops all of it.
func (l *Lifecycle) drainContext(sigs <-chan os.Signal) (ctx context.Context, release func()) {
	timeout := l.opts.DrainTimeout
	deadlineCtx, cancelDeadline := context.WithTimeoutCause(context.Background(), timeout,
		fmt.Errorf("drain deadline (%s) passed", timeout))
	ctx, cut := context.WithCancelCause(deadlineCtx)

	// A second signal (or the supervisor's SIGINT after SIGTERM) cuts the
	// drain short. This goroutine ends with release.
	watchDone := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			cut(fmt.Errorf("second signal (%s)", sig))
		case <-watchDone:
		}
	}()

	// Requests are told to give up a little before the deadline, or at
	// once when the drain is cut short.
	reqTimer := time.AfterFunc(timeout-l.opts.RequestCancelMargin, func() { l.reqCancel(ErrDrainDeadline) })
	stopReqs := context.AfterFunc(ctx, func() { l.reqCancel(context.Cause(ctx)) })

	return ctx, func() {
		// Unhook the requests first: cutting ctx below must not cancel
		// them.
		stopReqs()
		reqTimer.Stop()
		close(watchDone)
		cut(nil)
		cancelDeadline()
	}
}

// cutShort records list, what step left running, when the drain was cut
// short; a step that ended in time records nothing.
func (d *drainState) cutShort(step string, list []string) {
	if len(list) == 0 || d.ctx.Err() == nil {
		return
	}
	d.l.log.Error("childproc: drain cut short", "step", step, "cause", context.Cause(d.ctx), "still_running", joinList(list))
	d.stillRunning = append(d.stillRunning, list...)
}

// stopAccepting is step 1: close this process's copy of each listener and
// wait until each Serve returned, so that every accepted connection is
// known; start the generic servers' stop functions (ServeListener's once
// their listener is closed and what it accepted was taken up).
func (d *drainState) stopAccepting() {
	l, ctx := d.l, d.ctx
	t := time.Now()
	for _, h := range d.httpSrvs {
		if err := h.ln.Close(); err != nil {
			l.log.Warn("childproc: closing listener", "server", h.name(), "err", err)
		}
	}
	for _, s := range d.generic {
		go func() {
			defer close(s.stopDone)
			if s.accepts != nil {
				if n := s.accepts.closeAndWait(ctx); n > 0 {
					l.log.Warn("childproc: accepted connections not taken up by the deadline", "server", s.name, "connections", n)
				}
			}
			s.stopErr = s.stop(ctx)
		}()
	}
	var pending []string
	for _, s := range d.servers {
		if s.http == nil {
			continue
		}
		select {
		case <-s.done:
		case <-ctx.Done():
			pending = append(pending, s.name+": Serve has not returned")
		}
	}
	d.cutShort("stop accepting", pending)
	listeners := len(d.httpSrvs)
	for _, s := range d.generic {
		if s.accepts != nil {
			listeners++
		}
	}
	l.log.Info("childproc: drain step done", "step", "1 stop accepting", "took", time.Since(t), "listeners", listeners)
}

// lameDuck is step 2: keep serving, every HTTP/1 response with
// "Connection: close", until the HTTP servers settle or Options.LameDuck
// passed.
func (d *drainState) lameDuck() {
	l, ctx := d.l, d.ctx
	if l.opts.LameDuck <= 0 || len(d.httpSrvs) == 0 {
		return
	}
	t := time.Now()
	bound := l.opts.LameDuck
	asked, handing := 0, false
	for _, h := range d.httpSrvs {
		if h.handing.Load() {
			handing = true
			asked += h.requestHandOvers()
		}
	}
	if handing {
		l.log.Info("childproc: handing connections over", "connections", asked)
	}
	if d.patient && !l.lameDuckSet {
		// Connections that cannot move are closed after a response,
		// not while idle, for as long as the drain allows.
		if dl, ok := ctx.Deadline(); ok {
			bound = max(time.Until(dl)-l.opts.RequestCancelMargin, bound)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, bound)
	var wg sync.WaitGroup
	open := make([][]string, len(d.httpSrvs))
	for i, h := range d.httpSrvs {
		wg.Go(func() { open[i] = h.settle(lctx, l.opts.LameDuckQuiet, d.patient) })
	}
	wg.Wait()
	cancel()
	var left []string
	var closeSent, handed int64
	h2 := 0
	for i, h := range d.httpSrvs {
		left = append(left, open[i]...)
		closeSent += h.closeSent.Load()
		handed += h.handed.Load()
		h2 += h.http2Conns()
	}
	if ctx.Err() != nil {
		d.cutShort("lame duck", left)
	} else if len(left) > 0 {
		// The window is a bound, not a failure: Shutdown takes over.
		l.log.Warn("childproc: lame duck window ended with connections busy", "max", l.opts.LameDuck, "busy", joinList(left))
	}
	l.log.Info("childproc: drain step done", "step", "2 lame duck", "took", time.Since(t), "responses_with_connection_close", closeSent,
		"handed_over", handed, "http2_connections_left_to_goaway", h2)
}

// shutdown is step 3: http.Server.Shutdown for idle connections, then wait
// for the handlers of hijacked connections and for the generic servers.
func (d *drainState) shutdown() {
	l, ctx := d.l, d.ctx
	t := time.Now()
	var idle int
	for _, h := range d.httpSrvs {
		idle += h.idleConns() // Shutdown closes them while idle
	}
	l.closedIdle.Add(int64(idle))
	var wg sync.WaitGroup
	left := make([][]string, len(d.httpSrvs))
	for i, h := range d.httpSrvs {
		wg.Go(func() {
			if err := h.srv.Shutdown(ctx); err != nil {
				left[i] = h.describe()
				h.srv.Close() // force what is left
			}
			left[i] = append(left[i], h.waitHandlers(ctx)...)
		})
	}
	wg.Wait()
	for _, s := range d.generic {
		select {
		case <-s.stopDone:
			if s.stopErr != nil {
				l.log.Warn("childproc: server stop", "server", s.name, "err", s.stopErr)
			}
		case <-ctx.Done():
			left = append(left, []string{s.name + ": still stopping"})
			continue
		}
		select {
		case <-s.done:
		case <-ctx.Done():
			left = append(left, []string{s.name + ": serve has not returned"})
		}
	}
	for _, list := range left {
		d.cutShort("shutdown", list)
	}
	l.reportHandOver(d.httpSrvs)
	l.log.Info("childproc: drain step done", "step", "3 shutdown", "took", time.Since(t), "servers", len(d.servers))
}

// backgroundTasks is step 4: refuse new tasks, cancel Context() and wait
// for the running ones.
func (d *drainState) backgroundTasks() {
	l := d.l
	t := time.Now()
	n := l.tasks.close()
	l.cancel(errors.New("childproc: draining"))
	d.cutShort("background tasks", l.tasks.wait(d.ctx))
	l.log.Info("childproc: drain step done", "step", "4 background tasks", "took", time.Since(t), "tasks", n)
}

// closers is step 5: run the closers, in reverse order of registration.
func (d *drainState) closers() error {
	t := time.Now()
	err := d.l.runClosers(d.ctx)
	d.l.log.Info("childproc: drain step done", "step", "5 closers", "took", time.Since(t))
	return err
}

// finish is step 6: mark the Lifecycle done and report the drain as a
// whole, so that Run can return.
func (d *drainState) finish(start time.Time, closeErr error) error {
	l := d.l
	l.mu.Lock()
	l.state = stateDone
	l.mu.Unlock()

	var drainErr error
	if len(d.stillRunning) > 0 {
		drainErr = fmt.Errorf("%w (%v): still running: %s", ErrDrainIncomplete, context.Cause(d.ctx), joinList(d.stillRunning))
	}
	if drainErr != nil || closeErr != nil {
		l.log.Error("childproc: drain finished with errors", "took", time.Since(start), "err", errors.Join(drainErr, closeErr))
	} else {
		l.log.Info("childproc: drain finished", "took", time.Since(start))
	}
	return errors.Join(drainErr, closeErr)
}

// runClosers runs the closers in reverse order of registration.
func (l *Lifecycle) runClosers(drainCtx context.Context) error {
	l.mu.Lock()
	l.closersCalled = true
	closers := l.closers
	l.mu.Unlock()

	// Closers get what is left of the drain, but at least closerGrace.
	deadline, _ := drainCtx.Deadline()
	if d := time.Now().Add(closerGrace); drainCtx.Err() != nil || deadline.Before(d) {
		deadline = d
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		c := closers[i]
		t := time.Now()
		done := make(chan error, 1)
		go func() { done <- c.fn(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				l.log.Error("childproc: closer failed", "closer", c.name, "took", time.Since(t), "err", err)
				errs = append(errs, fmt.Errorf("childproc: closer %q: %w", c.name, err))
			} else {
				l.log.Info("childproc: closer done", "closer", c.name, "took", time.Since(t))
			}
		case <-ctx.Done():
			// Do not hang the exit on a closer that ignores its context.
			l.log.Error("childproc: closer still running at deadline; moving on", "closer", c.name, "took", time.Since(t))
			errs = append(errs, fmt.Errorf("childproc: closer %q: still running at deadline", c.name))
		}
	}
	return errors.Join(errs...)
}
