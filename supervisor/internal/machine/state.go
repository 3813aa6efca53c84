package machine

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Snapshot is the machine, written down: what an upgrade hands the next
// image (see Restore). Of the callers, those of the
// reload in flight and of the queued one are kept, by number: whoever
// waited is carried by the control socket and rejoins them
// (RejoinReload). The others ask again: a stop joins the stop, an upgrade
// asks for the verdict of the last one.
type Snapshot struct {
	Gens          []GenSnapshot   `json:"gens"`
	LastID        int             `json:"last_id"`
	Serving       int             `json:"serving"`
	Starting      int             `json:"starting"`
	Trial         int             `json:"trial"`
	Pending       bool            `json:"pending"`
	QueuedAt      time.Time       `json:"queued_at"`
	Waiting       []CallerID      `json:"waiting,omitempty"`
	Queued        []CallerID      `json:"queued,omitempty"`
	Stopping      bool            `json:"stopping"`
	Restart       TimerID         `json:"restart"`
	Backoff       time.Duration   `json:"backoff"`
	ExitCode      int             `json:"exit_code"`
	InitErr       string          `json:"init_err"`
	Timers        []TimerSnapshot `json:"timers"`
	LastTimer     TimerID         `json:"last_timer"`
	Upgrading     bool            `json:"upgrading"`
	UpgradeID     int             `json:"upgrade_id"`
	UpgradeBinary string          `json:"upgrade_binary"`
	UpgradeQueued bool            `json:"upgrade_queued"`
	Checking      bool            `json:"checking,omitempty"`
	StopDeferred  bool            `json:"stop_deferred"`
	RestartDue    bool            `json:"restart_due"`
	Stats         Stats           `json:"stats"`
}

type GenSnapshot struct {
	ID         int           `json:"id"`
	Kind       StartKind     `json:"kind"`
	PID        int           `json:"pid"`
	State      State         `json:"state"`
	Started    time.Time     `json:"started"`
	ReadyAt    time.Time     `json:"ready_at"`
	DrainAt    time.Time     `json:"drain_at"`
	AskedAt    time.Time     `json:"asked_at"`
	Ready      TimerID       `json:"ready"`
	Delay      TimerID       `json:"delay"`
	Drain      TimerID       `json:"drain"`
	DrainSent  bool          `json:"drain_sent"`
	TrialT     TimerID       `json:"trial"`
	TrialEnds  time.Time     `json:"trial_ends"`
	WDInterval time.Duration `json:"wd_interval"`
	Watchdog   TimerID       `json:"watchdog"`
	Abort      TimerID       `json:"abort"`
	WDFired    bool          `json:"wd_fired"`
}

type TimerSnapshot struct {
	ID   TimerID   `json:"id"`
	Kind TimerKind `json:"kind"`
	Gen  int       `json:"gen"` // 0 for the restart timer
}

func (m *Machine) Snapshot() Snapshot {
	id := func(g *mgen) int {
		if g == nil {
			return 0
		}
		return g.id
	}
	ms := Snapshot{
		LastID: m.lastID, Serving: id(m.serving), Starting: id(m.starting), Trial: id(m.trial),
		Pending: m.pending, QueuedAt: m.queuedAt, Waiting: m.waiting, Queued: m.queued, Stopping: m.stopping,
		Restart: m.restart, Backoff: m.backoff, ExitCode: m.exitCode, LastTimer: m.lastTimer,
		Upgrading: m.upgrading, UpgradeID: m.upgradeID, UpgradeBinary: m.upgradeBinary,
		UpgradeQueued: m.upgradeQueued, Checking: m.checking, StopDeferred: m.stopDeferred, RestartDue: m.restartDue, Stats: m.stats,
	}
	if m.initErr != nil {
		ms.InitErr = m.initErr.Error()
	}
	for _, g := range m.gens {
		ms.Gens = append(ms.Gens, GenSnapshot{
			ID: g.id, Kind: g.kind, PID: g.pid, State: g.state, Started: g.started, ReadyAt: g.readyAt,
			DrainAt: g.drainAt, AskedAt: g.askedAt, Ready: g.ready, Delay: g.delay, Drain: g.drain,
			DrainSent: g.drainSent, TrialT: g.trial, TrialEnds: g.trialEnds, WDInterval: g.wdInterval,
			Watchdog: g.watchdog, Abort: g.abort, WDFired: g.wdFired,
		})
	}
	for tid, ref := range m.timers {
		ms.Timers = append(ms.Timers, TimerSnapshot{ID: tid, Kind: ref.kind, Gen: id(ref.gen)})
	}
	// In the order they were armed, not the map's: the same machine is
	// written the same way.
	slices.SortFunc(ms.Timers, func(a, b TimerSnapshot) int { return cmp.Compare(a.ID, b.ID) })
	return ms
}

func Restore(ms Snapshot, cfg Config) (*Machine, error) {
	m := New(cfg)
	gens := map[int]*mgen{}
	for _, gs := range ms.Gens {
		g := &mgen{
			id: gs.ID, kind: gs.Kind, pid: gs.PID, state: gs.State, started: gs.Started, readyAt: gs.ReadyAt,
			drainAt: gs.DrainAt, askedAt: gs.AskedAt, ready: gs.Ready, delay: gs.Delay, drain: gs.Drain,
			drainSent: gs.DrainSent, trial: gs.TrialT, trialEnds: gs.TrialEnds, wdInterval: gs.WDInterval,
			watchdog: gs.Watchdog, abort: gs.Abort, wdFired: gs.WDFired,
		}
		gens[g.id] = g
		m.gens = append(m.gens, g)
	}
	find := func(what string, id int) (*mgen, error) {
		if id == 0 {
			return nil, nil
		}
		if g := gens[id]; g != nil {
			return g, nil
		}
		return nil, fmt.Errorf("restore: the %s generation %d is not in the state", what, id)
	}
	var err error
	if m.serving, err = find("serving", ms.Serving); err != nil {
		return nil, err
	}
	if m.starting, err = find("starting", ms.Starting); err != nil {
		return nil, err
	}
	if m.trial, err = find("trial", ms.Trial); err != nil {
		return nil, err
	}
	for _, t := range ms.Timers {
		g, err := find("timer's", t.Gen)
		if err != nil {
			return nil, err
		}
		m.timers[t.ID] = timerRef{kind: t.Kind, gen: g}
	}
	m.lastID, m.pending, m.queuedAt, m.stopping = ms.LastID, ms.Pending, ms.QueuedAt, ms.Stopping
	m.waiting, m.queued, m.checking = ms.Waiting, ms.Queued, ms.Checking
	m.restart, m.backoff, m.exitCode, m.lastTimer = ms.Restart, ms.Backoff, ms.ExitCode, ms.LastTimer
	m.upgrading, m.upgradeID, m.upgradeBinary = ms.Upgrading, ms.UpgradeID, ms.UpgradeBinary
	m.upgradeQueued, m.stopDeferred, m.restartDue, m.stats = ms.UpgradeQueued, ms.StopDeferred, ms.RestartDue, ms.Stats
	if ms.InitErr != "" {
		m.initErr = errors.New(ms.InitErr)
	}
	return m, nil
}
