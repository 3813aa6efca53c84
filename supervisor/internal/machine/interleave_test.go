package machine

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestMachineInterleavings explores every sequence of events up to a depth,
// breadth first over the machine's states, as a model checker would, and
// checks the supervisor's invariants after every step. From every state it
// also drives the machine to the end of a stop in which children exit only
// when killed, which must always finish with every caller answered.
func TestMachineInterleavings(t *testing.T) {
	// floor: fewer states than this at the search's depth means the
	// model stopped exploring (an event no longer applies, say).
	depth, floor := 7, 1000
	if testing.Short() {
		depth, floor = 5, 250
	}
	trial := func(c *Config) { c.Trial, c.Watchdog, c.WatchdogGrace = 3*time.Second, time.Second, time.Second }
	for _, tc := range []struct {
		name     string
		depth    int
		set      func(*Config)
		upgrades bool
	}{
		{"ready notify", depth, func(*Config) {}, false},
		{"ready delay", depth, func(c *Config) { c.ReadyDelay = time.Second }, false},
		{"trial and watchdog", depth - 1, trial, false},
		{"upgrades", depth, nil, true},
		// An upgrade goes across a trial: both, with a shallower search.
		{"upgrades and trial", depth - 1, func(c *Config) { c.Trial = 3 * time.Second }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // pure: no process, no clock
			cfg := testMachineConfig
			if tc.set != nil {
				tc.set(&cfg)
			}
			states, transitions := explore(t, cfg, tc.depth, tc.upgrades)
			t.Logf("depth %d: %d states, %d transitions", tc.depth, states, transitions)
			if states < floor {
				t.Errorf("only %d states explored; the model is not exploring", states)
			}
		})
	}
}

// A transition is one event from outside, with the answers (fail or not)
// to the spawns it causes, in order.
type transition struct {
	ev        Event
	spawnFail []bool
}

func (tr transition) String() string {
	return fmt.Sprintf("%T%+v%v", tr.ev, tr.ev, tr.spawnFail)
}

// pathState is where a path of the exploration has led: the machine, and
// the observer that followed it.
type pathState struct {
	m        *Machine
	obs      *observer
	watchdog bool // explore watchdog events
	upgrades bool // explore upgrades
}

// apply runs one transition and checks every invariant (invariants_test.go)
// against the step. It returns false when the transition needs more
// spawn answers than given.
func (ps *pathState) apply(cfg Config, tr transition, fail func(string, ...any)) bool {
	stale := ps.obs.expect(tr.ev)
	pre := ps.before(tr.ev, stale)
	acts, ok := ps.run(tr)
	if !ok {
		return false
	}
	ps.obs.record(cfg, acts)
	s := &step{cfg: cfg, ev: tr.ev, pre: pre, acts: acts, m: ps.m, obs: ps.obs}
	for _, inv := range invariants {
		inv.check(s, func(format string, a ...any) { fail(inv.name+": "+format, a...) })
	}
	return true
}

// run steps the machine with tr's event (nil: Begin) and answers the
// spawns it causes with tr's answers, as the driver does, before anything
// else. It returns every action, and false when the answers do not match
// the spawns.
func (ps *pathState) run(tr transition) ([]Action, bool) {
	m := ps.m
	var acts []Action
	if tr.ev == nil {
		acts = m.Begin(t0)
	} else {
		acts = m.Step(t0, tr.ev)
	}
	used := 0
	var all []Action
	for len(acts) > 0 {
		all = append(all, acts...)
		var next []Action
		for _, a := range acts {
			s, ok := a.(ActStart)
			if !ok {
				continue
			}
			if used == len(tr.spawnFail) {
				return nil, false
			}
			var ev Event = EvSpawned{Gen: s.Gen, PID: 1000 + s.Gen}
			if tr.spawnFail[used] {
				ev = EvSpawnFailed{Gen: s.Gen, Err: "start failed"}
			}
			used++
			next = append(next, m.Step(t0, ev)...)
		}
		acts = next
	}
	return all, used == len(tr.spawnFail)
}

