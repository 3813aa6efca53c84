//go:build linux

package supervisor

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// This file is the supervisor's state: every decision about generations,
// reloads, stops and restarts, and nothing else. The machine takes one
// event at a time and returns the actions the driver must carry out. It
// starts no goroutine, makes no system call and reads no clock: time comes
// in with each event, and everything the driver observed (a pid, an exit
// status, the last lines a child wrote) comes in as an event too. That is
// what lets machine_test.go explore every interleaving of events.
//
// The transition table, event by event, is the switch in step.

// State is where a generation is in its life.
type State string

const (
	Starting State = "starting" // spawned, not yet ready
	Serving  State = "serving"  // the current generation
	Trial    State = "trial"    // ready, serving beside the serving one until its trial ends
	Draining State = "draining" // sent the drain signal, finishing its work
	Failed   State = "failed"   // did not take over; what is left of it drains
	Exited   State = "exited"   // reaped
)

// startKind says why a generation was started, which decides what its
// success or failure means and what the service manager is told.
type startKind int

const (
	kindInitial startKind = iota // the first child
	kindReload                   // SIGHUP, or Reload
	kindRestart                  // after the serving child died
)

// callerID names someone waiting for a verdict (a Reload or Stop call);
// 0 is nobody (a signal).
type callerID int

// timerID names one arming of a timer. Each arming gets a new id, so a
// timer that fires after it was disarmed (its event already queued) is
// recognised as stale and ignored.
type timerID int

type timerKind int

const (
	timerReady      timerKind = iota // a starting generation's ready timeout
	timerReadyDelay                  // --ready delay:D: ready once this passes
	timerDrain                       // a draining generation's deadline
	timerRestart                     // crash-restart backoff
	timerTrial                       // the end of a generation's trial
	timerWatchdog                    // a ready generation's watchdog
	timerAbort                       // the grace after the watchdog's SIGABRT
)

// machineConfig is what the machine needs of Config.
type machineConfig struct {
	ReadyDelay, ReadyTimeout, DrainTimeout time.Duration
	BackoffMin, BackoffMax, StableAfter    time.Duration
	DrainSignal                            syscall.Signal
	Trial, Watchdog, WatchdogGrace         time.Duration
}

// Events. The driver feeds them in the order they happened.
type (
	event interface{ isEvent() }

	// evSignal: a signal reached hitless.
	evSignal struct{ sig syscall.Signal }
	// evReload: Reload was called; caller waits for the verdict.
	evReload struct{ caller callerID }
	// evStop: Stop was called, or Run's context ended (caller 0).
	evStop struct{ caller callerID }
	// evStatus: Status was called.
	evStatus struct{ caller callerID }
	// evSpawned and evSpawnFailed answer actStart, before any other event.
	evSpawned     struct{ gen, pid int }
	evSpawnFailed struct {
		gen int
		err string
	}
	// evReady: the generation (or a descendant) sent READY=1.
	evReady struct{ gen int }
	// evExited: the generation's process was reaped. stderr holds the
	// last lines it wrote there.
	evExited struct {
		gen    int
		status unix.WaitStatus
		stderr []string
	}
	// evTimer: an armed timer fired. stderr holds the last lines the
	// timer's generation wrote, if it has one.
	evTimer struct {
		id     timerID
		stderr []string
	}
	// evTick: the service manager's watchdog interval passed.
	evTick struct{}
	// evPromote and evRollback end the trial in progress early.
	evPromote  struct{ caller callerID }
	evRollback struct{ caller callerID }
	// evWatchdog: the generation sent WATCHDOG=1, WATCHDOG=trigger, or
	// WATCHDOG_USEC=usec.
	evWatchdog struct {
		gen  int
		kind watchdogKind
		usec time.Duration
	}
	// evUpgrade: Upgrade was called, to replace hitless with binary.
	evUpgrade struct {
		caller callerID
		binary string
	}
	// evUpgradeChecked answers actCheckUpgrade: err is why the new binary
	// was refused, "" if it passed.
	evUpgradeChecked struct {
		id  int
		err string
	}
	// evUpgradeDone: upgrade id is over: the exec failed ("failed"), or
	// this is the image it started, which restored the state ("ok"), or
	// the old image again, after the new one gave up ("rolled_back").
	evUpgradeDone struct {
		id             int
		result, reason string
		note           string // for an upgrade that succeeded: see UpgradeResult.Note
	}
	// evUpgradeResult: a caller asks for the verdict of the last upgrade.
	evUpgradeResult struct{ caller callerID }
	// evCancel: a caller of a reload or an upgrade gave up waiting (its
	// context ended): it gets no verdict, and is forgotten. What it asked
	// for goes on.
	evCancel struct{ caller callerID }
)

type watchdogKind int

const (
	watchdogPing     watchdogKind = iota // WATCHDOG=1
	watchdogTrigger                      // WATCHDOG=trigger: act as if it expired
	watchdogInterval                     // WATCHDOG_USEC=: a new interval
)

