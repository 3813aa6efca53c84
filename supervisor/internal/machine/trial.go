package machine

import (
	"fmt"
	"log/slog"
	"time"
)

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

// promoteAsked ends the trial in progress early, with a success
// (hitless promote).
func (m *Machine) promoteAsked(caller CallerID) {
	g := m.trial
	if g == nil {
		m.reply(caller, ErrNoTrial)
		return
	}
	m.logf(slog.LevelInfo, "trial ended early: promote", "generation", g.id, "pid", g.pid)
	m.promote(g)
	m.reply(caller, nil)
}

// rollbackAsked ends the trial in progress early, with a failure (hitless
// rollback).
func (m *Machine) rollbackAsked(caller CallerID) {
	g := m.trial
	if g == nil {
		m.reply(caller, ErrNoTrial)
		return
	}
	m.rollback(g, "asked by hitless rollback", nil)
	m.reply(caller, nil)
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
