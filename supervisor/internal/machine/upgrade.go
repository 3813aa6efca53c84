package machine

import (
	"fmt"
	"log/slog"
	"strings"
)

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

// upgradeWhenFree begins the queued upgrade once nothing holds it back:
// no generation starting, no upgrade under way, no stop. A generation on
// trial goes across the upgrade with its deadline; a starting one is
// waited for. It is a rule of every step.
func (m *Machine) upgradeWhenFree() {
	if m.upgradeQueued && !m.upgrading && !m.stopping && m.starting == nil {
		m.upgradeQueued = false
		m.beginUpgrade()
	}
}

// beginUpgrade has the driver check the new binary (ActCheckUpgrade).
func (m *Machine) beginUpgrade() {
	m.upgrading, m.checking = true, true
	m.upgradeID++
	m.logf(slog.LevelInfo, "upgrade: checking the new binary", "upgrade", m.upgradeID, "binary", m.upgradeBinary)
	m.emit(ActCheckUpgrade{ID: m.upgradeID, Binary: m.upgradeBinary})
}

// upgradeChecked: the new binary of upgrade id passed its check (err is
// ""), and the driver is to exec it, or it was refused. The answer of a
// check a stop cancelled changes nothing.
func (m *Machine) upgradeChecked(id int, err string) {
	if !m.upgrading || !m.checking || id != m.upgradeID {
		return
	}
	m.checking = false
	if err != "" {
		m.upgradeDone("refused", err, "")
		return
	}
	m.logf(slog.LevelInfo, "upgrade: the new binary passed its check; executing it", "upgrade", id, "binary", m.upgradeBinary)
	m.emit(ActExecUpgrade{ID: id})
}

// upgradeEnded: upgrade id is over (see EvUpgradeDone).
func (m *Machine) upgradeEnded(id int, result, reason, note string) {
	if m.upgrading && id == m.upgradeID {
		m.upgradeDone(result, reason, note)
	}
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
