package machine

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
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
type StartKind int

const (
	KindInitial StartKind = iota // the first child
	KindReload                   // SIGHUP, or Reload
	KindRestart                  // after the serving child died
)

// callerID names someone waiting for a verdict (a Reload or Stop call);
// 0 is nobody (a signal).
type CallerID int

// timerID names one arming of a timer. Each arming gets a new id, so a
// timer that fires after it was disarmed (its event already queued) is
// recognised as stale and ignored.
type TimerID int

type TimerKind int

const (
	TimerReady      TimerKind = iota // a starting generation's ready timeout
	TimerReadyDelay                  // --ready delay:D: ready once this passes
	TimerDrain                       // a draining generation's deadline
	TimerRestart                     // crash-restart backoff
	TimerTrial                       // the end of a generation's trial
	TimerWatchdog                    // a ready generation's watchdog
	TimerAbort                       // the grace after the watchdog's SIGABRT
)

// Config is what the machine needs of the supervisor's Config.
type Config struct {
	ReadyDelay, ReadyTimeout, DrainTimeout time.Duration
	BackoffMin, BackoffMax, StableAfter    time.Duration
	DrainSignal                            Signal
	Trial, Watchdog, WatchdogGrace         time.Duration
}

// Signal is a signal by its name ("SIGTERM"): the machine compares,
// forwards and logs signals, and the driver, which knows the system's
// numbers, turns names into numbers and back.
type Signal string

// The signals the machine acts on or sends itself.
const (
	SIGHUP  Signal = "SIGHUP"  // reload
	SIGINT  Signal = "SIGINT"  // stop; a second one kills
	SIGTERM Signal = "SIGTERM" // stop
	SIGUSR1 Signal = "SIGUSR1" // forwarded to what serves
	SIGUSR2 Signal = "SIGUSR2" // forwarded to what serves
	SIGKILL Signal = "SIGKILL" // at a drain deadline, or after a watchdog's grace
	SIGABRT Signal = "SIGABRT" // when a serving generation's watchdog expires
)

// Exit is how a generation's process ended, as the driver read its wait
// status.
type Exit struct {
	Code   int    // shell style: the exit status, or 128 + the signal's number
	Signal Signal // the signal that ended it; "" if it exited
	Reason string // "exit status 1", "killed by signal SIGKILL"
}

// Events. The driver feeds them in the order they happened.
type (
	Event interface{ isEvent() }

	// EvSignal: a signal reached hitless.
	EvSignal struct{ Sig Signal }
	// EvReload: Reload was called; caller waits for the verdict.
	EvReload struct{ Caller CallerID }
	// EvStop: Stop was called, or Run's context ended (caller 0).
	EvStop struct{ Caller CallerID }
	// EvStatus: Status was called.
	EvStatus struct{ Caller CallerID }
	// EvSpawned and EvSpawnFailed answer ActStart, before any other event.
	EvSpawned     struct{ Gen, PID int }
	EvSpawnFailed struct {
		Gen int
		Err string
	}
	// EvReady: the generation (or a descendant) sent READY=1.
	EvReady struct{ Gen int }
	// EvExited: the generation's process was reaped. stderr holds the
	// last lines it wrote there.
	EvExited struct {
		Gen    int
		Exit   Exit
		Stderr []string
	}
	// EvTimer: an armed timer fired. stderr holds the last lines the
	// timer's generation wrote, if it has one.
	EvTimer struct {
		ID     TimerID
		Stderr []string
	}
	// EvTick: the service manager's watchdog interval passed.
	EvTick struct{}
	// EvPromote and EvRollback end the trial in progress early.
	EvPromote  struct{ Caller CallerID }
	EvRollback struct{ Caller CallerID }
	// EvWatchdog: the generation sent WATCHDOG=1, WATCHDOG=trigger, or
	// WATCHDOG_USEC=usec.
	EvWatchdog struct {
		Gen      int
		Kind     WatchdogKind
		Interval time.Duration
	}
	// EvUpgrade: Upgrade was called, to replace hitless with binary.
	EvUpgrade struct {
		Caller CallerID
		Binary string
	}
	// EvUpgradeChecked answers ActCheckUpgrade: err is why the new binary
	// was refused, "" if it passed.
	EvUpgradeChecked struct {
		ID  int
		Err string
	}
	// EvUpgradeDone: upgrade id is over: the exec failed ("failed"), or
	// this is the image it started, which restored the state ("ok"), or
	// the old image again, after the new one gave up ("rolled_back").
	EvUpgradeDone struct {
		ID             int
		Result, Reason string
		Note           string // for an upgrade that succeeded: see UpgradeResult.Note
	}
	// EvUpgradeResult: a caller asks for the verdict of the last upgrade.
	EvUpgradeResult struct{ Caller CallerID }
)

