package machine

import "log/slog"

// tick: the service manager's watchdog interval passed. Only a service
// that serves is alive to it.
func (m *Machine) tick() {
	if m.serving != nil {
		m.emit(ActNotify{What: NotifyWatchdog})
	}
}

// watchdogEvent handles what a generation sent about its watchdog. A
// generation's own watchdog is enforced once it is ready, and ends when
// it expired or was told to drain.
func (m *Machine) watchdogEvent(ev EvWatchdog) {
	g := m.find(ev.Gen)
	if g == nil || g.wdFired || g.drainSent {
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
