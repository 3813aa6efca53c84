package machine

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

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

// startGen starts generation lastID+1, of kind, asked for at askedAt
// (for the reload's duration): the driver answers ActStart with
// EvSpawned or EvSpawnFailed before any other event.
func (m *Machine) startGen(kind StartKind, askedAt time.Time) {
	if kind == KindReload {
		m.emit(ActNotify{What: NotifyReloading})
	}
	m.lastID++
	g := &mgen{id: m.lastID, kind: kind, state: Starting, askedAt: askedAt, wdInterval: m.cfg.Watchdog}
	m.starting = g
	m.emit(ActStart{Gen: g.id, Kind: kind})
}

// spawned: generation gen, the one starting, runs as pid; its ready
// timeout runs from now.
func (m *Machine) spawned(gen, pid int) {
	g := m.starting
	if g == nil || g.id != gen || g.pid != 0 {
		return
	}
	g.pid, g.started = pid, m.now
	m.gens = append(m.gens, g)
	g.ready = m.arm(TimerReady, g, m.cfg.ReadyTimeout)
	if m.cfg.ReadyDelay > 0 {
		g.delay = m.arm(TimerReadyDelay, g, m.cfg.ReadyDelay)
	}
}

// spawnFailed: generation gen, the one starting, could not be started:
// a failure like any other, but with nothing to drain.
func (m *Machine) spawnFailed(gen int, err string) {
	g := m.starting
	if g == nil || g.id != gen || g.pid != 0 {
		return
	}
	g.state = Exited
	m.failed(g, err, nil)
	m.afterFailure()
}

// ready: generation gen said READY=1. Only the generation being started
// can take over: a READY=1 from one that serves, drains, or was stopped
// changes nothing. A reload with a trial window serves beside the
// serving generation first; anything else takes over at once.
func (m *Machine) ready(gen int) {
	g := m.starting
	if g == nil || g.id != gen || g.state != Starting || g.pid <= 0 {
		return
	}
	if g.kind == KindReload && m.serving != nil && m.cfg.Trial > 0 {
		m.beginTrial(g)
		return
	}
	m.promote(g)
}

// promote makes g the serving generation and drains the one before it:
// g was ready (or its ready delay passed), or its trial ended well.
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
		m.emit(ActObserve{What: ObserveReload, Gen: g.id, Duration: m.now.Sub(g.askedAt)})
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
