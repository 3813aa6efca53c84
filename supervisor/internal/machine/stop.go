package machine

import "log/slog"

// signal handles a signal hitless caught: SIGHUP reloads, SIGTERM and
// SIGINT stop (a second SIGINT kills every child at once), SIGUSR1 and
// SIGUSR2 go to every generation that serves.
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

// finishWhenEmpty ends a stop once the last generation has exited. It
// is a rule of every step.
func (m *Machine) finishWhenEmpty() {
	if m.stopping && len(m.gens) == 0 && !m.done {
		m.finish()
	}
}

// finish: every generation has exited after a stop. Run returns why
// hitless stopped (the first child's failure, the last serving one's
// exit status), and the stop callers are answered once the driver has
// released everything.
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
