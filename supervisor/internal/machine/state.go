package machine

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// The machine written down, for an upgrade: the image that execs the next
// one writes it (Snapshot), and the next one takes it back (Restore). It
// is a format: what one release writes, the next must read. Enums cross
// by name, never by a Go constant's number; a field is only ever added
// (its zero value is what an older image meant); and testdata/ holds the
// state of one scenario as every version wrote it, which every later
// build must restore (state_test.go).
//
// Version 1 (14f122a to c632107) wrote the kinds of generations and
// timers as numbers; version 2 writes them by name, and adds the callers
// of a stop and of an upgrade, and done.

// Version is the version of the format Snapshot is written in.
const Version = 2

// Snapshot is the machine written down. Callers are the driver's numbers:
// the driver decides which of them the next image can still answer (the
// supervisor keeps those of the reloads, whose requests rejoin them).
type Snapshot struct {
	Gens           []GenSnapshot   `json:"gens"`
	LastID         int             `json:"last_id"`
	Serving        int             `json:"serving"` // a generation's id; 0 for none
	Starting       int             `json:"starting"`
	Trial          int             `json:"trial"`
	Pending        bool            `json:"pending"`
	QueuedAt       time.Time       `json:"queued_at"`
	Waiting        []CallerID      `json:"waiting,omitempty"`
	Queued         []CallerID      `json:"queued,omitempty"`
	Stopping       bool            `json:"stopping"`
	StopCallers    []CallerID      `json:"stop_callers,omitempty"` // version 2
	Done           bool            `json:"done,omitempty"`         // version 2
	Restart        TimerID         `json:"restart"`
	Backoff        time.Duration   `json:"backoff"`
	ExitCode       int             `json:"exit_code"`
	InitErr        string          `json:"init_err"`
	Timers         []TimerSnapshot `json:"timers"` // by id
	LastTimer      TimerID         `json:"last_timer"`
	Upgrading      bool            `json:"upgrading"`
	UpgradeID      int             `json:"upgrade_id"`
	UpgradeBinary  string          `json:"upgrade_binary"`
	UpgradeCallers []CallerID      `json:"upgrade_callers,omitempty"` // version 2
	UpgradeQueued  bool            `json:"upgrade_queued"`
	Checking       bool            `json:"checking,omitempty"`
	StopDeferred   bool            `json:"stop_deferred"`
	RestartDue     bool            `json:"restart_due"`
	Stats          Stats           `json:"stats"`
}

// GenSnapshot is a generation written down.
type GenSnapshot struct {
	ID         int           `json:"id"`
	Kind       StartKind     `json:"kind"`
	PID        int           `json:"pid"`
	State      State         `json:"state"`
	Started    time.Time     `json:"started"`
	ReadyAt    time.Time     `json:"ready_at"`
	DrainAt    time.Time     `json:"drain_at"`
	AskedAt    time.Time     `json:"asked_at"`
	Ready      TimerID       `json:"ready"` // its armed timers; 0 for none
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

// TimerSnapshot is an armed timer written down.
type TimerSnapshot struct {
	ID   TimerID   `json:"id"`
	Kind TimerKind `json:"kind"`
	Gen  int       `json:"gen"` // 0 for the restart timer
}

// Snapshot writes m down. It shares nothing with m.
func (m *Machine) Snapshot() Snapshot {
	id := func(g *mgen) int {
		if g == nil {
			return 0
		}
		return g.id
	}
	ms := Snapshot{
		LastID: m.lastID, Serving: id(m.serving), Starting: id(m.starting), Trial: id(m.trial),
		Pending: m.pending, QueuedAt: m.queuedAt, Waiting: slices.Clone(m.waiting), Queued: slices.Clone(m.queued),
		Stopping: m.stopping, StopCallers: slices.Clone(m.stopCallers), Done: m.done,
		Restart: m.restart, Backoff: m.backoff, ExitCode: m.exitCode, LastTimer: m.lastTimer,
		Upgrading: m.upgrading, UpgradeID: m.upgradeID, UpgradeBinary: m.upgradeBinary, UpgradeCallers: slices.Clone(m.upgradeCallers),
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

// Restore makes the machine ms wrote down, with cfg, which is not part of
// the state (the command line that started both images gives it). It
// shares nothing with ms, and refuses a state that names a generation it
// does not hold, or a state or kind this build does not know.
func Restore(ms Snapshot, cfg Config) (*Machine, error) {
	m := New(cfg)
	gens := map[int]*mgen{}
	for _, gs := range ms.Gens {
		if !slices.Contains(states, gs.State) {
			return nil, fmt.Errorf("restore: generation %d: state %q is not one this build knows (%v)", gs.ID, gs.State, states)
		}
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
	m.lastID, m.pending, m.queuedAt = ms.LastID, ms.Pending, ms.QueuedAt
	m.waiting, m.queued = slices.Clone(ms.Waiting), slices.Clone(ms.Queued)
	m.stopping, m.stopCallers, m.done = ms.Stopping, slices.Clone(ms.StopCallers), ms.Done
	m.restart, m.backoff, m.exitCode, m.lastTimer = ms.Restart, ms.Backoff, ms.ExitCode, ms.LastTimer
	m.upgrading, m.checking, m.upgradeID, m.upgradeBinary = ms.Upgrading, ms.Checking, ms.UpgradeID, ms.UpgradeBinary
	m.upgradeCallers, m.upgradeQueued = slices.Clone(ms.UpgradeCallers), ms.UpgradeQueued
	m.stopDeferred, m.restartDue, m.stats = ms.StopDeferred, ms.RestartDue, ms.Stats
	if ms.InitErr != "" {
		m.initErr = errors.New(ms.InitErr)
	}
	return m, nil
}

var states = []State{Starting, Serving, Trial, Draining, Failed, Exited}

// The kinds by the numbers version 1 wrote them as: the order of the Go
// constants then, frozen.
var (
	v1StartKinds = []StartKind{KindInitial, KindReload, KindRestart}
	v1TimerKinds = []TimerKind{TimerReady, TimerReadyDelay, TimerDrain, TimerRestart, TimerTrial, TimerWatchdog, TimerAbort}
)

// UnmarshalJSON reads a kind by its name, or by the number version 1
// wrote.
func (k *StartKind) UnmarshalJSON(b []byte) error { return unmarshalKind(b, k, v1StartKinds) }

// UnmarshalJSON reads a kind by its name, or by the number version 1
// wrote.
func (k *TimerKind) UnmarshalJSON(b []byte) error { return unmarshalKind(b, k, v1TimerKinds) }

// unmarshalKind reads b, a kind's name or (version 1) its number, into k,
// one of known.
func unmarshalKind[K ~string](b []byte, k *K, known []K) error {
	if n, err := strconv.Atoi(string(b)); err == nil {
		if n < 0 || n >= len(known) {
			return fmt.Errorf("kind %d: version 1 numbered the kinds 0 to %d (%v)", n, len(known)-1, known)
		}
		*k = known[n]
		return nil
	}
	var s string // not a K, whose UnmarshalJSON this is
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	name := K(s)
	if !slices.Contains(known, name) {
		return fmt.Errorf("kind %q is not one this build knows (%v)", name, known)
	}
	*k = name
	return nil
}
