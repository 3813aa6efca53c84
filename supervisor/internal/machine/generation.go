package machine

import (
	"log/slog"
	"strings"
	"time"
)

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

// StartKind says why a generation was started, which decides what its
// success or failure means and what the service manager is told.
// It crosses an upgrade by name (see state.go).
type StartKind string

const (
	KindInitial StartKind = "initial" // the first child
	KindReload  StartKind = "reload"  // SIGHUP, or Reload
	KindRestart StartKind = "restart" // after the serving child died
)

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

func (m *Machine) scheduleRestart() {
	d := m.backoff
	m.backoff = min(2*m.backoff, m.cfg.BackoffMax)
	m.logf(slog.LevelWarn, "no serving child: restarting", "in", d)
	m.restart = m.arm(TimerRestart, nil, d)
}

// exited: generation gen's process was reaped. What it means depends on
// what the generation was: a failed start, a failed trial, a crash of
// the serving one (a restart follows, after a backoff), or the end of a
// drain.
func (m *Machine) exited(gen int, exit Exit, stderr []string) {
	g := m.find(gen)
	if g == nil {
		return
	}
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
		m.servingExited(g, exit, reason, stderr)
	case was == Draining && g.readyAt.IsZero():
		m.logf(slog.LevelInfo, "stopped before ready", "generation", g.id, "pid", g.pid, "status", reason, "took", took)
	case was == Draining:
		m.logf(slog.LevelInfo, "drained", "generation", g.id, "pid", g.pid, "status", reason, "took", took)
		m.emit(ActObserve{What: ObserveDrain, Gen: g.id, Duration: m.now.Sub(g.drainAt)})
	case was == Failed:
		m.logf(slog.LevelInfo, "failed generation drained", "generation", g.id, "pid", g.pid, "status", reason, "took", took)
	}
}

// servingExited: g, the serving generation, exited, as asked by a stop,
// or of its own accord: then the generation on trial takes over, or a
// restart follows after the backoff (unless a reload is starting one).
func (m *Machine) servingExited(g *mgen, exit Exit, reason string, stderr []string) {
	m.serving = nil
	m.exitCode = m.code(g, exit)
	if m.stopping {
		m.logf(slog.LevelInfo, "stopped", "generation", g.id, "pid", g.pid, "status", reason, "took", m.now.Sub(g.drainAt).Round(time.Millisecond))
		m.emit(ActObserve{What: ObserveDrain, Gen: g.id, Duration: m.now.Sub(g.drainAt)})
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

// Stopping reports whether a stop is under way: every generation drains.
func (m *Machine) Stopping() bool { return m.stopping }

// Settled reports whether a generation serves while none starts and no
// stop or upgrade is under way: nothing is forked until something is
// asked for, or the serving generation dies.
func (m *Machine) Settled() bool {
	return m.serving != nil && m.starting == nil && !m.stopping && !m.upgrading
}

// Serving is the id of the generation in state Serving, 0 if none: during
// a stop every generation drains, the one that served included.
func (m *Machine) Serving() int {
	for _, g := range m.gens {
		if g.state == Serving {
			return g.id
		}
	}
	return 0
}