func (evSignal) isEvent()         {}
func (evReload) isEvent()         {}
func (evStop) isEvent()           {}
func (evStatus) isEvent()         {}
func (evSpawned) isEvent()        {}
func (evSpawnFailed) isEvent()    {}
func (evReady) isEvent()          {}
func (evExited) isEvent()         {}
func (evTimer) isEvent()          {}
func (evTick) isEvent()           {}
func (evPromote) isEvent()        {}
func (evRollback) isEvent()       {}
func (evWatchdog) isEvent()       {}
func (evUpgrade) isEvent()        {}
func (evUpgradeChecked) isEvent() {}
func (evUpgradeDone) isEvent()    {}
func (evUpgradeResult) isEvent()  {}
func (evCancel) isEvent()         {}

// Actions, carried out by the driver in the order given.
type (
	action interface{ isAction() }

	// actStart: spawn generation gen; answer with evSpawned or
	// evSpawnFailed before anything else.
	actStart struct {
		gen  int
		kind startKind
	}
	// actSignal: send sig to the process group of pid.
	actSignal struct {
		gen, pid int
		sig      syscall.Signal
	}
	// actArm: fire evTimer{id} after the duration. gen is the generation
	// the timer belongs to (0 for none), whose stderr the event carries.
	actArm struct {
		id    timerID
		kind  timerKind
		gen   int
		after time.Duration
	}
	actDisarm struct{ id timerID }
	// actReply: the verdict for caller: nil, *ReloadError or ErrStopping.
	actReply struct {
		caller callerID
		err    error
	}
	// actStatus: answer caller with the machine's view.
	actStatus struct {
		caller callerID
		view   machineView
	}
	// actNotify: tell the service manager.
	actNotify struct {
		what notifyKind
		text string
	}
	actLog struct {
		level slog.Level
		msg   string
		attrs []any
	}
	// actForget: the generation exited; release what the driver holds
	// for it.
	actForget struct{ gen int }
	// actRelease: a stop began; close hitless's copies of the sockets, so
	// that late clients are refused instead of queued behind nobody.
	actRelease struct{}
	// actExit: every generation has exited; Run returns err. The stop
	// callers get their reply once hitless has released everything.
	actExit struct {
		err     error
		callers []callerID
	}
	// actObserve: a measurement for the metrics.
	actObserve struct {
		what observeKind
		d    time.Duration
	}
	// actCheckUpgrade: run the new binary's check; answer with
	// evUpgradeChecked.
	actCheckUpgrade struct {
		id     int
		binary string
	}
	// actExecUpgrade: replace this image with the checked binary, handing
	// the state over; if that fails, answer with evUpgradeDone. The
	// callers' answer comes from the new image.
	actExecUpgrade struct{ id int }
	// actCancelCheck: kill the check of upgrade id; its evUpgradeChecked
	// will be stale.
	actCancelCheck struct{ id int }
)

type observeKind int

const (
	observeReload observeKind = iota // from the reload's request to the new generation serving
	observeDrain                     // from the drain signal to the exit
)

func (actStart) isAction()        {}
func (actSignal) isAction()       {}
func (actArm) isAction()          {}
func (actDisarm) isAction()       {}
func (actReply) isAction()        {}
func (actStatus) isAction()       {}
func (actNotify) isAction()       {}
func (actLog) isAction()          {}
func (actForget) isAction()       {}
func (actRelease) isAction()      {}
func (actExit) isAction()         {}
func (actObserve) isAction()      {}
func (actCheckUpgrade) isAction() {}
func (actExecUpgrade) isAction()  {}
func (actCancelCheck) isAction()  {}

type notifyKind int

const (
	notifyReady     notifyKind = iota // READY=1, with STATUS=text
	notifyReloading                   // RELOADING=1 and MONOTONIC_USEC
	notifyStopping                    // STOPPING=1
	notifyStatus                      // STATUS=text
	notifyWatchdog                    // WATCHDOG=1
)

// machineView is what the machine knows for Status.
type machineView struct {
	gens                               []genView
	stopping, upgrading, upgradeQueued bool
	reloadQueued                       bool
	stats                              Stats
}

type genView struct {
	id, pid                 int
	state                   State
	started, readyAt, drain time.Time
	trialEnds               time.Time
	watchdog                time.Duration // 0 when not enforced
}

// mgen is one generation as the machine sees it.
type mgen struct {
	id      int
	kind    startKind
	pid     int // 0 until spawned
	state   State
	started time.Time
	readyAt time.Time
	drainAt time.Time

	askedAt time.Time // when the reload that started it was asked for

	ready, delay, drain timerID // armed timers; 0 when none
	drainSent           bool    // the drain signal went out (once, ever)

	trial     timerID // the end of its trial
	trialEnds time.Time

	wdInterval time.Duration // enforced once ready; 0 for none
	watchdog   timerID
	abort      timerID // SIGKILL after the watchdog's SIGABRT
	wdFired    bool    // the watchdog expired: it is being killed
}