type WatchdogKind int

const (
	WatchdogPing     WatchdogKind = iota // WATCHDOG=1
	WatchdogTrigger                      // WATCHDOG=trigger: act as if it expired
	WatchdogInterval                     // WATCHDOG_USEC=: a new interval
)

func (EvSignal) isEvent()         {}
func (EvReload) isEvent()         {}
func (EvStop) isEvent()           {}
func (EvStatus) isEvent()         {}
func (EvSpawned) isEvent()        {}
func (EvSpawnFailed) isEvent()    {}
func (EvReady) isEvent()          {}
func (EvExited) isEvent()         {}
func (EvTimer) isEvent()          {}
func (EvTick) isEvent()           {}
func (EvPromote) isEvent()        {}
func (EvRollback) isEvent()       {}
func (EvWatchdog) isEvent()       {}
func (EvUpgrade) isEvent()        {}
func (EvUpgradeChecked) isEvent() {}
func (EvUpgradeDone) isEvent()    {}
func (EvUpgradeResult) isEvent()  {}

// Actions, carried out by the driver in the order given.
type (
	Action interface{ isAction() }

	// ActStart: spawn generation gen; answer with EvSpawned or
	// EvSpawnFailed before anything else.
	ActStart struct {
		Gen  int
		Kind StartKind
	}
	// ActSignal: send sig to the process group of pid.
	ActSignal struct {
		Gen, PID int
		Sig      Signal
	}
	// ActArm: fire EvTimer{id} after the duration. gen is the generation
	// the timer belongs to (0 for none), whose stderr the event carries.
	ActArm struct {
		ID    TimerID
		Kind  TimerKind
		Gen   int
		After time.Duration
	}
	ActDisarm struct{ ID TimerID }
	// ActReply: the verdict for caller: nil, *ReloadError or ErrStopping.
	ActReply struct {
		Caller CallerID
		Err    error
	}
	// ActStatus: answer caller with the machine's view.
	ActStatus struct {
		Caller CallerID
		View   View
	}
	// ActNotify: tell the service manager.
	ActNotify struct {
		What NotifyKind
		Text string
	}
	ActLog struct {
		Level slog.Level
		Msg   string
		Attrs []any
	}
	// ActForget: the generation exited; release what the driver holds
	// for it.
	ActForget struct{ Gen int }
	// ActRelease: a stop began; close hitless's copies of the sockets, so
	// that late clients are refused instead of queued behind nobody.
	ActRelease struct{}
	// ActExit: every generation has exited; Run returns err. The stop
	// callers get their reply once hitless has released everything.
	ActExit struct {
		Err     error
		Callers []CallerID
	}
	// ActObserve: a measurement for the metrics.
	ActObserve struct {
		What     ObserveKind
		Duration time.Duration
	}
	// ActCheckUpgrade: run the new binary's check; answer with
	// EvUpgradeChecked.
	ActCheckUpgrade struct {
		ID     int
		Binary string
	}
	// ActExecUpgrade: replace this image with the checked binary, handing
	// the state over; if that fails, answer with EvUpgradeDone. The
	// callers' answer comes from the new image.
	ActExecUpgrade struct{ ID int }
	// ActCancelCheck: kill the check of upgrade id; its EvUpgradeChecked
	// will be stale.
	ActCancelCheck struct{ ID int }
)

type ObserveKind int

const (
	ObserveReload ObserveKind = iota // from the reload's request to the new generation serving
	ObserveDrain                     // from the drain signal to the exit
)

