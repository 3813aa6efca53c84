package machine

import (
	"fmt"
	"log/slog"
	"time"
)

// TimerID names one arming of a timer. Each arming gets a new id, so a
// timer that fires after it was disarmed (its event already queued) is
// recognised as stale and ignored.
type TimerID int

// TimerKind says what a timer is for. It crosses an upgrade by name (see
// state.go).
type TimerKind string

const (
	TimerReady      TimerKind = "ready"       // a starting generation's ready timeout
	TimerReadyDelay TimerKind = "ready_delay" // --ready delay:D: ready once this passes
	TimerDrain      TimerKind = "drain"       // a draining generation's deadline
	TimerRestart    TimerKind = "restart"     // crash-restart backoff
	TimerTrial      TimerKind = "trial"       // the end of a generation's trial
	TimerWatchdog   TimerKind = "watchdog"    // a ready generation's watchdog
	TimerAbort      TimerKind = "abort"       // the grace after the watchdog's SIGABRT
)

// timerRef is an armed timer: what it is for, and whose.
type timerRef struct {
	kind TimerKind
	gen  *mgen // nil for the restart timer
}

// timer: armed timer id fired; stderr holds the last lines its
// generation wrote. A timer disarmed after it fired (its event already on
// its way) is stale, and changes nothing.
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