type timerRef struct {
	kind timerKind
	gen  *mgen // nil for the restart timer
}

// machine is the supervisor's state. The zero value is not usable; see
// newMachine.
type machine struct {
	cfg machineConfig
	now time.Time
	out []action

	gens     []*mgen // every generation not yet exited, oldest first
	lastID   int
	serving  *mgen
	starting *mgen
	trial    *mgen // ready, serving beside serving until its trial ends

	pending  bool       // one more reload queued behind the one in flight
	queuedAt time.Time  // when the queued reload was first asked for
	waiting  []callerID // callers of the reload in flight
	queued   []callerID // callers of the queued reload

	stopping    bool
	stopCallers []callerID
	done        bool

	restart  timerID // armed restart timer
	backoff  time.Duration
	exitCode int
	initErr  error

	timers    map[timerID]timerRef // armed
	lastTimer timerID

	// The upgrade of hitless itself (see upgrade.go in package upgrade).
	upgrading      bool
	checking       bool // the upgrade's check runs: a stop cancels it
	upgradeID      int  // the last one begun
	upgradeBinary  string
	upgradeCallers []callerID
	upgradeQueued  bool // asked for during a reload: begins after it
	stopDeferred   bool // a stop asked for during the upgrade
	restartDue     bool // the restart timer fired during the upgrade

	stats Stats
}

func newMachine(cfg machineConfig) *machine {
	return &machine{cfg: cfg, backoff: cfg.BackoffMin, timers: make(map[timerID]timerRef)}
}

// begin starts the first generation. It is the machine's first step.
func (m *machine) begin(now time.Time) []action {
	m.now, m.out = now, nil
	m.startGen(kindInitial, now)
	return m.out
}

// step applies one event and returns what the driver must do.
func (m *machine) step(now time.Time, ev event) []action {
	m.now, m.out = now, nil
	if m.done {
		return nil
	}
	switch ev := ev.(type) {
	case evSignal:
		m.signal(ev.sig)
	case evReload:
		m.reload(ev.caller)
	case evStop:
		m.stop(ev.caller)
	case evStatus:
		m.emit(actStatus{caller: ev.caller, view: m.view()})
	case evTick:
		// Only a service that serves is alive to the service manager.
		if m.serving != nil {
			m.emit(actNotify{what: notifyWatchdog})
		}
	case evSpawned:
		if g := m.starting; g != nil && g.id == ev.gen && g.pid == 0 {
			m.spawned(g, ev.pid)
		}
	case evSpawnFailed:
		if g := m.starting; g != nil && g.id == ev.gen && g.pid == 0 {
			g.state = Exited
			m.failed(g, ev.err, nil)
			m.afterFailure()
		}
	case evReady:
		// Only the generation being started can take over: a READY=1
		// from one that serves, drains, or was stopped changes nothing.
		if g := m.starting; g != nil && g.id == ev.gen && g.state == Starting && g.pid > 0 {
			m.ready(g)
		}
	case evPromote:
		if g := m.trial; g != nil {
			m.logf(slog.LevelInfo, "trial ended early: promote", "generation", g.id, "pid", g.pid)
			m.promote(g)
			m.reply(ev.caller, nil)
		} else {
			m.reply(ev.caller, ErrNoTrial)
		}
	case evRollback:
		if g := m.trial; g != nil {
			m.rollback(g, "asked by hitless rollback", nil)
			m.reply(ev.caller, nil)
		} else {
			m.reply(ev.caller, ErrNoTrial)
		}
	case evWatchdog:
		if g := m.find(ev.gen); g != nil {
			m.watchdogEvent(g, ev)
		}
	case evUpgrade:
		m.upgrade(ev.caller, ev.binary)
	case evUpgradeChecked:
		if m.upgrading && m.checking && ev.id == m.upgradeID {
			m.checking = false
			if ev.err != "" {
				m.upgradeDone("refused", ev.err, "")
			} else {
				m.logf(slog.LevelInfo, "upgrade: the new binary passed its check; executing it", "upgrade", ev.id, "binary", m.upgradeBinary)
				m.emit(actExecUpgrade{id: ev.id})
			}
		}
	case evUpgradeDone:
		if m.upgrading && ev.id == m.upgradeID {
			m.upgradeDone(ev.result, ev.reason, ev.note)
		}
	case evUpgradeResult:
		m.reply(ev.caller, m.upgradeErr())
	case evCancel:
		for _, cs := range []*[]callerID{&m.waiting, &m.queued, &m.upgradeCallers} {
			*cs = slices.DeleteFunc(*cs, func(c callerID) bool { return c == ev.caller })
		}
	case evTimer:
		m.timer(ev.id, ev.stderr)
	case evExited:
		if g := m.find(ev.gen); g != nil {
			m.exited(g, ev.status, ev.stderr)
		}
	}
	// A generation on trial goes across the upgrade with its deadline; a
	// starting one is waited for.
	if m.upgradeQueued && !m.upgrading && !m.stopping && m.starting == nil {
		m.upgradeQueued = false
		m.beginUpgrade()
	}
	if m.stopping && len(m.gens) == 0 && !m.done {
		m.finish()
	}
	return m.out
}