func (ActStart) isAction()        {}
func (ActSignal) isAction()       {}
func (ActArm) isAction()          {}
func (ActDisarm) isAction()       {}
func (ActReply) isAction()        {}
func (ActStatus) isAction()       {}
func (ActNotify) isAction()       {}
func (ActLog) isAction()          {}
func (ActForget) isAction()       {}
func (ActRelease) isAction()      {}
func (ActExit) isAction()         {}
func (ActObserve) isAction()      {}
func (ActCheckUpgrade) isAction() {}
func (ActExecUpgrade) isAction()  {}
func (ActCancelCheck) isAction()  {}

type NotifyKind int

const (
	NotifyReady     NotifyKind = iota // READY=1, with STATUS=text
	NotifyReloading                   // RELOADING=1 and MONOTONIC_USEC
	NotifyStopping                    // STOPPING=1
	NotifyStatus                      // STATUS=text
	NotifyWatchdog                    // WATCHDOG=1
)

// View is what the machine knows for Status.
type View struct {
	Gens                               []GenView
	Stopping, Upgrading, UpgradeQueued bool
	ReloadQueued                       bool
	Stats                              Stats
}

// GenView is a generation in View.
type GenView struct {
	ID, PID                   int
	State                     State
	Started, ReadyAt, DrainAt time.Time
	TrialEnds                 time.Time
	Watchdog                  time.Duration // 0 when not enforced
}

// mgen is one generation as the machine sees it.
type mgen struct {
	id      int
	kind    StartKind
	pid     int // 0 until spawned
	state   State
	started time.Time
	readyAt time.Time
	drainAt time.Time

	askedAt time.Time // when the reload that started it was asked for

	ready, delay, drain TimerID // armed timers; 0 when none
	drainSent           bool    // the drain signal went out (once, ever)

	trial     TimerID // the end of its trial
	trialEnds time.Time

	wdInterval time.Duration // enforced once ready; 0 for none
	watchdog   TimerID
	abort      TimerID // SIGKILL after the watchdog's SIGABRT
	wdFired    bool    // the watchdog expired: it is being killed
}

type timerRef struct {
	kind TimerKind
	gen  *mgen // nil for the restart timer
}

// Machine is the supervisor's state. The zero value is not usable; see
// New.
type Machine struct {
	cfg Config
	now time.Time
	out []Action

	gens     []*mgen // every generation not yet exited, oldest first
	lastID   int
	serving  *mgen
	starting *mgen
	trial    *mgen // ready, serving beside serving until its trial ends

	pending  bool       // one more reload queued behind the one in flight
	queuedAt time.Time  // when the queued reload was first asked for
	waiting  []CallerID // callers of the reload in flight
	queued   []CallerID // callers of the queued reload

	stopping    bool
	stopCallers []CallerID
	done        bool

	restart  TimerID // armed restart timer
	backoff  time.Duration
	exitCode int
	initErr  error

	timers    map[TimerID]timerRef // armed
	lastTimer TimerID

	// The upgrade of hitless itself (see upgrade.go in package upgrade).
	upgrading      bool
	checking       bool // the upgrade's check runs: a stop cancels it
	upgradeID      int  // the last one begun
	upgradeBinary  string
	upgradeCallers []CallerID
	upgradeQueued  bool // asked for during a reload: begins after it
	stopDeferred   bool // a stop asked for during the upgrade
	restartDue     bool // the restart timer fired during the upgrade

	stats Stats
}

func New(cfg Config) *Machine {
	return &Machine{cfg: cfg, backoff: cfg.BackoffMin, timers: make(map[TimerID]timerRef)}
}

// Begin starts the first generation. It is the machine's first step.
func (m *Machine) Begin(now time.Time) []Action {
	m.now, m.out = now, nil
	m.startGen(KindInitial, now)
	return m.out
}