// observer plays the driver and the callers along a path: it holds what
// the invariants need beyond the machine's own state.
type observer struct {
	callers  map[CallerID]string // caller -> what it asked: "reload", "stop", ...
	replied  map[CallerID]int
	gaveUp   map[CallerID]bool // callers that stopped waiting before their verdict (EvCancel)
	killed   map[int]bool      // generations sent SIGKILL
	armed    []TimerID         // every timer armed on the path, for stale firings
	drainSig map[int]int       // drain signals per generation
	drainArm map[int]int       // drain deadlines armed per generation
	finished bool
	checking int // an upgrade whose check the driver runs
	execing  int // an upgrade whose exec the driver attempts
	// cancelled is an upgrade whose check the machine cancelled: its
	// answer can still come, and must change nothing.
	cancelled int
}

func newObserver() *observer {
	return &observer{callers: map[CallerID]string{}, replied: map[CallerID]int{}, gaveUp: map[CallerID]bool{}, killed: map[int]bool{}, drainSig: map[int]int{}, drainArm: map[int]int{}}
}

// expect notes what ev means to the driver before the machine sees it: a
// caller asks, or a check or an exec it ran has answered. It reports
// whether ev answers a check the machine had cancelled.
func (obs *observer) expect(ev Event) (stale bool) {
	switch ev := ev.(type) {
	case EvReload:
		obs.callers[ev.Caller] = "reload"
	case EvStop:
		obs.callers[ev.Caller] = "stop"
	case EvPromote:
		obs.callers[ev.Caller] = "promote"
	case EvRollback:
		obs.callers[ev.Caller] = "rollback"
	case EvUpgrade:
		obs.callers[ev.Caller] = "upgrade"
	case EvCancel:
		obs.gaveUp[ev.Caller] = true
	case EvUpgradeChecked:
		if ev.ID == obs.cancelled {
			obs.cancelled = 0
			return true
		}
		obs.checking = 0
	case EvUpgradeDone:
		obs.execing = 0
	}
	return false
}

// record follows the actions of a step, as the driver carries them out.
func (obs *observer) record(cfg Config, acts []Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case ActSignal:
			if a.Sig == cfg.DrainSignal {
				obs.drainSig[a.Gen]++
			}
			if a.Sig == SIGKILL {
				obs.killed[a.Gen] = true
			}
		case ActCheckUpgrade:
			obs.checking = a.ID
		case ActExecUpgrade:
			obs.execing = a.ID
		case ActCancelCheck:
			obs.checking, obs.cancelled = 0, a.ID
		case ActArm:
			obs.armed = append(obs.armed, a.ID)
			if a.Kind == TimerDrain {
				obs.drainArm[a.Gen]++
			}
		case ActReply:
			obs.replied[a.Caller]++
		case ActExit:
			obs.finished = true
			for _, c := range a.Callers {
				obs.replied[c]++
			}
		}
	}
}

func (obs *observer) key() string {
	return fmt.Sprintf("%v|%v|%v|%v|%v|%d|%d|%d", obs.callers, obs.replied, obs.gaveUp, obs.killed, obs.finished, obs.checking, obs.execing, obs.cancelled)
}

// before is what the invariants need of a path's state before a step.
type before struct {
	key       string // machineKey, for the steps that must change nothing
	stale     bool   // the event answers a check the machine cancelled
	starting  int    // the generation starting (not yet ready), 0 for none
	drainSent map[int]bool
	armed     map[TimerID]bool
	finished  bool
	// The driver's upgrade once it has taken in the event: the check or
	// the exec it runs.
	checking, execing int
}

func (ps *pathState) before(ev Event, stale bool) before {
	m := ps.m
	b := before{stale: stale, drainSent: map[int]bool{}, armed: map[TimerID]bool{}, finished: ps.obs.finished,
		checking: ps.obs.checking, execing: ps.obs.execing}
	if _, ready := ev.(EvReady); ready || stale {
		b.key = machineKey(m)
	}
	if m.starting != nil && m.starting.state == Starting {
		b.starting = m.starting.id
	}
	for _, g := range m.gens {
		b.drainSent[g.id] = g.drainSent
	}
	for id := range m.timers {
		b.armed[id] = true
	}
	return b
}