func (m *machine) emit(a action) { m.out = append(m.out, a) }

func (m *machine) logf(level slog.Level, msg string, attrs ...any) {
	m.emit(actLog{level: level, msg: msg, attrs: attrs})
}

func (m *machine) find(id int) *mgen {
	for _, g := range m.gens {
		if g.id == id {
			return g
		}
	}
	return nil
}

func (m *machine) signal(sig syscall.Signal) {
	switch sig {
	case syscall.SIGHUP:
		m.logf(slog.LevelInfo, "SIGHUP: reload")
		m.reload(0)
	case syscall.SIGINT, syscall.SIGTERM:
		if sig == syscall.SIGINT && m.stopping {
			m.logf(slog.LevelWarn, "second SIGINT: killing every child now")
			for _, g := range m.gens {
				m.emit(actSignal{gen: g.id, pid: g.pid, sig: syscall.SIGKILL})
			}
			return
		}
		m.logf(slog.LevelInfo, "stop", "signal", unix.SignalName(sig))
		m.stop(0)
	case syscall.SIGUSR1, syscall.SIGUSR2:
		// To every generation that serves: one on trial writes logs too
		// (logrotate's USR1), and is the same program as the one it
		// would replace.
		for _, g := range []*mgen{m.serving, m.trial} {
			if g != nil {
				m.logf(slog.LevelInfo, "forwarding signal", "signal", unix.SignalName(sig), "generation", g.id, "pid", g.pid)
				m.emit(actSignal{gen: g.id, pid: g.pid, sig: sig})
			}
		}
	}
}

// reload starts a new generation now, or queues one behind the one in
// flight. Requests that arrive while one is queued join it: a burst of
// reloads ends in at most two starts, never in aborting the one running.
func (m *machine) reload(caller callerID) {
	switch {
	case m.stopping:
		m.reply(caller, ErrStopping)
	case m.starting != nil || m.trial != nil || m.upgrading:
		if !m.pending {
			m.pending, m.queuedAt = true, m.now
		}
		m.queued = appendCaller(m.queued, caller)
	default:
		m.waiting = appendCaller(m.waiting, caller)
		// An operator's reload during a crash-restart backoff runs now.
		m.disarm(&m.restart)
		m.startGen(kindReload, m.now)
	}
}

func (m *machine) startGen(kind startKind, askedAt time.Time) {
	if kind == kindReload {
		m.emit(actNotify{what: notifyReloading})
	}
	m.lastID++
	g := &mgen{id: m.lastID, kind: kind, state: Starting, askedAt: askedAt, wdInterval: m.cfg.Watchdog}
	m.starting = g
	m.emit(actStart{gen: g.id, kind: kind})
}

func (m *machine) spawned(g *mgen, pid int) {
	g.pid, g.started = pid, m.now
	m.gens = append(m.gens, g)
	g.ready = m.arm(timerReady, g, m.cfg.ReadyTimeout)
	if m.cfg.ReadyDelay > 0 {
		g.delay = m.arm(timerReadyDelay, g, m.cfg.ReadyDelay)
	}
}

// ready: g said READY=1 (or its delay passed). A reload with a trial
// window serves beside the serving generation first; anything else takes
// over at once.
func (m *machine) ready(g *mgen) {
	if g.kind == kindReload && m.serving != nil && m.cfg.Trial > 0 {
		m.beginTrial(g)
		return
	}
	m.promote(g)
}

// beginTrial lets g serve beside the serving generation, which is not
// signalled, until the trial ends: if g fails meanwhile, nothing was
// lost, and the old one simply goes on.
func (m *machine) beginTrial(g *mgen) {
	g.readyAt = m.now
	m.disarm(&g.ready)
	m.disarm(&g.delay)
	g.state, m.trial, m.starting = Trial, g, nil
	g.trialEnds = m.now.Add(m.cfg.Trial)
	g.trial = m.arm(timerTrial, g, m.cfg.Trial)
	m.armWatchdog(g)
	old := m.serving
	m.logf(slog.LevelInfo, "trial", "generation", g.id, "pid", g.pid, "ready_after", m.now.Sub(g.started).Round(time.Millisecond),
		"trial", m.cfg.Trial, "beside_generation", old.id)
	m.emit(actNotify{what: notifyStatus, text: fmt.Sprintf("trial: generation %d (pid %d) serves beside generation %d (pid %d) for %v",
		g.id, g.pid, old.id, old.pid, m.cfg.Trial)})
}