// Step applies one event and returns what the driver must do.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	m.now, m.out = now, nil
	if m.done {
		return nil
	}
	switch ev := ev.(type) {
	case EvSignal:
		m.signal(ev.Sig)
	case EvReload:
		m.reload(ev.Caller)
	case EvStop:
		m.stop(ev.Caller)
	case EvStatus:
		m.emit(ActStatus{Caller: ev.Caller, View: m.view()})
	case EvTick:
		// Only a service that serves is alive to the service manager.
		if m.serving != nil {
			m.emit(ActNotify{What: NotifyWatchdog})
		}
	case EvSpawned:
		if g := m.starting; g != nil && g.id == ev.Gen && g.pid == 0 {
			m.spawned(g, ev.PID)
		}
	case EvSpawnFailed:
		if g := m.starting; g != nil && g.id == ev.Gen && g.pid == 0 {
			g.state = Exited
			m.failed(g, ev.Err, nil)
			m.afterFailure()
		}
	case EvReady:
		// Only the generation being started can take over: a READY=1
		// from one that serves, drains, or was stopped changes nothing.
		if g := m.starting; g != nil && g.id == ev.Gen && g.state == Starting && g.pid > 0 {
			m.ready(g)
		}
	case EvPromote:
		if g := m.trial; g != nil {
			m.logf(slog.LevelInfo, "trial ended early: promote", "generation", g.id, "pid", g.pid)
			m.promote(g)
			m.reply(ev.Caller, nil)
		} else {
			m.reply(ev.Caller, ErrNoTrial)
		}
	case EvRollback:
		if g := m.trial; g != nil {
			m.rollback(g, "asked by hitless rollback", nil)
			m.reply(ev.Caller, nil)
		} else {
			m.reply(ev.Caller, ErrNoTrial)
		}
	case EvWatchdog:
		if g := m.find(ev.Gen); g != nil {
			m.watchdogEvent(g, ev)
		}
	case EvUpgrade:
		m.upgrade(ev.Caller, ev.Binary)
	case EvUpgradeChecked:
		if m.upgrading && m.checking && ev.ID == m.upgradeID {
			m.checking = false
			if ev.Err != "" {
				m.upgradeDone("refused", ev.Err, "")
			} else {
				m.logf(slog.LevelInfo, "upgrade: the new binary passed its check; executing it", "upgrade", ev.ID, "binary", m.upgradeBinary)
				m.emit(ActExecUpgrade{ID: ev.ID})
			}
		}
	case EvUpgradeDone:
		if m.upgrading && ev.ID == m.upgradeID {
			m.upgradeDone(ev.Result, ev.Reason, ev.Note)
		}
	case EvUpgradeResult:
		m.reply(ev.Caller, m.upgradeErr())
	case EvTimer:
		m.timer(ev.ID, ev.Stderr)
	case EvExited:
		if g := m.find(ev.Gen); g != nil {
			m.exited(g, ev.Exit, ev.Stderr)
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

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

func (m *Machine) logf(level slog.Level, msg string, attrs ...any) {
	m.emit(ActLog{Level: level, Msg: msg, Attrs: attrs})
}

func (m *Machine) find(id int) *mgen {
	for _, g := range m.gens {
		if g.id == id {
			return g
		}
	}
	return nil
}

func (m *Machine) signal(sig Signal) {
	switch sig {
	case SIGHUP:
		m.logf(slog.LevelInfo, "SIGHUP: reload")
		m.reload(0)
	case SIGINT, SIGTERM:
		if sig == SIGINT && m.stopping {
			m.logf(slog.LevelWarn, "second SIGINT: killing every child now")
			for _, g := range m.gens {
				m.emit(ActSignal{Gen: g.id, PID: g.pid, Sig: SIGKILL})
			}
			return
		}
		m.logf(slog.LevelInfo, "stop", "signal", string(sig))
		m.stop(0)
	case SIGUSR1, SIGUSR2:
		// To every generation that serves: one on trial writes logs too
		// (logrotate's USR1), and is the same program as the one it
		// would replace.
		for _, g := range []*mgen{m.serving, m.trial} {
			if g != nil {
				m.logf(slog.LevelInfo, "forwarding signal", "signal", string(sig), "generation", g.id, "pid", g.pid)
				m.emit(ActSignal{Gen: g.id, PID: g.pid, Sig: sig})
			}
		}
	}
}

// reload starts a new generation now, or queues one behind the one in
// flight. Requests that arrive while one is queued join it: a burst of
// reloads ends in at most two starts, never in aborting the one running.
func (m *Machine) reload(caller CallerID) {
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
		m.startGen(KindReload, m.now)
	}
}

func (m *Machine) startGen(kind StartKind, askedAt time.Time) {
	if kind == KindReload {
		m.emit(ActNotify{What: NotifyReloading})
	}
	m.lastID++
	g := &mgen{id: m.lastID, kind: kind, state: Starting, askedAt: askedAt, wdInterval: m.cfg.Watchdog}
	m.starting = g
	m.emit(ActStart{Gen: g.id, Kind: kind})
}

func (m *Machine) spawned(g *mgen, pid int) {
	g.pid, g.started = pid, m.now
	m.gens = append(m.gens, g)
	g.ready = m.arm(TimerReady, g, m.cfg.ReadyTimeout)
	if m.cfg.ReadyDelay > 0 {
		g.delay = m.arm(TimerReadyDelay, g, m.cfg.ReadyDelay)
	}
}

// ready: g said READY=1 (or its delay passed). A reload with a trial
// window serves beside the serving generation first; anything else takes
// over at once.
func (m *Machine) ready(g *mgen) {
	if g.kind == KindReload && m.serving != nil && m.cfg.Trial > 0 {
		m.beginTrial(g)
		return
	}
	m.promote(g)
}

// beginTrial lets g serve beside the serving generation, which is not
// signalled, until the trial ends: if g fails meanwhile, nothing was
// lost, and the old one simply goes on.
func (m *Machine) beginTrial(g *mgen) {
	g.readyAt = m.now
	m.disarm(&g.ready)
	m.disarm(&g.delay)
	g.state, m.trial, m.starting = Trial, g, nil
	g.trialEnds = m.now.Add(m.cfg.Trial)
	g.trial = m.arm(TimerTrial, g, m.cfg.Trial)
	m.armWatchdog(g)
	old := m.serving
	m.logf(slog.LevelInfo, "trial", "generation", g.id, "pid", g.pid, "ready_after", m.now.Sub(g.started).Round(time.Millisecond),
		"trial", m.cfg.Trial, "beside_generation", old.id)
	m.emit(ActNotify{What: NotifyStatus, Text: fmt.Sprintf("trial: generation %d (pid %d) serves beside generation %d (pid %d) for %v",
		g.id, g.pid, old.id, old.pid, m.cfg.Trial)})
}

// rollback ends g's trial with a failure: g is drained, the serving
// generation, never signalled, goes on. g is on trial, or has just exited
// (with every timer of it disarmed); sendDrain disarms its trial and its
// watchdog.
func (m *Machine) rollback(g *mgen, reason string, stderr []string) {
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
func (m *Machine) promote(g *mgen) {
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
	case KindInitial:
		m.emit(ActNotify{What: NotifyReady, Text: fmt.Sprintf("serving: generation %d (pid %d)", g.id, g.pid)})
	case KindReload:
		m.stats.ReloadsOK++
		m.emit(ActObserve{What: ObserveReload, Duration: m.now.Sub(g.askedAt)})
		m.emit(ActNotify{What: NotifyReady, Text: fmt.Sprintf("reload succeeded: generation %d (pid %d) serving", g.id, g.pid)})
	case KindRestart:
		m.emit(ActNotify{What: NotifyStatus, Text: fmt.Sprintf("restarted: generation %d (pid %d) serving", g.id, g.pid)})
	}
	if old != nil {
		m.drain(old)
	}
	m.replyAll(&m.waiting, nil)
	if m.takeQueued() {
		m.startGen(KindReload, m.queuedAt)
	}
}

// drain tells g to finish its work and exit, and arms its deadline.
func (m *Machine) drain(g *mgen) {
	m.logf(slog.LevelInfo, "draining", "generation", g.id, "pid", g.pid, "signal", string(m.cfg.DrainSignal), "timeout", m.cfg.DrainTimeout)
	m.sendDrain(g, Draining)
}

// sendDrain sends g the drain signal and arms its deadline, once in g's
// life: a second drain signal would read as "cut the drain short" to
// childproc, and a second deadline would outlive the first.
func (m *Machine) sendDrain(g *mgen, state State) {
	g.state = state
	m.disarm(&g.ready)
	m.disarm(&g.delay)
	m.disarm(&g.trial)
	m.disarm(&g.watchdog)
	if g.drainSent {
		return
	}
	g.drainSent, g.drainAt = true, m.now
	m.emit(ActSignal{Gen: g.id, PID: g.pid, Sig: m.cfg.DrainSignal})
	g.drain = m.arm(TimerDrain, g, m.cfg.DrainTimeout)
}

// failed records that g did not take over and stops what is left of it.
func (m *Machine) failed(g *mgen, reason string, stderr []string) {
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
	msg := map[StartKind]string{KindInitial: "start failed", KindReload: "reload failed", KindRestart: "restart failed"}[g.kind]
	m.reloadFailed(g, err, msg, reason, stderr)
	if g.kind == KindInitial && !m.stopping {
		// The first child goes through the same gate; failing it ends hitless.
		m.initErr = fmt.Errorf("first child: %w", err)
		m.stop(0)
	}
}

// reloadFailed records err, why g did not take over, logs it as msg
// ("reload failed", "reload rolled back", ...), tells the service manager
// for a reload or a restart, and answers the callers of the reload in
// flight.
func (m *Machine) reloadFailed(g *mgen, err *ReloadError, msg, reason string, stderr []string) {
	m.stats.LastFailure, m.stats.LastFailureAt = err.Error(), m.now
	m.logf(slog.LevelError, msg, "generation", g.id, "pid", g.pid, "reason", reason, "stderr", strings.Join(stderr, " | "))
	switch g.kind {
	case KindReload:
		// systemd has no "reload failed" message: READY=1 ends the
		// reload job, and STATUS= says how it went.
		m.emit(ActNotify{What: NotifyReady, Text: fmt.Sprintf("%s: %s; %s", msg, err, m.stillServing())})
	case KindRestart:
		m.emit(ActNotify{What: NotifyStatus, Text: fmt.Sprintf("%s: %s", msg, err)})
	}
	m.replyAll(&m.waiting, err)
}

// stillServing says what serves after a reload failed.
func (m *Machine) stillServing() string {
	if s := m.serving; s != nil {
		return fmt.Sprintf("generation %d (pid %d) still serving", s.id, s.pid)
	}
	return "nothing serving"
}

// afterFailure starts what must follow a failed start: the queued reload,
// or a restart if nothing serves.
func (m *Machine) afterFailure() {
	if m.takeQueued() {
		m.startGen(KindReload, m.queuedAt)
		return
	}
	if m.idle() {
		m.scheduleRestart()
	}
}

// idle reports whether nothing serves, starts or is on trial while no
// stop is under way: what calls for a restart.
func (m *Machine) idle() bool {
	return m.serving == nil && m.starting == nil && m.trial == nil && !m.stopping
}

// restartIfIdle starts a restart generation if m is idle, and reports
// whether it did.
func (m *Machine) restartIfIdle() bool {
	if !m.idle() {
		return false
	}
	m.stats.Restarts++
	m.startGen(KindRestart, m.now)
	return true
}

// takeQueued moves the queued reload's callers to the front; false when
// none is queued, or when it waits for the upgrade under way.
func (m *Machine) takeQueued() bool {
	if !m.pending || m.stopping || m.upgrading {
		return false
	}
	m.pending = false
	m.waiting, m.queued = m.queued, nil
	return true
}

func (m *Machine) scheduleRestart() {
	d := m.backoff
	m.backoff = min(2*m.backoff, m.cfg.BackoffMax)
	m.logf(slog.LevelWarn, "no serving child: restarting", "in", d)
	m.restart = m.arm(TimerRestart, nil, d)
}

func (m *Machine) timer(id TimerID, stderr []string) {
	ref, ok := m.timers[id]
	if !ok {
		return // disarmed after it fired: stale
	}
	delete(m.timers, id)
	g := ref.gen
	switch ref.kind {
	case TimerReady:
		g.ready = 0
		m.failed(g, fmt.Sprintf("not ready within %v", m.cfg.ReadyTimeout), stderr)
		m.afterFailure()
	case TimerReadyDelay:
		g.delay = 0
		m.promote(g)
	case TimerDrain:
		g.drain = 0
		m.logf(slog.LevelWarn, "drain timeout: killing process group", "generation", g.id, "pid", g.pid, "timeout", m.cfg.DrainTimeout)
		m.emit(ActSignal{Gen: g.id, PID: g.pid, Sig: SIGKILL})
	case TimerTrial:
		g.trial = 0
		m.logf(slog.LevelInfo, "trial passed", "generation", g.id, "pid", g.pid, "trial", m.cfg.Trial)
		m.promote(g)
	case TimerWatchdog:
		g.watchdog = 0
		m.watchdogExpired(g, fmt.Sprintf("no WATCHDOG=1 within %v", g.wdInterval), stderr)
	case TimerAbort:
		g.abort = 0
		m.logf(slog.LevelWarn, "watchdog: killing process group", "generation", g.id, "pid", g.pid, "grace", m.cfg.WatchdogGrace)
		m.emit(ActSignal{Gen: g.id, PID: g.pid, Sig: SIGKILL})
	case TimerRestart:
		m.restart = 0
		if m.upgrading {
			m.restartDue = true
			return
		}
		m.restartIfIdle()
	}
}

func (m *Machine) exited(g *mgen, exit Exit, stderr []string) {
	for i, x := range m.gens {
		if x == g {
			m.gens = append(m.gens[:i], m.gens[i+1:]...)
			break
		}
	}
	was := g.state
	g.state = Exited
	for _, t := range []*TimerID{&g.ready, &g.delay, &g.drain, &g.trial, &g.watchdog, &g.abort} {
		m.disarm(t)
	}
	m.emit(ActForget{Gen: g.id})
	reason := exit.Reason
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
		m.exitCode = m.code(g, exit)
		if m.stopping {
			m.logf(slog.LevelInfo, "stopped", "generation", g.id, "pid", g.pid, "status", reason, "took", took)
			m.emit(ActObserve{What: ObserveDrain, Duration: m.now.Sub(g.drainAt)})
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
		m.emit(ActObserve{What: ObserveDrain, Duration: m.now.Sub(g.drainAt)})
	case was == Failed:
		m.logf(slog.LevelInfo, "failed generation drained", "generation", g.id, "pid", g.pid, "status", reason, "took", took)
	}
}

// code is the exit status hitless reports for the serving generation: 0
// when it exited 0 or ended by the drain signal hitless sent it, which is
// how a server without a handler for that signal stops; else its own
// status, shell style.
func (m *Machine) code(g *mgen, exit Exit) int {
	if exit.Signal != "" && g.drainSent && exit.Signal == m.cfg.DrainSignal {
		return 0
	}
	return exit.Code
}

// watchdogEvent handles what g sent about its watchdog.
func (m *Machine) watchdogEvent(g *mgen, ev EvWatchdog) {
	if g.wdFired || g.drainSent {
		return
	}
	live := g.state == Serving || g.state == Trial // enforced once ready
	switch ev.Kind {
	case WatchdogPing:
		if live && g.watchdog != 0 {
			m.armWatchdog(g)
		}
	case WatchdogInterval:
		// As under systemd, the child may change its own interval.
		g.wdInterval = ev.Interval
		if live {
			m.armWatchdog(g)
		}
	case WatchdogTrigger:
		if live {
			m.disarm(&g.watchdog)
			m.watchdogExpired(g, "it sent WATCHDOG=trigger", nil)
		}
	}
}

// armWatchdog (re)starts g's watchdog, if it has one.
func (m *Machine) armWatchdog(g *mgen) {
	m.disarm(&g.watchdog)
	if g.wdInterval > 0 && !g.wdFired {
		g.watchdog = m.arm(TimerWatchdog, g, g.wdInterval)
	}
}

// watchdogExpired: g stopped proving it is alive. On trial, that is a
// rollback; serving, it gets SIGABRT (a Go program prints every
// goroutine's stack) and SIGKILL after the grace, and its exit is a crash.
func (m *Machine) watchdogExpired(g *mgen, why string, stderr []string) {
	if g == m.trial {
		m.rollback(g, "its watchdog expired: "+why, stderr)
		return
	}
	g.wdFired = true
	m.stats.WatchdogKills++
	m.logf(slog.LevelError, "watchdog expired: aborting", "generation", g.id, "pid", g.pid, "reason", why, "grace", m.cfg.WatchdogGrace)
	m.emit(ActSignal{Gen: g.id, PID: g.pid, Sig: SIGABRT})
	g.abort = m.arm(TimerAbort, g, m.cfg.WatchdogGrace)
}

// upgrade begins replacing hitless's own binary, once no generation is
// starting; callers asking for the same binary meanwhile join it, and
// one asking for another is refused.
func (m *Machine) upgrade(caller CallerID, binary string) {
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

func (m *Machine) beginUpgrade() {
	m.upgrading, m.checking = true, true
	m.upgradeID++
	m.logf(slog.LevelInfo, "upgrade: checking the new binary", "upgrade", m.upgradeID, "binary", m.upgradeBinary)
	m.emit(ActCheckUpgrade{ID: m.upgradeID, Binary: m.upgradeBinary})
}

// upgradeDone records the verdict of the upgrade in flight, answers its
// callers, and lets through what waited for it.
func (m *Machine) upgradeDone(result, reason, note string) {
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
		m.emit(ActNotify{What: NotifyStatus, Text: fmt.Sprintf("upgraded in place to %s; children untouched", u.Binary)})
	} else {
		m.stats.UpgradesFailed++
		switch result {
		case "refused":
			m.stats.UpgradesRefused++
		case "rolled_back":
			m.stats.UpgradesRolledBack++
		}
		m.logf(slog.LevelError, "upgrade "+strings.ReplaceAll(result, "_", " "), "upgrade", u.ID, "binary", u.Binary, "reason", reason)
		m.emit(ActNotify{What: NotifyStatus, Text: err.Error()})
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
func (m *Machine) afterUpgrade() {
	if m.restartDue {
		m.restartDue = false
		if m.restartIfIdle() {
			return
		}
	}
	if m.starting == nil && m.trial == nil && m.takeQueued() {
		m.startGen(KindReload, m.queuedAt)
	}
}

// upgradeErr is the verdict of the last upgrade: nil if it succeeded.
func (m *Machine) upgradeErr() error {
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
func (m *Machine) stop(caller CallerID) {
	m.stopCallers = appendCaller(m.stopCallers, caller)
	if m.stopping {
		return
	}
	if m.upgrading && m.checking {
		// Nothing has changed yet: the check is killed, the upgrade
		// does not happen, and its callers are told why.
		m.logf(slog.LevelWarn, "upgrade cancelled: hitless is stopping", "upgrade", m.upgradeID, "binary", m.upgradeBinary)
		m.emit(ActCancelCheck{ID: m.upgradeID})
		m.upgrading, m.checking, m.restartDue = false, false, false
	}
	if m.upgrading {
		// The hand-over is under way (the driver feeds only what it
		// read before the exec): the stop is carried across it.
		m.stopDeferred = true
		return
	}
	m.stopping = true
	m.emit(ActNotify{What: NotifyStopping})
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
	m.emit(ActRelease{})
}

func (m *Machine) finish() {
	m.done = true
	var err error
	switch {
	case m.initErr != nil:
		err = m.initErr
	case m.exitCode != 0:
		err = &ExitError{Code: m.exitCode}
	}
	m.emit(ActExit{Err: err, Callers: m.stopCallers})
	m.stopCallers = nil
}

func (m *Machine) arm(kind TimerKind, g *mgen, d time.Duration) TimerID {
	m.lastTimer++
	id := m.lastTimer
	m.timers[id] = timerRef{kind: kind, gen: g}
	gen := 0
	if g != nil {
		gen = g.id
	}
	m.emit(ActArm{ID: id, Kind: kind, Gen: gen, After: d})
	return id
}

func (m *Machine) disarm(id *TimerID) {
	if *id == 0 {
		return
	}
	delete(m.timers, *id)
	m.emit(ActDisarm{ID: *id})
	*id = 0
}

func (m *Machine) reply(c CallerID, err error) {
	if c != 0 {
		m.emit(ActReply{Caller: c, Err: err})
	}
}

func (m *Machine) replyAll(cs *[]CallerID, err error) {
	for _, c := range *cs {
		m.reply(c, err)
	}
	*cs = nil
}

func appendCaller(cs []CallerID, c CallerID) []CallerID {
	if c == 0 {
		return cs
	}
	return append(cs, c)
}

func (m *Machine) view() View {
	v := View{Stopping: m.stopping, Upgrading: m.upgrading, UpgradeQueued: m.upgradeQueued, ReloadQueued: m.pending, Stats: m.stats}
	for _, g := range m.gens {
		gv := GenView{ID: g.id, PID: g.pid, State: g.state, Started: g.started, ReadyAt: g.readyAt, DrainAt: g.drainAt, TrialEnds: g.trialEnds}
		if g.watchdog != 0 {
			gv.Watchdog = g.wdInterval
		}
		v.Gens = append(v.Gens, gv)
	}
	return v
}

func lastN(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}
