package machine

import (
	"log/slog"
	"slices"
	"time"
)

// Config is what the machine needs of the supervisor's Config.
type Config struct {
	ReadyDelay, ReadyTimeout, DrainTimeout time.Duration
	BackoffMin, BackoffMax, StableAfter    time.Duration
	DrainSignal                            Signal
	Trial, Watchdog, WatchdogGrace         time.Duration
}

// Machine is the supervisor's state. The zero value is not usable; see
// New. Everything in it crosses an upgrade's execve as a Snapshot.
type Machine struct {
	cfg Config
	now time.Time // of the event being stepped
	out []Action  // the actions of the step so far

	// The generations.
	gens     []*mgen // every generation not yet exited, oldest first
	lastID   int     // of the last generation started
	serving  *mgen   // the current generation
	starting *mgen   // being started: spawned, not yet ready
	trial    *mgen   // ready, serving beside serving until its trial ends

	// The reloads: the one in flight (starting or trial) and the one
	// queued behind it, which every later request joins.
	pending  bool       // one more reload queued behind the one in flight
	queuedAt time.Time  // when the queued reload was first asked for
	waiting  []CallerID // callers of the reload in flight
	queued   []CallerID // callers of the queued reload

	// The stop.
	stopping    bool       // every generation was told to drain
	stopCallers []CallerID // answered once the last generation exited
	done        bool       // the last generation exited: ActExit went out
	exitCode    int        // of the last serving generation, shell style
	initErr     error      // why the first generation failed, which ends hitless

	// Crash restarts.
	restart TimerID       // armed restart timer; 0 when none
	backoff time.Duration // the next restart's delay

	timers    map[TimerID]timerRef // armed
	lastTimer TimerID              // of the last timer armed

	// The upgrade of hitless itself (see package upgrade).
	upgrading      bool // checking the new binary, or handing over to it
	checking       bool // the upgrade's check runs: a stop cancels it
	upgradeID      int  // the last one begun
	upgradeBinary  string
	upgradeCallers []CallerID
	upgradeQueued  bool // asked for during a reload: begins after it
	stopDeferred   bool // a stop asked for during the hand-over
	restartDue     bool // the restart timer fired during the upgrade

	stats Stats
}

// New returns a machine that has started nothing: Begin is its first
// step.
func New(cfg Config) *Machine {
	return &Machine{cfg: cfg, backoff: cfg.BackoffMin, timers: make(map[TimerID]timerRef)}
}

// Begin starts the first generation. It is the machine's first step.
func (m *Machine) Begin(now time.Time) []Action {
	m.now, m.out = now, nil
	m.startGen(KindInitial, now)
	return m.out
}

// Step applies one event, at now, and returns what the driver must do, in
// order. The switch is the transition table: each event's rules are in
// the method it names (its complexity is the number of events, nothing
// more); then come the rules of every step.
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
		m.tick()
	case EvSpawned:
		m.spawned(ev.Gen, ev.PID)
	case EvSpawnFailed:
		m.spawnFailed(ev.Gen, ev.Err)
	case EvReady:
		m.ready(ev.Gen)
	case EvPromote:
		m.promoteAsked(ev.Caller)
	case EvRollback:
		m.rollbackAsked(ev.Caller)
	case EvWatchdog:
		m.watchdogEvent(ev)
	case EvTimer:
		m.timer(ev.ID, ev.Stderr)
	case EvExited:
		m.exited(ev.Gen, ev.Exit, ev.Stderr)
	case EvUpgrade:
		m.upgrade(ev.Caller, ev.Binary)
	case EvUpgradeChecked:
		m.upgradeChecked(ev.ID, ev.Err)
	case EvUpgradeDone:
		m.upgradeEnded(ev.ID, ev.Result, ev.Reason, ev.Note)
	case EvUpgradeResult:
		m.reply(ev.Caller, m.upgradeErr())
	case EvCancel:
		m.cancel(ev.Caller)
	}
	// The rules of every step, whatever the event was.
	m.upgradeWhenFree()
	m.finishWhenEmpty()
	return m.out
}

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

func (m *Machine) logf(level slog.Level, msg string, attrs ...any) {
	m.emit(ActLog{Level: level, Msg: msg, Attrs: attrs})
}

// find returns the generation id, nil when it has exited (or never was).
func (m *Machine) find(id int) *mgen {
	for _, g := range m.gens {
		if g.id == id {
			return g
		}
	}
	return nil
}

// reply answers caller c; 0 is nobody (a signal).
func (m *Machine) reply(c CallerID, err error) {
	if c != 0 {
		m.emit(ActReply{Caller: c, Err: err})
	}
}

// replyAll answers every caller in *cs, and forgets them.
func (m *Machine) replyAll(cs *[]CallerID, err error) {
	for _, c := range *cs {
		m.reply(c, err)
	}
	*cs = nil
}

// cancel forgets caller c, who gave up waiting for a verdict: whatever
// it asked for goes on, and no one else can take its place.
func (m *Machine) cancel(c CallerID) {
	for _, cs := range []*[]CallerID{&m.waiting, &m.queued, &m.upgradeCallers} {
		*cs = slices.DeleteFunc(*cs, func(x CallerID) bool { return x == c })
	}
}

func appendCaller(cs []CallerID, c CallerID) []CallerID {
	if c == 0 {
		return cs
	}
	return append(cs, c)
}

func lastN(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}