// rollback ends g's trial with a failure: g is drained, the serving
// generation, never signalled, goes on. g is on trial, or has just exited
// (with every timer of it disarmed); sendDrain disarms its trial and its
// watchdog.
func (m *machine) rollback(g *mgen, reason string, stderr []string) {
	err := &ReloadError{Generation: g.id, PID: g.pid, Reason: "rolled back during the trial: " + reason, Stderr: stderr, RolledBack: true}
	m.trial = nil
	if g.state == Trial {
		m.sendDrain(g, Failed)
	}
	m.stats.ReloadsRolledBack++
	// Only a reload has a trial (see ready): the message is a reload's.
	m.reloadFailed(g, err, "reload rolled back", reason, stderr)
	m.afterFailure()
}

// promote makes g the serving generation and drains the one before it.
func (m *machine) promote(g *mgen) {
	if g.readyAt.IsZero() {
		g.readyAt = m.now
	}
	m.disarm(&g.ready)
	m.disarm(&g.delay)
	m.disarm(&g.trial)
	if m.trial == g {
		m.trial = nil
	}
	old := m.serving
	g.state, m.serving, m.starting = Serving, g, nil
	m.armWatchdog(g)
	m.logf(slog.LevelInfo, "serving", "generation", g.id, "pid", g.pid, "ready_after", g.readyAt.Sub(g.started).Round(time.Millisecond))
	switch g.kind {
	case kindInitial:
		m.emit(actNotify{what: notifyReady, text: fmt.Sprintf("serving: generation %d (pid %d)", g.id, g.pid)})
	case kindReload:
		m.stats.ReloadsOK++
		m.emit(actObserve{what: observeReload, d: m.now.Sub(g.askedAt)})
		m.emit(actNotify{what: notifyReady, text: fmt.Sprintf("reload succeeded: generation %d (pid %d) serving", g.id, g.pid)})
	case kindRestart:
		m.emit(actNotify{what: notifyStatus, text: fmt.Sprintf("restarted: generation %d (pid %d) serving", g.id, g.pid)})
	}
	if old != nil {
		m.drain(old)
	}
	m.replyAll(&m.waiting, nil)
	if m.takeQueued() {
		m.startGen(kindReload, m.queuedAt)
	}
}

// drain tells g to finish its work and exit, and arms its deadline.
func (m *machine) drain(g *mgen) {
	m.logf(slog.LevelInfo, "draining", "generation", g.id, "pid", g.pid, "signal", unix.SignalName(m.cfg.DrainSignal), "timeout", m.cfg.DrainTimeout)
	m.sendDrain(g, Draining)
}

// sendDrain sends g the drain signal and arms its deadline, once in g's
// life: a second drain signal would read as "cut the drain short" to
// childproc, and a second deadline would outlive the first.
func (m *machine) sendDrain(g *mgen, state State) {
	g.state = state
	m.disarm(&g.ready)
	m.disarm(&g.delay)
	m.disarm(&g.trial)
	m.disarm(&g.watchdog)
	if g.drainSent {
		return
	}
	g.drainSent, g.drainAt = true, m.now
	m.emit(actSignal{gen: g.id, pid: g.pid, sig: m.cfg.DrainSignal})
	g.drain = m.arm(timerDrain, g, m.cfg.DrainTimeout)
}

// failed records that g did not take over and stops what is left of it.
func (m *machine) failed(g *mgen, reason string, stderr []string) {
	err := &ReloadError{Generation: g.id, PID: g.pid, Reason: reason, Stderr: stderr}
	if g.state == Starting {
		// A child that is not ready may still have accepted connections
		// from the shared queue: drain it like an old generation, so they
		// are answered, and kill its group at the drain deadline.
		m.sendDrain(g, Failed)
	}
	if m.starting == g {
		m.starting = nil
	}
	m.stats.ReloadsFailed++
	msg := map[startKind]string{kindInitial: "start failed", kindReload: "reload failed", kindRestart: "restart failed"}[g.kind]
	m.reloadFailed(g, err, msg, reason, stderr)
	if g.kind == kindInitial && !m.stopping {
		// The first child goes through the same gate; failing it ends hitless.
		m.initErr = fmt.Errorf("first child: %w", err)
		m.stop(0)
	}
}

// reloadFailed records err, why g did not take over, logs it as msg
// ("reload failed", "reload rolled back", ...), tells the service manager
// for a reload or a restart, and answers the callers of the reload in
// flight.
func (m *machine) reloadFailed(g *mgen, err *ReloadError, msg, reason string, stderr []string) {
	m.stats.LastFailure, m.stats.LastFailureAt = err.Error(), m.now
	m.logf(slog.LevelError, msg, "generation", g.id, "pid", g.pid, "reason", reason, "stderr", strings.Join(stderr, " | "))
	switch g.kind {
	case kindReload:
		// systemd has no "reload failed" message: READY=1 ends the
		// reload job, and STATUS= says how it went.
		m.emit(actNotify{what: notifyReady, text: fmt.Sprintf("%s: %s; %s", msg, err, m.stillServing())})
	case kindRestart:
		m.emit(actNotify{what: notifyStatus, text: fmt.Sprintf("%s: %s", msg, err)})
	}
	m.replyAll(&m.waiting, err)
}