// machineKey identifies a machine's state up to what cannot change its
// future, so that the exploration visits each state once: its Snapshot,
// less what is named here, and why.
func machineKey(m *Machine) string {
	s := m.Snapshot()
	// Names of the next generation and timer: only names. The armed
	// timers are the generations' and Restart.
	s.LastID, s.LastTimer, s.Timers = 0, 0, nil
	if s.Restart != 0 {
		s.Restart = 1 // armed or not; its id is a name
	}
	if s.InitErr != "" {
		s.InitErr = "set" // the first child failed; the words say how
	}
	// Every event of the exploration comes at t0, and times decide
	// nothing (durations are measured and reported, not compared).
	s.QueuedAt = time.Time{}
	// History, read only by Status and the answer to EvUpgradeResult,
	// which the observer does not check; UpgradesFailed counts the
	// refused and the rolled back.
	s.Stats.LastFailure, s.Stats.LastFailureAt, s.Stats.LastUpgrade = "", time.Time{}, nil
	s.Stats.UpgradesRefused, s.Stats.UpgradesRolledBack = 0, 0
	for i := range s.Gens {
		g := &s.Gens[i]
		g.PID = 0 // 1000 + its id
		g.Started, g.ReadyAt, g.DrainAt, g.AskedAt, g.TrialEnds = time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}
	}
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func replay(cfg Config, path []transition) *pathState {
	ps := &pathState{m: New(cfg), obs: newObserver()}
	for _, tr := range path {
		ps.apply(cfg, tr, func(string, ...any) {})
	}
	return ps
}

// clone copies a state between transitions, so that each branch of the
// exploration gets its own: the machine through its Snapshot, which
// shares nothing with it.
func (ps *pathState) clone() *pathState {
	m, err := Restore(ps.m.Snapshot(), ps.m.cfg)
	if err != nil {
		panic(err)
	}
	o := *ps.obs
	o.callers, o.replied, o.killed, o.gaveUp = maps.Clone(o.callers), maps.Clone(o.replied), maps.Clone(o.killed), maps.Clone(o.gaveUp)
	o.drainSig, o.drainArm, o.armed = maps.Clone(o.drainSig), maps.Clone(o.drainArm), slices.Clone(o.armed)
	return &pathState{m: m, obs: &o, watchdog: ps.watchdog, upgrades: ps.upgrades}
}

// roundTrips reports how m differs from the machine its Snapshot
// restores, "" when it does not: a field the Snapshot leaves out would
// be lost across an upgrade (and between the exploration's clones).
func roundTrips(m *Machine) string {
	back, err := Restore(m.Snapshot(), m.cfg)
	if err != nil {
		return err.Error()
	}
	return differs(back, m)
}

// differs reports how back, restored from m's Snapshot, differs from m;
// "" when it does not.
func differs(back, m *Machine) string {
	want := *m
	want.now, want.out = time.Time{}, nil // of the step, not the state
	if want.initErr != nil {
		want.initErr = errors.New(want.initErr.Error()) // written down as its text
	}
	if !sameState(reflect.ValueOf(*back), reflect.ValueOf(want)) {
		return fmt.Sprintf("restored %+v\nwant %+v", *back, want)
	}
	return ""
}

// sameState is reflect.DeepEqual, but for an empty slice or map, which
// is the same state as a nil one.
func sameState(a, b reflect.Value) bool {
	if a.Kind() != b.Kind() || a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !sameState(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for _, k := range a.MapKeys() {
			if v := b.MapIndex(k); !v.IsValid() || !sameState(a.MapIndex(k), v) {
				return false
			}
		}
		return true
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return sameState(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !sameState(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return a.Uint() == b.Uint()
	case reflect.String:
		return a.String() == b.String()
	}
	panic(fmt.Sprintf("sameState: a %s in the machine", a.Kind()))
}

func TestCloneSharesNothing(t *testing.T) {
	ps := replay(testMachineConfig, []transition{{spawnFail: []bool{false}}, {ev: EvReady{Gen: 1}}, {ev: EvReload{Caller: 1}, spawnFail: []bool{false}}})
	c := ps.clone()
	c.apply(testMachineConfig, transition{ev: EvStop{Caller: 2}}, func(string, ...any) {})
	if machineKey(ps.m) == machineKey(c.m) || ps.m.stopping || len(ps.obs.callers) != 1 {
		t.Error("a clone shares state with its original")
	}
}