// stillServing says what serves after a reload failed.
func (m *machine) stillServing() string {
	if s := m.serving; s != nil {
		return fmt.Sprintf("generation %d (pid %d) still serving", s.id, s.pid)
	}
	return "nothing serving"
}

// afterFailure starts what must follow a failed start: the queued reload,
// or a restart if nothing serves.
func (m *machine) afterFailure() {
	if m.takeQueued() {
		m.startGen(kindReload, m.queuedAt)
		return
	}
	if m.idle() {
		m.scheduleRestart()
	}
}

// idle reports whether nothing serves, starts or is on trial while no
// stop is under way: what calls for a restart.
func (m *machine) idle() bool {
	return m.serving == nil && m.starting == nil && m.trial == nil && !m.stopping
}

// restartIfIdle starts a restart generation if m is idle, and reports
// whether it did.
func (m *machine) restartIfIdle() bool {
	if !m.idle() {
		return false
	}
	m.stats.Restarts++
	m.startGen(kindRestart, m.now)
	return true
}

// takeQueued moves the queued reload's callers to the front; false when
// none is queued, or when it waits for the upgrade under way.
func (m *machine) takeQueued() bool {
	if !m.pending || m.stopping || m.upgrading {
		return false
	}
	m.pending = false
	m.waiting, m.queued = m.queued, nil
	return true
}

func (m *machine) scheduleRestart() {
	d := m.backoff
	m.backoff = min(2*m.backoff, m.cfg.BackoffMax)
	m.logf(slog.LevelWarn, "no serving child: restarting", "in", d)
	m.restart = m.arm(timerRestart, nil, d)
}

func (m *machine) timer(id timerID, stderr []string) {
	ref, ok := m.timers[id]
	if !ok {
		return // disarmed after it fired: stale
	}
	delete(m.timers, id)
	g := ref.gen
	switch ref.kind {
	case timerReady:
		g.ready = 0
		m.failed(g, fmt.Sprintf("not ready within %v", m.cfg.ReadyTimeout), stderr)
		m.afterFailure()
	case timerReadyDelay:
		g.delay = 0
		m.promote(g)
	case timerDrain:
		g.drain = 0
		m.logf(slog.LevelWarn, "drain timeout: killing process group", "generation", g.id, "pid", g.pid, "timeout", m.cfg.DrainTimeout)
		m.emit(actSignal{gen: g.id, pid: g.pid, sig: syscall.SIGKILL})
	case timerTrial:
		g.trial = 0
		m.logf(slog.LevelInfo, "trial passed", "generation", g.id, "pid", g.pid, "trial", m.cfg.Trial)
		m.promote(g)
	case timerWatchdog:
		g.watchdog = 0
		m.watchdogExpired(g, fmt.Sprintf("no WATCHDOG=1 within %v", g.wdInterval), stderr)
	case timerAbort:
		g.abort = 0
		m.logf(slog.LevelWarn, "watchdog: killing process group", "generation", g.id, "pid", g.pid, "grace", m.cfg.WatchdogGrace)
		m.emit(actSignal{gen: g.id, pid: g.pid, sig: syscall.SIGKILL})
	case timerRestart:
		m.restart = 0
		if m.upgrading {
			m.restartDue = true
			return
		}
		m.restartIfIdle()
	}
}

func (m *machine) exited(g *mgen, ws unix.WaitStatus, stderr []string) {
	for i, x := range m.gens {
		if x == g {
			m.gens = append(m.gens[:i], m.gens[i+1:]...)
			break
		}
	}
	was := g.state
	g.state = Exited
	for _, t := range []*timerID{&g.ready, &g.delay, &g.drain, &g.trial, &g.watchdog, &g.abort} {
		m.disarm(t)
	}
	m.emit(actForget{gen: g.id})
	reason := exitReason(ws)
	if g.wdFired {
		reason += " (after its watchdog expired)"
	}
	took := m.now.Sub(g.drainAt).Round(time.Millisecond)
	switch {
	case g == m.starting:
		m.failed(g, "exited before ready: "+reason, stderr)
		m.afterFailure()
	case g == m.trial:
		m.rollback(g, "exited: "+reason, stderr)
	case g == m.serving:
		m.serving = nil
		m.exitCode = m.code(g, ws)
		if m.stopping {
			m.logf(slog.LevelInfo, "stopped", "generation", g.id, "pid", g.pid, "status", reason, "took", took)
			m.emit(actObserve{what: observeDrain, d: m.now.Sub(g.drainAt)})
			return
		}
		m.logf(slog.LevelError, "serving child died", "generation", g.id, "pid", g.pid, "status", reason, "stderr", strings.Join(lastN(stderr, 3), " | "))
		if t := m.trial; t != nil {
			// The generation on trial is ready and serves already.
			m.logf(slog.LevelInfo, "trial ended early: the serving generation died", "generation", t.id, "pid", t.pid)
			m.promote(t)
			return
		}
		if m.now.Sub(g.readyAt) >= m.cfg.StableAfter {
			m.backoff = m.cfg.BackoffMin
		}
		if m.starting == nil {
			m.scheduleRestart()
		}
	case was == Draining && g.readyAt.IsZero():
		m.logf(slog.LevelInfo, "stopped before ready", "generation", g.id, "pid", g.pid, "status", reason, "took", took)
	case was == Draining:
		m.logf(slog.LevelInfo, "drained", "generation", g.id, "pid", g.pid, "status", reason, "took", took)
		m.emit(actObserve{what: observeDrain, d: m.now.Sub(g.drainAt)})
	case was == Failed:
		m.logf(slog.LevelInfo, "failed generation drained", "generation", g.id, "pid", g.pid, "status", reason, "took", took)
	}
}

// code is the exit status hitless reports for the serving generation: 0
// when it exited 0 or ended by the drain signal hitless sent it, which is
// how a server without a handler for that signal stops; else its own
// status, shell style.
func (m *machine) code(g *mgen, ws unix.WaitStatus) int {
	if ws.Signaled() && g.drainSent && ws.Signal() == m.cfg.DrainSignal {
		return 0
	}
	return exitCode(ws)
}

// watchdogEvent handles what g sent about its watchdog.
func (m *machine) watchdogEvent(g *mgen, ev evWatchdog) {
	if g.wdFired || g.drainSent {
		return
	}
	live := g.state == Serving || g.state == Trial // enforced once ready
	switch ev.kind {
	case watchdogPing:
		if live && g.watchdog != 0 {
			m.armWatchdog(g)
		}
	case watchdogInterval:
		// As under systemd, the child may change its own interval.
		g.wdInterval = ev.usec
		if live {
			m.armWatchdog(g)
		}
	case watchdogTrigger:
		if live {
			m.disarm(&g.watchdog)
			m.watchdogExpired(g, "it sent WATCHDOG=trigger", nil)
		}
	}
}

// armWatchdog (re)starts g's watchdog, if it has one.
func (m *machine) armWatchdog(g *mgen) {
	m.disarm(&g.watchdog)
	if g.wdInterval > 0 && !g.wdFired {
		g.watchdog = m.arm(timerWatchdog, g, g.wdInterval)
	}
}

// watchdogExpired: g stopped proving it is alive. On trial, that is a
// rollback; serving, it gets SIGABRT (a Go program prints every
// goroutine's stack) and SIGKILL after the grace, and its exit is a crash.
func (m *machine) watchdogExpired(g *mgen, why string, stderr []string) {
	if g == m.trial {
		m.rollback(g, "its watchdog expired: "+why, stderr)
		return
	}
	g.wdFired = true
	m.stats.WatchdogKills++
	m.logf(slog.LevelError, "watchdog expired: aborting", "generation", g.id, "pid", g.pid, "reason", why, "grace", m.cfg.WatchdogGrace)
	m.emit(actSignal{gen: g.id, pid: g.pid, sig: syscall.SIGABRT})
	g.abort = m.arm(timerAbort, g, m.cfg.WatchdogGrace)
}

// upgrade begins replacing hitless's own binary, once no generation is
// starting; callers asking for the same binary meanwhile join it, and
// one asking for another is refused.
func (m *machine) upgrade(caller callerID, binary string) {
	switch {
	case m.stopping:
		m.reply(caller, ErrStopping)
	case (m.upgrading || m.upgradeQueued) && binary != m.upgradeBinary:
		m.reply(caller, &UpgradeBusyError{Binary: m.upgradeBinary, Asked: binary})
	case m.upgrading:
		m.upgradeCallers = appendCaller(m.upgradeCallers, caller)
	default:
		// Queued: the end of this step begins it unless a reload is in
		// flight, and the end of the step that settles the reload does.
		m.upgradeCallers = appendCaller(m.upgradeCallers, caller)
		m.upgradeBinary = binary
		m.upgradeQueued = true
	}
}

func (m *machine) beginUpgrade() {
	m.upgrading, m.checking = true, true
	m.upgradeID++
	m.logf(slog.LevelInfo, "upgrade: checking the new binary", "upgrade", m.upgradeID, "binary", m.upgradeBinary)
	m.emit(actCheckUpgrade{id: m.upgradeID, binary: m.upgradeBinary})
}

// upgradeDone records the verdict of the upgrade in flight, answers its
// callers, and lets through what waited for it.
func (m *machine) upgradeDone(result, reason, note string) {
	m.upgrading, m.checking = false, false
	u := &UpgradeResult{ID: m.upgradeID, Result: result, Reason: reason, Note: note, At: m.now, Binary: m.upgradeBinary}
	m.stats.LastUpgrade = u
	err := m.upgradeErr()
	if err == nil {
		m.stats.UpgradesOK++
		if note != "" {
			m.logf(slog.LevelInfo, "upgraded", "upgrade", u.ID, "binary", u.Binary, "note", note)
		} else {
			m.logf(slog.LevelInfo, "upgraded", "upgrade", u.ID, "binary", u.Binary)
		}
		m.emit(actNotify{what: notifyStatus, text: fmt.Sprintf("upgraded in place to %s; children untouched", u.Binary)})
	} else {
		m.stats.UpgradesFailed++
		switch result {
		case "refused":
			m.stats.UpgradesRefused++
		case "rolled_back":
			m.stats.UpgradesRolledBack++
		}
		m.logf(slog.LevelError, "upgrade "+strings.ReplaceAll(result, "_", " "), "upgrade", u.ID, "binary", u.Binary, "reason", reason)
		m.emit(actNotify{what: notifyStatus, text: err.Error()})
	}
	m.replyAll(&m.upgradeCallers, err)
	if m.stopDeferred {
		m.stopDeferred = false
		m.stop(0)
		return
	}
	m.afterUpgrade()
}

// afterUpgrade lets through what waited for the upgrade: a restart, or
// the queued reload (which waits on for a generation on trial). A stop
// asked for during the upgrade is handled before this, and no upgrade
// begins once stopping: the idle check's !stopping holds here.
func (m *machine) afterUpgrade() {
	if m.restartDue {
		m.restartDue = false
		if m.restartIfIdle() {
			return
		}
	}
	if m.starting == nil && m.trial == nil && m.takeQueued() {
		m.startGen(kindReload, m.queuedAt)
	}
}

// upgradeErr is the verdict of the last upgrade: nil if it succeeded.
func (m *machine) upgradeErr() error {
	u := m.stats.LastUpgrade
	switch {
	case u == nil:
		return ErrNoUpgrade
	case u.Result == "ok":
		return nil
	}
	return &UpgradeError{UpgradeResult: *u}
}

// stop drains every generation; Run ends when the last one has exited.
func (m *machine) stop(caller callerID) {
	m.stopCallers = appendCaller(m.stopCallers, caller)
	if m.stopping {
		return
	}
	if m.upgrading && m.checking {
		// Nothing has changed yet: the check is killed, the upgrade
		// does not happen, and its callers are told why.
		m.logf(slog.LevelWarn, "upgrade cancelled: hitless is stopping", "upgrade", m.upgradeID, "binary", m.upgradeBinary)
		m.emit(actCancelCheck{id: m.upgradeID})
		m.upgrading, m.checking, m.restartDue = false, false, false
	}
	if m.upgrading {
		// The hand-over is under way (the driver feeds only what it
		// read before the exec): the stop is carried across it.
		m.stopDeferred = true
		return
	}
	m.stopping = true
	m.emit(actNotify{what: notifyStopping})
	m.disarm(&m.restart)
	m.pending, m.upgradeQueued = false, false
	m.replyAll(&m.waiting, ErrStopping)
	m.replyAll(&m.queued, ErrStopping)
	m.replyAll(&m.upgradeCallers, ErrStopping)
	for _, g := range m.gens {
		if g.state == Starting || g.state == Serving || g.state == Trial {
			m.drain(g)
		}
	}
	m.starting, m.trial = nil, nil
	m.emit(actRelease{})
}

func (m *machine) finish() {
	m.done = true
	var err error
	switch {
	case m.initErr != nil:
		err = m.initErr
	case m.exitCode != 0:
		err = &ExitError{Code: m.exitCode}
	}
	m.emit(actExit{err: err, callers: m.stopCallers})
	m.stopCallers = nil
}

func (m *machine) arm(kind timerKind, g *mgen, d time.Duration) timerID {
	m.lastTimer++
	id := m.lastTimer
	m.timers[id] = timerRef{kind: kind, gen: g}
	gen := 0
	if g != nil {
		gen = g.id
	}
	m.emit(actArm{id: id, kind: kind, gen: gen, after: d})
	return id
}

func (m *machine) disarm(id *timerID) {
	if *id == 0 {
		return
	}
	delete(m.timers, *id)
	m.emit(actDisarm{id: *id})
	*id = 0
}

func (m *machine) reply(c callerID, err error) {
	if c != 0 {
		m.emit(actReply{caller: c, err: err})
	}
}

func (m *machine) replyAll(cs *[]callerID, err error) {
	for _, c := range *cs {
		m.reply(c, err)
	}
	*cs = nil
}

func appendCaller(cs []callerID, c callerID) []callerID {
	if c == 0 {
		return cs
	}
	return append(cs, c)
}

func (m *machine) view() machineView {
	v := machineView{stopping: m.stopping, upgrading: m.upgrading, upgradeQueued: m.upgradeQueued, reloadQueued: m.pending, stats: m.stats}
	for _, g := range m.gens {
		gv := genView{id: g.id, pid: g.pid, state: g.state, started: g.started, readyAt: g.readyAt, drain: g.drainAt, trialEnds: g.trialEnds}
		if g.watchdog != 0 {
			gv.watchdog = g.wdInterval
		}
		v.gens = append(v.gens, gv)
	}
	return v
}

func lastN(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}
