package machine

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var testMachineConfig = Config{
	ReadyTimeout: 60 * time.Second, DrainTimeout: 30 * time.Second,
	BackoffMin: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond, StableAfter: 10 * time.Second,
	DrainSignal: SIGTERM,
}

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// Exits as the driver reports them (Linux's numbers for the signals).
var (
	exit0     = exited(0)
	exit1     = exited(1)
	exit3     = exited(3)
	bySIGTERM = Exit{Code: 128 + 15, Signal: SIGTERM, Reason: "killed by signal SIGTERM"}
	bySIGKILL = Exit{Code: 128 + 9, Signal: SIGKILL, Reason: "killed by signal SIGKILL"}
)

func exited(code int) Exit { return Exit{Code: code, Reason: fmt.Sprintf("exit status %d", code)} }

// mtest drives a machine through events, answering every spawn with
// success (pid 1000+generation) unless told otherwise.
type mtest struct {
	t        *testing.T
	m        *Machine
	now      time.Time
	failNext bool // answer the next ActStart with a failure
	log      []Action
}

func newMtest(t *testing.T, cfg Config) *mtest {
	h := &mtest{t: t, m: New(cfg), now: t0}
	h.settle(h.m.Begin(h.now))
	return h
}

// settle answers spawns until none is left, and returns every action.
func (h *mtest) settle(acts []Action) []Action {
	var all []Action
	for len(acts) > 0 {
		all = append(all, acts...)
		var next []Action
		for _, a := range acts {
			if s, ok := a.(ActStart); ok {
				var ev Event = EvSpawned{Gen: s.Gen, PID: 1000 + s.Gen}
				if h.failNext {
					h.failNext = false
					ev = EvSpawnFailed{Gen: s.Gen, Err: "start: program: no such file or directory"}
				}
				next = append(next, h.m.Step(h.now, ev)...)
			}
		}
		acts = next
	}
	h.log = append(h.log, all...)
	return all
}

func (h *mtest) do(ev Event) []Action {
	h.t.Helper()
	return h.settle(h.m.Step(h.now, ev))
}

func (h *mtest) after(d time.Duration) { h.now = h.now.Add(d) }

// fire fires the armed timer of the given kind (of generation gen, 0 for
// the restart timer).
func (h *mtest) fire(kind TimerKind, gen int) []Action {
	h.t.Helper()
	for id, ref := range h.m.timers {
		if ref.kind == kind && (ref.gen == nil && gen == 0 || ref.gen != nil && ref.gen.id == gen) {
			return h.do(EvTimer{ID: id, Stderr: []string{"last words"}})
		}
	}
	h.t.Fatalf("no timer of kind %d armed for generation %d; armed: %v", kind, gen, h.m.timers)
	return nil
}

func (h *mtest) armed(kind TimerKind, gen int) bool {
	for _, ref := range h.m.timers {
		if ref.kind == kind && (ref.gen == nil && gen == 0 || ref.gen != nil && ref.gen.id == gen) {
			return true
		}
	}
	return false
}

func (h *mtest) state(gen int) State {
	if g := h.m.find(gen); g != nil {
		return g.state
	}
	return Exited
}

func signals(acts []Action, gen int) []Signal {
	var sigs []Signal
	for _, a := range acts {
		if s, ok := a.(ActSignal); ok && s.Gen == gen {
			sigs = append(sigs, s.Sig)
		}
	}
	return sigs
}

func replies(acts []Action) map[CallerID][]error {
	r := map[CallerID][]error{}
	for _, a := range acts {
		switch a := a.(type) {
		case ActReply:
			r[a.Caller] = append(r[a.Caller], a.Err)
		case ActExit:
			for _, c := range a.Callers {
				r[c] = append(r[c], nil)
			}
		}
	}
	return r
}

func find[T Action](acts []Action) (T, bool) {
	for _, a := range acts {
		if x, ok := a.(T); ok {
			return x, true
		}
	}
	var zero T
	return zero, false
}

func logged(acts []Action, msg string) bool {
	for _, a := range acts {
		if l, ok := a.(ActLog); ok && l.Msg == msg {
			return true
		}
	}
	return false
}

func TestMachineFirstStart(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	if start, ok := find[ActStart](h.log); !ok || start.Gen != 1 || start.Kind != KindInitial {
		t.Fatalf("begin: %v", h.log)
	}
	if !h.armed(TimerReady, 1) || h.state(1) != Starting {
		t.Fatalf("after spawn: state %s, timers %v", h.state(1), h.m.timers)
	}
	h.after(1500 * time.Millisecond)
	acts := h.do(EvReady{Gen: 1})
	if h.state(1) != Serving || h.armed(TimerReady, 1) {
		t.Fatalf("after READY=1: state %s, timers %v", h.state(1), h.m.timers)
	}
	n, ok := find[ActNotify](acts)
	if !ok || n.What != NotifyReady || n.Text != "serving: generation 1 (pid 1001)" {
		t.Errorf("notify: %+v", n)
	}
	if l, _ := find[ActLog](acts); l.Msg != "serving" || !slices.Contains(l.Attrs, any(1500*time.Millisecond)) {
		t.Errorf("log: %+v", l)
	}
	if acts := h.do(EvReady{Gen: 1}); len(acts) != 0 {
		t.Errorf("a second READY=1 did something: %v", acts)
	}
}

func TestMachineReload(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	acts := h.do(EvReload{Caller: 7})
	if n, _ := find[ActNotify](acts); n.What != NotifyReloading {
		t.Errorf("no RELOADING=1: %v", acts)
	}
	if s, _ := find[ActStart](acts); s.Gen != 2 || s.Kind != KindReload {
		t.Fatalf("reload started %+v", s)
	}
	if len(signals(acts, 1)) != 0 || h.state(1) != Serving {
		t.Fatal("the serving generation was touched before the new one was ready")
	}
	acts = h.do(EvReady{Gen: 2})
	if got := signals(acts, 1); !slices.Equal(got, []Signal{SIGTERM}) {
		t.Errorf("old generation got %v, want one SIGTERM", got)
	}
	if !h.armed(TimerDrain, 1) || h.state(1) != Draining || h.state(2) != Serving {
		t.Errorf("states %s %s, timers %v", h.state(1), h.state(2), h.m.timers)
	}
	if r := replies(acts); len(r[7]) != 1 || r[7][0] != nil {
		t.Errorf("caller replies %v", r)
	}
	if h.m.stats.ReloadsOK != 1 {
		t.Errorf("stats %+v", h.m.stats)
	}
	acts = h.do(EvExited{Gen: 1, Exit: bySIGTERM})
	if !logged(acts, "drained") || h.armed(TimerDrain, 1) {
		t.Errorf("drained: %v", acts)
	}
	if _, ok := find[ActForget](acts); !ok {
		t.Error("exited generation not forgotten")
	}
}

func TestMachineReloadsQueueBehindStart(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	h.do(EvReload{Caller: 1})
	for c := CallerID(2); c <= 5; c++ {
		if acts := h.do(EvReload{Caller: c}); len(acts) != 0 {
			t.Fatalf("a reload during a reload did %v", acts)
		}
	}
	h.do(EvSignal{Sig: SIGHUP})
	acts := h.do(EvReady{Gen: 2})
	r := replies(acts)
	if len(r) != 1 || len(r[1]) != 1 {
		t.Errorf("first reload's verdict went to %v", r)
	}
	if s, ok := find[ActStart](acts); !ok || s.Gen != 3 {
		t.Fatalf("queued reload not started: %v", acts)
	}
	acts = h.do(EvReady{Gen: 3})
	if r := replies(acts); len(r) != 4 {
		t.Errorf("queued callers' verdicts: %v", r)
	}
	if _, ok := find[ActStart](acts); ok || h.m.lastID != 3 {
		t.Errorf("a burst of reloads ran more than two starts")
	}
}

func TestMachineFailedReloads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fail   func(h *mtest) []Action
		reason string
		drains bool // what is left of the child gets the drain signal
	}{
		{"exits before ready", func(h *mtest) []Action {
			return h.do(EvExited{Gen: 2, Exit: exit1, Stderr: []string{"listen: config.yaml: no such file"}})
		}, "exited before ready: exit status 1", false},
		{"not ready in time", func(h *mtest) []Action { return h.fire(TimerReady, 2) }, "not ready within 1m0s", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newMtest(t, testMachineConfig)
			h.do(EvReady{Gen: 1})
			h.do(EvReload{Caller: 9})
			acts := tc.fail(h)
			r := replies(acts)
			var rerr *ReloadError
			if len(r[9]) != 1 || !errors.As(r[9][0], &rerr) || rerr.Reason != tc.reason || rerr.Generation != 2 || rerr.PID != 1002 || len(rerr.Stderr) != 1 {
				t.Fatalf("verdict %v", r)
			}
			if len(signals(acts, 1)) != 0 || h.state(1) != Serving {
				t.Error("the serving generation was touched")
			}
			if got := signals(acts, 2); tc.drains != (len(got) == 1) {
				t.Errorf("failed generation got %v", got)
			}
			if tc.drains {
				if h.state(2) != Failed || !h.armed(TimerDrain, 2) {
					t.Fatalf("failed generation: %s, timers %v", h.state(2), h.m.timers)
				}
				acts = h.fire(TimerDrain, 2)
				if !slices.Equal(signals(acts, 2), []Signal{SIGKILL}) {
					t.Errorf("at the drain deadline: %v", acts)
				}
				if acts = h.do(EvExited{Gen: 2, Exit: bySIGKILL}); !logged(acts, "failed generation drained") {
					t.Errorf("exit of the failed generation: %v", acts)
				}
			}
			if h.m.stats.ReloadsFailed != 1 || !strings.Contains(h.m.stats.LastFailure, tc.reason) {
				t.Errorf("stats %+v", h.m.stats)
			}
			// The next reload works.
			h.do(EvReload{Caller: 10})
			if acts := h.do(EvReady{Gen: 3}); len(replies(acts)[10]) != 1 || h.state(1) != Draining {
				t.Errorf("next reload: %v", acts)
			}
		})
	}
}

func TestMachineSpawnFailure(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	h.failNext = true
	acts := h.do(EvReload{Caller: 1})
	var rerr *ReloadError
	if r := replies(acts); len(r[1]) != 1 || !errors.As(r[1][0], &rerr) || rerr.PID != 0 || !strings.Contains(rerr.Reason, "no such file") {
		t.Fatalf("verdict %v", r)
	}
	var n ActNotify
	for _, a := range acts {
		if x, ok := a.(ActNotify); ok {
			n = x
		}
	}
	if n.What != NotifyReady || !strings.Contains(n.Text, "reload failed") || !strings.Contains(n.Text, "generation 1 (pid 1001) still serving") {
		t.Errorf("service manager told %+v", n)
	}
	if h.m.starting != nil || len(h.m.gens) != 1 {
		t.Errorf("machine after a spawn failure: %+v", h.m)
	}
}

func TestMachineFirstChildFails(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReload{Caller: 4}) // queued behind the first start
	acts := h.do(EvExited{Gen: 1, Exit: exit1})
	x, ok := find[ActExit](acts)
	if !ok || x.Err == nil || !strings.HasPrefix(x.Err.Error(), "first child: generation 1 (pid 1001) failed: exited before ready") {
		t.Fatalf("exit %+v", x)
	}
	if r := replies(acts); len(r[4]) != 1 || r[4][0] != ErrStopping {
		t.Errorf("queued reload: %v", r)
	}
	if acts := h.do(EvReload{Caller: 5}); len(acts) != 0 {
		t.Errorf("the machine acted after it finished: %v", acts)
	}
}

func TestMachineCrashRestartBackoff(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	var delays []time.Duration
	gen := 1
	for range 4 {
		acts := h.do(EvExited{Gen: gen, Exit: exit3, Stderr: []string{"a", "b", "c", "panic: boom"}})
		arm, ok := find[ActArm](acts)
		if !ok || !logged(acts, "serving child died") {
			t.Fatalf("no restart after a crash: %v", acts)
		}
		delays = append(delays, arm.After)
		acts = h.fire(TimerRestart, 0)
		gen++
		if s, _ := find[ActStart](acts); s.Gen != gen || s.Kind != KindRestart {
			t.Fatalf("restart started %+v", s)
		}
		acts = h.do(EvReady{Gen: gen})
		if n, _ := find[ActNotify](acts); n.What != NotifyStatus || !strings.HasPrefix(n.Text, "restarted") {
			t.Errorf("restart notify %+v", n)
		}
	}
	if want := []time.Duration{100, 200, 400, 400}; !slices.Equal(delays, scale(want, time.Millisecond)) {
		t.Errorf("backoff %v, want %v ms", delays, want)
	}
	// A child that served StableAfter resets the backoff.
	h.after(testMachineConfig.StableAfter)
	acts := h.do(EvExited{Gen: gen, Exit: exit3})
	if arm, _ := find[ActArm](acts); arm.After != 100*time.Millisecond {
		t.Errorf("after a stable child: %v", arm.After)
	}
	if h.m.stats.Restarts != 4 {
		t.Errorf("stats %+v", h.m.stats)
	}
	// An operator's reload during the backoff runs at once.
	acts = h.do(EvReload{Caller: 3})
	if _, ok := find[ActDisarm](acts); !ok || h.m.restart != 0 {
		t.Errorf("restart timer left armed: %v", acts)
	}
	if s, _ := find[ActStart](acts); s.Kind != KindReload {
		t.Errorf("reload during backoff: %v", acts)
	}
}

func scale(ds []time.Duration, unit time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d * unit
	}
	return out
}

func TestMachineStop(t *testing.T) {
	for _, tc := range []struct {
		status Exit
		code   int
	}{
		{exit0, 0},
		{bySIGTERM, 0}, // a server without a handler for the drain signal
		{exit3, 3},
		{bySIGKILL, 137},
	} {
		t.Run(tc.status.Reason, func(t *testing.T) {
			h := newMtest(t, testMachineConfig)
			h.do(EvReady{Gen: 1})
			acts := h.do(EvStop{Caller: 2})
			if n, _ := find[ActNotify](acts); n.What != NotifyStopping {
				t.Errorf("no STOPPING=1: %v", acts)
			}
			if _, ok := find[ActRelease](acts); !ok {
				t.Error("sockets not released at the stop")
			}
			if !slices.Equal(signals(acts, 1), []Signal{SIGTERM}) || !h.armed(TimerDrain, 1) {
				t.Errorf("serving generation at stop: %v", acts)
			}
			if r := replies(acts); len(r) != 0 {
				t.Errorf("stop answered before the children exited: %v", r)
			}
			h.do(EvStop{Caller: 3})
			acts = h.do(EvExited{Gen: 1, Exit: tc.status})
			x, ok := find[ActExit](acts)
			if !ok || !slices.Equal(x.Callers, []CallerID{2, 3}) {
				t.Fatalf("exit %+v", x)
			}
			var xerr *ExitError
			if tc.code == 0 && x.Err != nil || tc.code != 0 && (!errors.As(x.Err, &xerr) || xerr.Code != tc.code) {
				t.Errorf("exit error %v, want code %d", x.Err, tc.code)
			}
		})
	}
}

// Bug 1: a SIGTERM during the first start, a child that ignores it and
// sends READY=1 later: the READY must not cancel the drain deadline.
func TestMachineStopDuringStartThenReady(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvSignal{Sig: SIGTERM})
	if h.state(1) != Draining || !h.armed(TimerDrain, 1) {
		t.Fatalf("starting generation at stop: %s %v", h.state(1), h.m.timers)
	}
	if acts := h.do(EvReady{Gen: 1}); len(acts) != 0 {
		t.Fatalf("READY=1 after the stop did %v", acts)
	}
	acts := h.fire(TimerDrain, 1)
	if !slices.Equal(signals(acts, 1), []Signal{SIGKILL}) {
		t.Fatalf("deadline: %v", acts)
	}
	acts = h.do(EvExited{Gen: 1, Exit: bySIGKILL})
	if _, ok := find[ActExit](acts); !ok || !logged(acts, "stopped before ready") {
		t.Errorf("never finished: %v", acts)
	}
}

// Bug 2: SIGHUP, SIGTERM, then the new child's READY=1: the old
// generation gets its drain signal once, and the new one keeps its drain
// deadline.
func TestMachineReloadStopReady(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	h.do(EvSignal{Sig: SIGHUP})
	h.do(EvSignal{Sig: SIGTERM})
	h.do(EvReady{Gen: 2})
	if got := signals(h.log, 1); !slices.Equal(got, []Signal{SIGTERM}) {
		t.Errorf("old generation got %v", got)
	}
	if !h.armed(TimerDrain, 2) || !h.armed(TimerDrain, 1) || h.state(2) != Draining {
		t.Errorf("drain deadlines: %v, new generation %s", h.m.timers, h.state(2))
	}
}

func TestMachineSignals(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	if acts := h.do(EvSignal{Sig: SIGUSR1}); len(signals(acts, 1)) != 0 {
		t.Error("forwarded to a child that does not serve yet")
	}
	h.do(EvReady{Gen: 1})
	if acts := h.do(EvSignal{Sig: SIGUSR2}); !slices.Equal(signals(acts, 1), []Signal{SIGUSR2}) {
		t.Errorf("USR2: %v", acts)
	}
	h.do(EvSignal{Sig: SIGHUP})
	h.do(EvSignal{Sig: SIGINT})
	acts := h.do(EvSignal{Sig: SIGINT})
	if !slices.Equal(signals(acts, 1), []Signal{SIGKILL}) || !slices.Equal(signals(acts, 2), []Signal{SIGKILL}) {
		t.Errorf("second SIGINT: %v", acts)
	}
}

func TestMachineReadyDelay(t *testing.T) {
	cfg := testMachineConfig
	cfg.ReadyDelay = 2 * time.Second
	h := newMtest(t, cfg)
	acts := h.fire(TimerReadyDelay, 1)
	if h.state(1) != Serving {
		t.Fatalf("after the delay: %s %v", h.state(1), acts)
	}
	if _, ok := find[ActDisarm](acts); !ok {
		t.Error("ready timeout left armed")
	}
}

func TestMachineStatusAndWatchdog(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	if acts := h.do(EvTick{}); len(acts) != 0 {
		t.Errorf("watchdog ping before anything serves: %v", acts)
	}
	h.do(EvReady{Gen: 1})
	if n, _ := find[ActNotify](h.do(EvTick{})); n.What != NotifyWatchdog {
		t.Error("no watchdog ping while serving")
	}
	h.do(EvReload{Caller: 1})
	acts := h.do(EvStatus{Caller: 2})
	st, ok := find[ActStatus](acts)
	if !ok || st.Caller != 2 || len(st.View.Gens) != 2 || st.View.Gens[0].State != Serving || st.View.Gens[1].State != Starting {
		t.Errorf("status %+v", st)
	}
}

func TestMachineStaleTimer(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	var ready TimerID
	for id := range h.m.timers {
		ready = id
	}
	h.do(EvReady{Gen: 1})
	if acts := h.do(EvTimer{ID: ready}); len(acts) != 0 || h.state(1) != Serving {
		t.Errorf("a ready timeout that fired as READY=1 came did %v", acts)
	}
}

// TestMachineInterleavings explores every sequence of events up to a depth,
// breadth first over the machine's states, as a model checker would, and
// checks the supervisor's invariants after every step. From every state it
// also drives the machine to the end of a stop in which children exit only
// when killed, which must always finish with every caller answered.
func TestMachineInterleavings(t *testing.T) {
	depth := 7
	if testing.Short() {
		depth = 5
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
			if states < 1000 {
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

// observer follows the actions of a path and holds what the invariants
// need beyond the machine's own state.
type observer struct {
	callers  map[CallerID]string // caller -> "reload" or "stop"
	replied  map[CallerID]int
	killed   map[int]bool // generations sent SIGKILL
	armed    []TimerID    // every timer armed on the path, for stale firings
	drainSig map[int]int  // drain signals per generation
	drainArm map[int]int  // drain deadlines armed per generation
	finished bool
	checking int // an upgrade whose check the driver runs
	execing  int // an upgrade whose exec the driver attempts
	// cancelled is an upgrade whose check the machine cancelled: its
	// answer can still come, and must change nothing.
	cancelled int
}

func newObserver() *observer {
	return &observer{callers: map[CallerID]string{}, replied: map[CallerID]int{}, killed: map[int]bool{}, drainSig: map[int]int{}, drainArm: map[int]int{}}
}

type pathState struct {
	m        *Machine
	obs      *observer
	watchdog bool // explore watchdog events
	upgrades bool // explore upgrades
}

// apply runs one transition, checking the invariants of each step. It
// returns false when the transition needs more spawn answers than given.
func (ps *pathState) apply(cfg Config, tr transition, check func(string, ...any)) bool {
	m, obs := ps.m, ps.obs
	switch ev := tr.ev.(type) {
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
	case EvUpgradeChecked:
		if ev.ID == obs.cancelled {
			obs.cancelled = 0
		} else {
			obs.checking = 0
		}
	case EvUpgradeDone:
		obs.execing = 0
	}
	var preKey string
	if _, ok := tr.ev.(EvReady); ok {
		preKey = machineKey(m)
	}
	pre := map[int]bool{} // drainSent before the step
	for _, g := range m.gens {
		pre[g.id] = g.drainSent
	}
	preArmed := map[TimerID]bool{}
	for id := range m.timers {
		preArmed[id] = true
	}
	var preStale string
	if ev, ok := tr.ev.(EvUpgradeChecked); ok && ev.ID == obs.cancelled {
		preStale = machineKey(m)
	}
	var preStarting *mgen
	if m.starting != nil && m.starting.state == Starting {
		preStarting = m.starting
	}
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
				return false
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
	if used != len(tr.spawnFail) {
		return false
	}

	// Invariants of the transition.
	switch ev := tr.ev.(type) {
	case EvReady:
		if preStarting == nil || preStarting.id != ev.Gen {
			if len(all) != 0 || machineKey(m) != preKey {
				check("READY=1 from generation %d, not the starting one, changed the machine: %v", ev.Gen, all)
			}
		}
	case EvTimer:
		if !preArmed[ev.ID] && len(all) != 0 {
			check("stale timer %d did %v", ev.ID, all)
		}
	case EvUpgradeChecked:
		if preStale != "" && (len(all) != 0 || machineKey(m) != preStale) {
			check("the answer of cancelled check %d changed the machine: %v", ev.ID, all)
		}
	}
	if obs.finished && len(all) != 0 {
		check("the machine acted after it finished: %v", all)
	}
	for _, a := range all {
		switch a := a.(type) {
		case ActSignal:
			if a.Sig == cfg.DrainSignal {
				obs.drainSig[a.Gen]++
				if obs.drainSig[a.Gen] > 1 || pre[a.Gen] {
					check("generation %d sent the drain signal twice", a.Gen)
				}
			}
			if a.Sig == SIGKILL {
				obs.killed[a.Gen] = true
			}
		case ActCheckUpgrade:
			if obs.checking != 0 || obs.execing != 0 {
				check("upgrade %d checked while upgrade %d/%d is in flight", a.ID, obs.checking, obs.execing)
			}
			obs.checking = a.ID
		case ActExecUpgrade:
			obs.execing = a.ID
		case ActCancelCheck:
			if obs.checking != a.ID {
				check("cancelled check %d, but the check running is %d", a.ID, obs.checking)
			}
			obs.checking, obs.cancelled = 0, a.ID
		case ActArm:
			obs.armed = append(obs.armed, a.ID)
			if a.Kind == TimerDrain {
				obs.drainArm[a.Gen]++
			}
		case ActReply:
			if k := obs.callers[a.Caller]; k == "stop" || k == "" {
				check("reply to %d (%q), which is not waiting for a reply", a.Caller, k)
			}
			obs.replied[a.Caller]++
		case ActExit:
			obs.finished = true
			for _, c := range a.Callers {
				if obs.callers[c] != "stop" {
					check("stop reply to %d, which did not ask to stop", c)
				}
				obs.replied[c]++
			}
			for c := range obs.callers {
				if obs.replied[c] != 1 {
					check("at the end, caller %d (%s) got %d replies", c, obs.callers[c], obs.replied[c])
				}
			}
		}
	}
	for c, n := range obs.replied {
		if n > 1 {
			check("caller %d got %d replies", c, n)
		}
	}

	// Invariants of the state.
	serving := 0
	drainTimers := map[int]int{}
	for _, ref := range m.timers {
		if ref.kind == TimerDrain {
			drainTimers[ref.gen.id]++
		}
	}
	for _, g := range m.gens {
		if g.state == Serving {
			serving++
		}
		if g.drainSent && g.state == Serving {
			check("generation %d serves after it was told to drain", g.id)
		}
		if g.drainSent != (obs.drainSig[g.id] == 1) || obs.drainArm[g.id] != obs.drainSig[g.id] {
			check("generation %d: drain signals %d, deadlines %d, drainSent %v", g.id, obs.drainSig[g.id], obs.drainArm[g.id], g.drainSent)
		}
		if drainTimers[g.id] > 1 || drainTimers[g.id] == 1 && !g.drainSent {
			check("generation %d has %d drain timers", g.id, drainTimers[g.id])
		}
		if m.stopping && !g.drainSent {
			check("stopping, but generation %d (%s) was never told to drain", g.id, g.state)
		}
		if g.state == Exited {
			check("exited generation %d still listed", g.id)
		}
	}
	if serving > 1 {
		check("%d generations serving", serving)
	}
	// A generation on trial goes across an upgrade; none starts during
	// one; a stop cancels the check, or waits for the hand-over.
	if m.upgrading && (m.starting != nil || m.stopping) {
		check("upgrading with starting %v, stopping %v", m.starting != nil, m.stopping)
	}
	if m.checking != (obs.checking != 0) {
		check("the machine's check %v, the driver's %d", m.checking, obs.checking)
	}
	if m.stopDeferred && (!m.upgrading || m.checking) {
		check("a stop deferred while upgrading %v, checking %v: only the hand-over defers it", m.upgrading, m.checking)
	}
	if m.trial != nil && (m.trial.state != Trial || m.serving == nil || m.stopping) {
		check("trial of generation %d (%s) with serving %v, stopping %v", m.trial.id, m.trial.state, m.serving != nil, m.stopping)
	}
	for _, ref := range m.timers {
		if ref.kind == TimerWatchdog && ref.gen.state != Serving && ref.gen.state != Trial {
			check("watchdog armed for generation %d, which is %s", ref.gen.id, ref.gen.state)
		}
		if ref.kind == TimerTrial && ref.gen != m.trial {
			check("trial timer armed for generation %d, not on trial", ref.gen.id)
		}
	}
	if m.starting != nil && (m.starting.state != Starting || m.stopping) {
		check("starting generation %d is %s (stopping %v)", m.starting.id, m.starting.state, m.stopping)
	}
	return true
}

// machineKey identifies a machine state up to what cannot change its
// future: times are left out.
func machineKey(m *Machine) string {
	var b strings.Builder
	id := func(g *mgen) int {
		if g == nil {
			return 0
		}
		return g.id
	}
	fmt.Fprintf(&b, "s%d st%d tr%d p%v w%v q%v x%v sc%v d%v r%v b%v c%d i%v %+v|", id(m.serving), id(m.starting), id(m.trial), m.pending, m.waiting, m.queued,
		m.stopping, m.stopCallers, m.done, m.restart != 0, m.backoff, m.exitCode, m.initErr != nil,
		[]int{m.stats.ReloadsOK, m.stats.ReloadsFailed, m.stats.ReloadsRolledBack, m.stats.Restarts, m.stats.WatchdogKills, m.stats.UpgradesOK, m.stats.UpgradesFailed})
	fmt.Fprintf(&b, "u%v:%v:%d:%s:%v:%v:%v:%v|", m.upgrading, m.checking, m.upgradeID, m.upgradeBinary, m.upgradeCallers, m.upgradeQueued, m.stopDeferred, m.restartDue)
	for _, g := range m.gens {
		fmt.Fprintf(&b, "g%d:%d:%s:%v:%v:%v:", g.id, g.kind, g.state, g.drainSent, g.wdFired, g.wdInterval)
		for _, t := range []TimerID{g.ready, g.delay, g.drain, g.trial, g.watchdog, g.abort} {
			if t != 0 {
				fmt.Fprintf(&b, "t%d,", t)
			}
		}
	}
	return b.String()
}

func (obs *observer) key() string {
	return fmt.Sprintf("%v|%v|%v|%v|%d|%d|%d", obs.callers, obs.replied, obs.killed, obs.finished, obs.checking, obs.execing, obs.cancelled)
}

func replay(cfg Config, path []transition) *pathState {
	ps := &pathState{m: New(cfg), obs: newObserver()}
	for _, tr := range path {
		ps.apply(cfg, tr, func(string, ...any) {})
	}
	return ps
}

// clone copies a state between transitions, so that each branch of the
// exploration gets its own.
func (ps *pathState) clone() *pathState {
	m := *ps.m
	gens := map[*mgen]*mgen{nil: nil}
	m.gens = nil
	for _, g := range ps.m.gens {
		c := *g
		gens[g] = &c
		m.gens = append(m.gens, &c)
	}
	remap := func(g *mgen) *mgen {
		c, ok := gens[g]
		if !ok {
			panic(fmt.Sprintf("generation %d is referenced but not listed", g.id))
		}
		return c
	}
	m.serving, m.starting, m.trial = remap(ps.m.serving), remap(ps.m.starting), remap(ps.m.trial)
	m.waiting, m.queued, m.stopCallers = slices.Clone(m.waiting), slices.Clone(m.queued), slices.Clone(m.stopCallers)
	m.upgradeCallers = slices.Clone(m.upgradeCallers)
	m.out = nil
	m.timers = make(map[TimerID]timerRef, len(ps.m.timers))
	for id, ref := range ps.m.timers {
		m.timers[id] = timerRef{kind: ref.kind, gen: remap(ref.gen)}
	}
	o := *ps.obs
	o.callers, o.replied, o.killed = maps.Clone(o.callers), maps.Clone(o.replied), maps.Clone(o.killed)
	o.drainSig, o.drainArm, o.armed = maps.Clone(o.drainSig), maps.Clone(o.drainArm), slices.Clone(o.armed)
	return &pathState{m: &m, obs: &o, watchdog: ps.watchdog, upgrades: ps.upgrades}
}

// The clone above copies every field of machine and mgen by hand; a new
// field must be handled there.
func TestCloneCoversMachine(t *testing.T) {
	if n := reflect.TypeFor[Machine]().NumField(); n != 30 {
		t.Errorf("machine has %d fields: check that pathState.clone copies the new ones deeply, and that exportMachine and importMachine (handoff.go) carry them across an upgrade, then update this count", n)
	}
	if n := reflect.TypeFor[mgen]().NumField(); n != 18 {
		t.Errorf("mgen has %d fields: check pathState.clone, exportMachine and importMachine, then update this count", n)
	}
	ps := replay(testMachineConfig, []transition{{spawnFail: []bool{false}}, {ev: EvReady{Gen: 1}}, {ev: EvReload{Caller: 1}, spawnFail: []bool{false}}})
	c := ps.clone()
	c.apply(testMachineConfig, transition{ev: EvStop{Caller: 2}}, func(string, ...any) {})
	if machineKey(ps.m) == machineKey(c.m) || ps.m.stopping || len(ps.obs.callers) != 1 {
		t.Error("a clone shares state with its original")
	}
}

// candidates lists the events that can happen next: signals, requests
// (a bounded number of callers), READY=1 from any generation, any exit of
// any live generation, and any timer firing, stale ones included.
func candidates(ps *pathState) []Event {
	m, obs := ps.m, ps.obs
	evs := []Event{EvSignal{Sig: SIGHUP}, EvSignal{Sig: SIGTERM}, EvSignal{Sig: SIGINT}, EvTick{}}
	next := CallerID(len(obs.callers) + 1)
	if len(obs.callers) < 3 {
		evs = append(evs, EvReload{Caller: next}, EvStop{Caller: next})
	}
	if len(obs.callers) < 3 {
		evs = append(evs, EvPromote{Caller: next}, EvRollback{Caller: next})
		if ps.upgrades {
			evs = append(evs, EvUpgrade{Caller: next, Binary: "/new/hitless"}, EvUpgrade{Caller: next, Binary: "/other/hitless"})
		}
	}
	if obs.checking != 0 {
		evs = append(evs, EvUpgradeChecked{ID: obs.checking}, EvUpgradeChecked{ID: obs.checking, Err: "not hitless"})
	}
	if obs.cancelled != 0 {
		evs = append(evs, EvUpgradeChecked{ID: obs.cancelled})
	}
	if obs.execing != 0 {
		evs = append(evs, EvUpgradeDone{ID: obs.execing, Result: "ok"}, EvUpgradeDone{ID: obs.execing, Result: "failed", Reason: "exec: ENOENT"})
	}
	for _, g := range m.gens {
		evs = append(evs, EvReady{Gen: g.id})
		if ps.watchdog {
			evs = append(evs, EvWatchdog{Gen: g.id, Kind: WatchdogPing}, EvWatchdog{Gen: g.id, Kind: WatchdogTrigger},
				EvWatchdog{Gen: g.id, Kind: WatchdogInterval, Interval: 0})
		}
		statuses := []Exit{exit0, exit1, bySIGTERM}
		if obs.killed[g.id] {
			statuses = []Exit{bySIGKILL}
		}
		for _, st := range statuses {
			evs = append(evs, EvExited{Gen: g.id, Exit: st})
		}
	}
	for _, id := range obs.armed {
		evs = append(evs, EvTimer{ID: id})
	}
	return evs
}

// expand returns the transitions for ev from ps, one per combination of
// spawn answers it needs, each with the state it leads to.
func expand(cfg Config, ps *pathState, ev Event, check func(transition) func(string, ...any)) ([]transition, []*pathState) {
	var trs []transition
	var states []*pathState
	var try func(answers []bool)
	try = func(answers []bool) {
		next := ps.clone()
		tr := transition{ev: ev, spawnFail: answers}
		if next.apply(cfg, tr, check(tr)) {
			trs, states = append(trs, tr), append(states, next)
			return
		}
		if len(answers) > 4 {
			return
		}
		try(append(slices.Clone(answers), false))
		try(append(slices.Clone(answers), true))
	}
	try(nil)
	return trs, states
}

func explore(t *testing.T, cfg Config, depth int, upgrades bool) (states, transitions int) {
	type node struct {
		path []transition
		ps   *pathState
	}
	seen := map[string]bool{}
	failed := false
	checker := func(path []transition) func(transition) func(string, ...any) {
		return func(tr transition) func(string, ...any) {
			return func(format string, a ...any) {
				if !failed {
					t.Errorf("after %v:\n"+format, append([]any{append(slices.Clone(path), tr)}, a...)...)
				}
				failed = true
			}
		}
	}
	// Each state is kept once, when first reached: the frontier holds
	// only states not seen before.
	var frontier []node
	add := func(list []node, path []transition, ps *pathState) []node {
		k := machineKey(ps.m) + "#" + ps.obs.key()
		if seen[k] {
			return list
		}
		seen[k] = true
		return append(list, node{path: path, ps: ps})
	}
	trs, pss := expand(cfg, &pathState{m: New(cfg), obs: newObserver(), watchdog: cfg.Watchdog > 0, upgrades: upgrades}, nil, checker(nil))
	for i, tr := range trs {
		frontier = add(frontier, []transition{tr}, pss[i])
	}
	for d := 0; d < depth && len(frontier) > 0 && !failed; d++ {
		var next []node
		for _, n := range frontier {
			checkCompletion(t, cfg, n.path, n.ps.clone())
			if d == depth-1 {
				continue // the last level is checked, not expanded
			}
			for _, ev := range candidates(n.ps) {
				trs, pss := expand(cfg, n.ps, ev, checker(n.path))
				transitions += len(trs)
				for i, tr := range trs {
					next = add(next, append(slices.Clone(n.path), tr), pss[i])
				}
			}
			if failed || t.Failed() {
				return len(seen), transitions
			}
		}
		frontier = next
	}
	return len(seen), transitions
}

// checkCompletion stops the machine at the end of path and lets time pass
// with children that exit only when killed (the worst case: they ignore
// the drain signal). Every timer fires in turn and every killed child
// exits; the machine must finish, with every caller answered exactly once.
func checkCompletion(t *testing.T, cfg Config, path []transition, ps *pathState) {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Errorf("completing %v:\n"+format, append([]any{path}, a...)...)
	}
	caller := CallerID(len(ps.obs.callers) + 1)
	steps := []Event{EvStop{Caller: caller}}
	for i := 0; i < 50 && !ps.obs.finished; i++ {
		if len(steps) == 0 {
			if id := ps.obs.checking; id != 0 {
				steps = append(steps, EvUpgradeChecked{ID: id, Err: "refused"})
			}
			if id := ps.obs.cancelled; id != 0 {
				steps = append(steps, EvUpgradeChecked{ID: id})
			}
			if id := ps.obs.execing; id != 0 {
				steps = append(steps, EvUpgradeDone{ID: id, Result: "failed", Reason: "exec failed"})
			}
			for id := range ps.m.timers {
				steps = append(steps, EvTimer{ID: id})
			}
			for _, g := range ps.m.gens {
				if ps.obs.killed[g.id] {
					steps = append(steps, EvExited{Gen: g.id, Exit: bySIGKILL})
				}
			}
			if len(steps) == 0 {
				fail("stuck: nothing can happen, machine %s", machineKey(ps.m))
				return
			}
		}
		ev := steps[0]
		steps = steps[1:]
		// Spawns cannot happen while stopping; answer none.
		if !ps.apply(cfg, transition{ev: ev}, fail) {
			fail("a spawn during a stop")
			return
		}
	}
	if !ps.obs.finished {
		fail("the stop never finished: %s", machineKey(ps.m))
	}
}

func trialConfig() Config {
	cfg := testMachineConfig
	cfg.Trial, cfg.Watchdog, cfg.WatchdogGrace = 3*time.Second, 2*time.Second, time.Second
	return cfg
}

// reloadIntoTrial serves generation 1, reloads, and brings generation 2
// into its trial.
func reloadIntoTrial(t *testing.T) *mtest {
	h := newMtest(t, trialConfig())
	h.do(EvReady{Gen: 1})
	h.do(EvReload{Caller: 1})
	acts := h.do(EvReady{Gen: 2})
	if h.state(2) != Trial || h.state(1) != Serving || len(signals(acts, 1)) != 0 || len(replies(acts)) != 0 {
		t.Fatalf("into the trial: %s %s %v", h.state(1), h.state(2), acts)
	}
	if !h.armed(TimerTrial, 2) || !h.armed(TimerWatchdog, 2) || !h.armed(TimerWatchdog, 1) {
		t.Fatalf("timers in the trial: %v", h.m.timers)
	}
	return h
}

func TestMachineTrialPasses(t *testing.T) {
	h := reloadIntoTrial(t)
	if acts := h.do(EvSignal{Sig: SIGHUP}); len(acts) != 1 || !h.m.pending {
		t.Errorf("SIGHUP during the trial: %v", acts) // queued: only the log line
	}
	h.after(3 * time.Second)
	acts := h.fire(TimerTrial, 2)
	if h.state(2) != Serving || h.state(1) != Draining || !slices.Equal(signals(acts, 1), []Signal{SIGTERM}) {
		t.Fatalf("after the trial: %s %s %v", h.state(1), h.state(2), acts)
	}
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != nil {
		t.Errorf("verdict %v", r)
	}
	if o, ok := find[ActObserve](acts); !ok || o.What != ObserveReload || o.Duration != 3*time.Second {
		t.Errorf("reload observed as %+v", o)
	}
	if s, ok := find[ActStart](acts); !ok || s.Gen != 3 {
		t.Errorf("the SIGHUP queued during the trial did not start: %v", acts)
	}
}

func TestMachineTrialRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fail   func(h *mtest) []Action
		reason string
		drains bool
	}{
		{"crash", func(h *mtest) []Action {
			return h.do(EvExited{Gen: 2, Exit: exited(4), Stderr: []string{"panic: nil map"}})
		}, "rolled back during the trial: exited: exit status 4", false},
		{"watchdog", func(h *mtest) []Action { return h.fire(TimerWatchdog, 2) }, "rolled back during the trial: its watchdog expired: no WATCHDOG=1 within 2s", true},
		{"trigger", func(h *mtest) []Action { return h.do(EvWatchdog{Gen: 2, Kind: WatchdogTrigger}) }, "its watchdog expired: it sent WATCHDOG=trigger", true},
		{"rollback", func(h *mtest) []Action { return h.do(EvRollback{Caller: 9}) }, "rolled back during the trial: asked by hitless rollback", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := reloadIntoTrial(t)
			acts := tc.fail(h)
			r := replies(acts)
			var rerr *ReloadError
			if len(r[1]) != 1 || !errors.As(r[1][0], &rerr) || !rerr.RolledBack || !strings.Contains(rerr.Reason, tc.reason) {
				t.Fatalf("verdict %v", r)
			}
			if len(signals(acts, 1)) != 0 || h.state(1) != Serving {
				t.Error("the old generation was touched")
			}
			if got := signals(acts, 2); tc.drains != slices.Equal(got, []Signal{SIGTERM}) {
				t.Errorf("new generation got %v", got)
			}
			if h.m.trial != nil || h.m.stats.ReloadsRolledBack != 1 || h.m.stats.ReloadsFailed != 0 {
				t.Errorf("after the rollback: trial %v, stats %+v", h.m.trial, h.m.stats)
			}
			var n ActNotify
			for _, a := range acts {
				if x, ok := a.(ActNotify); ok {
					n = x
				}
			}
			if n.What != NotifyReady || !strings.HasPrefix(n.Text, "reload rolled back") {
				t.Errorf("service manager told %+v", n)
			}
			if tc.name == "rollback" && (len(r[9]) != 1 || r[9][0] != nil) {
				t.Errorf("rollback caller got %v", r[9])
			}
		})
	}
}

func TestMachineTrialOldDies(t *testing.T) {
	h := reloadIntoTrial(t)
	acts := h.do(EvExited{Gen: 1, Exit: exit1})
	if h.state(2) != Serving || len(replies(acts)[1]) != 1 || replies(acts)[1][0] != nil {
		t.Fatalf("old generation died during the trial: %v", acts)
	}
	if _, ok := find[ActArm](acts); ok && h.m.restart != 0 {
		t.Error("restart scheduled although the new generation serves")
	}
}

func TestMachinePromote(t *testing.T) {
	h := newMtest(t, trialConfig())
	h.do(EvReady{Gen: 1})
	if r := replies(h.do(EvPromote{Caller: 5})); len(r[5]) != 1 || r[5][0] != ErrNoTrial {
		t.Errorf("promote without a trial: %v", r)
	}
	if r := replies(h.do(EvRollback{Caller: 6})); len(r[6]) != 1 || r[6][0] != ErrNoTrial {
		t.Errorf("rollback without a trial: %v", r)
	}
	h.do(EvReload{Caller: 1})
	h.do(EvReady{Gen: 2})
	acts := h.do(EvPromote{Caller: 7})
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != nil || len(r[7]) != 1 || r[7][0] != nil || h.state(1) != Draining {
		t.Errorf("promote: %v", acts)
	}
	if h.armed(TimerTrial, 2) {
		t.Error("trial timer left armed")
	}
}

func TestMachineTrialStop(t *testing.T) {
	h := reloadIntoTrial(t)
	acts := h.do(EvStop{Caller: 4})
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != ErrStopping {
		t.Errorf("reload verdict at the stop: %v", r)
	}
	if len(signals(acts, 1)) != 1 || len(signals(acts, 2)) != 1 || h.m.trial != nil {
		t.Errorf("stop during the trial: %v", acts)
	}
}

func TestMachineWatchdog(t *testing.T) {
	h := newMtest(t, trialConfig())
	if h.armed(TimerWatchdog, 1) {
		t.Fatal("watchdog enforced before READY=1")
	}
	h.do(EvWatchdog{Gen: 1, Kind: WatchdogPing}) // early pings are harmless
	h.do(EvReady{Gen: 1})
	if !h.armed(TimerWatchdog, 1) {
		t.Fatal("no watchdog once serving")
	}
	acts := h.do(EvWatchdog{Gen: 1, Kind: WatchdogPing})
	if a, ok := find[ActArm](acts); !ok || a.After != 2*time.Second {
		t.Errorf("a ping did not re-arm the watchdog: %v", acts)
	}
	acts = h.do(EvWatchdog{Gen: 1, Kind: WatchdogInterval, Interval: 5 * time.Second})
	if a, _ := find[ActArm](acts); a.After != 5*time.Second {
		t.Errorf("WATCHDOG_USEC= did not change the interval: %v", acts)
	}
	acts = h.fire(TimerWatchdog, 1)
	if !slices.Equal(signals(acts, 1), []Signal{SIGABRT}) || !h.armed(TimerAbort, 1) || h.m.stats.WatchdogKills != 1 {
		t.Fatalf("watchdog expiry: %v", acts)
	}
	if acts := h.do(EvWatchdog{Gen: 1, Kind: WatchdogPing}); len(acts) != 0 {
		t.Errorf("a ping after the expiry did %v", acts)
	}
	acts = h.fire(TimerAbort, 1)
	if !slices.Equal(signals(acts, 1), []Signal{SIGKILL}) {
		t.Errorf("after the grace: %v", acts)
	}
	acts = h.do(EvExited{Gen: 1, Exit: bySIGKILL})
	var l ActLog
	for _, a := range acts {
		if x, ok := a.(ActLog); ok && x.Msg == "serving child died" {
			l = x
		}
	}
	if !slices.Contains(l.Attrs, any("killed by signal SIGKILL (after its watchdog expired)")) || h.m.restart == 0 {
		t.Errorf("exit after the watchdog: %+v, restart %v", l, h.m.restart)
	}
	// WATCHDOG_USEC=0 turns it off.
	h2 := newMtest(t, trialConfig())
	h2.do(EvReady{Gen: 1})
	h2.do(EvWatchdog{Gen: 1, Kind: WatchdogInterval})
	if h2.armed(TimerWatchdog, 1) {
		t.Error("WATCHDOG_USEC=0 left the watchdog armed")
	}
}

func TestMachineUpgrade(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	acts := h.do(EvUpgrade{Caller: 1, Binary: "/usr/local/bin/hitless"})
	c, ok := find[ActCheckUpgrade](acts)
	if !ok || c.ID != 1 || c.Binary != "/usr/local/bin/hitless" {
		t.Fatalf("upgrade: %v", acts)
	}
	h.do(EvUpgrade{Caller: 2, Binary: "/usr/local/bin/hitless"}) // joins
	// Another binary is refused while this one is under way: its
	// verdict would not be that caller's.
	var busy *UpgradeBusyError
	if r := replies(h.do(EvUpgrade{Caller: 4, Binary: "/opt/other"})); len(r[4]) != 1 || !errors.As(r[4][0], &busy) || busy.Binary != "/usr/local/bin/hitless" {
		t.Errorf("an upgrade to another binary during this one: %v", r)
	}
	// While the upgrade runs, a reload and a restart wait for it.
	if acts := h.do(EvSignal{Sig: SIGHUP}); !h.m.pending {
		t.Errorf("SIGHUP during the upgrade: %v", acts)
	}
	acts = h.do(EvUpgradeChecked{ID: 1})
	if x, ok := find[ActExecUpgrade](acts); !ok || x.ID != 1 {
		t.Fatalf("after the check: %v", acts)
	}
	acts = h.do(EvUpgradeDone{ID: 1, Result: "ok"})
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != nil || len(r[2]) != 1 || r[2][0] != nil {
		t.Errorf("verdicts %v", r)
	}
	if s, ok := find[ActStart](acts); !ok || s.Kind != KindReload {
		t.Errorf("the SIGHUP during the upgrade did not start: %v", acts)
	}
	if h.m.stats.UpgradesOK != 1 || h.m.stats.LastUpgrade == nil || h.m.stats.LastUpgrade.Result != "ok" {
		t.Errorf("stats %+v", h.m.stats)
	}
	if r := replies(h.do(EvUpgradeResult{Caller: 3})); len(r[3]) != 1 || r[3][0] != nil {
		t.Errorf("UpgradeResult %v", r)
	}
}

func TestMachineUpgradeRefused(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	h.do(EvUpgrade{Caller: 1, Binary: "/tmp/not-hitless"})
	acts := h.do(EvUpgradeChecked{ID: 1, Err: "the new binary failed its check: exit status 3"})
	var uerr *UpgradeError
	if r := replies(acts); len(r[1]) != 1 || !errors.As(r[1][0], &uerr) || uerr.Result != "refused" || !strings.Contains(uerr.Error(), "exit status 3") {
		t.Fatalf("verdict %v", r)
	}
	if h.m.upgrading || h.m.stats.UpgradesFailed != 1 {
		t.Errorf("after a refusal: %+v", h.m.stats)
	}
	// A rollback is reported the same way, to whoever asks after it.
	h.do(EvUpgrade{Caller: 2})
	h.do(EvUpgradeChecked{ID: 2})
	h.do(EvUpgradeDone{ID: 2, Result: "rolled_back", Reason: "restore: injected"})
	if r := replies(h.do(EvUpgradeResult{Caller: 4})); len(r[4]) != 1 || !errors.As(r[4][0], &uerr) || uerr.Result != "rolled_back" {
		t.Errorf("UpgradeResult after a rollback: %v", r)
	}
}

// A stop while the new binary's check runs does not wait for it: the
// check is killed, the upgrade's callers are told that hitless is
// stopping, the stop begins at once (a second SIGINT kills), and the
// check's late answer changes nothing.
func TestMachineStopCancelsCheck(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	h.do(EvUpgrade{Caller: 1, Binary: "/new"})
	acts := h.do(EvSignal{Sig: SIGTERM})
	if c, ok := find[ActCancelCheck](acts); !ok || c.ID != 1 {
		t.Errorf("the check was not cancelled: %v", acts)
	}
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != ErrStopping {
		t.Errorf("the upgrade's caller: %v", r)
	}
	if !h.m.stopping || h.m.upgrading || len(signals(acts, 1)) != 1 {
		t.Errorf("stopping %v, upgrading %v, drain %v", h.m.stopping, h.m.upgrading, signals(acts, 1))
	}
	if acts := h.do(EvSignal{Sig: SIGINT}); len(signals(acts, 1)) != 1 || signals(acts, 1)[0] != SIGKILL {
		t.Errorf("a second SIGINT: %v", acts)
	}
	if acts := h.do(EvUpgradeChecked{ID: 1}); len(acts) != 0 || h.m.stats.LastUpgrade != nil {
		t.Errorf("the cancelled check's answer: %v", acts)
	}
}

// An upgrade asked for during a trial begins at once: the generation on
// trial goes across it, with its deadline; the reload's verdict comes at
// the trial's end, and a reload queued meanwhile starts after both.
func TestMachineUpgradeDuringTrial(t *testing.T) {
	h := reloadIntoTrial(t)
	if acts := h.do(EvUpgrade{Caller: 5, Binary: "/new"}); !h.m.upgrading {
		t.Fatalf("an upgrade during a trial waits: %v", acts)
	}
	h.do(EvSignal{Sig: SIGHUP})
	acts := h.do(EvUpgradeChecked{ID: 1})
	if _, ok := find[ActExecUpgrade](acts); !ok {
		t.Fatalf("after the check: %v", acts)
	}
	if acts := h.do(EvUpgradeDone{ID: 1, Result: "ok"}); h.m.starting != nil {
		t.Errorf("the queued reload started during the trial: %v", acts)
	}
	acts = h.fire(TimerTrial, 2)
	if s, ok := find[ActStart](acts); h.state(2) != Serving || !ok || s.Gen != 3 {
		t.Errorf("the trial's end: %v", acts)
	}
}

func TestMachineUpgradeWaitsForReload(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	h.do(EvReload{Caller: 1})
	if acts := h.do(EvUpgrade{Caller: 2}); len(acts) != 0 || !h.m.upgradeQueued {
		t.Fatalf("upgrade during a reload: %v", acts)
	}
	acts := h.do(EvReady{Gen: 2})
	if _, ok := find[ActCheckUpgrade](acts); !ok {
		t.Errorf("the upgrade did not begin once the reload was over: %v", acts)
	}
	// A stop during the hand-over (the exec under way) is carried
	// across it, and stops after it.
	h.do(EvUpgradeChecked{ID: 1})
	if acts := h.do(EvStop{Caller: 3}); len(acts) != 0 || h.m.stopping {
		t.Errorf("stop during the hand-over: %v", acts)
	}
	acts = h.do(EvUpgradeDone{ID: 1, Result: "failed", Reason: "exec: permission denied"})
	if !h.m.stopping || len(signals(acts, 2)) != 1 {
		t.Errorf("after the upgrade, the stop: %v", acts)
	}
	// The restart timer that fires during an upgrade waits for it too.
	h2 := newMtest(t, testMachineConfig)
	h2.do(EvReady{Gen: 1})
	h2.do(EvExited{Gen: 1, Exit: exit1})
	h2.do(EvUpgrade{Caller: 1})
	if acts := h2.fire(TimerRestart, 0); len(acts) != 0 || !h2.m.restartDue {
		t.Errorf("restart during the upgrade: %v", acts)
	}
	h2.do(EvUpgradeChecked{ID: 1, Err: "refused"})
	if h2.m.starting == nil || h2.m.starting.kind != KindRestart {
		t.Errorf("no restart after the upgrade")
	}
}

// SIGUSR1 and SIGUSR2 reach every generation that serves: the one on
// trial reopens its logs too.
func TestMachineForwardDuringTrial(t *testing.T) {
	h := reloadIntoTrial(t)
	acts := h.do(EvSignal{Sig: SIGUSR1})
	if !slices.Equal(signals(acts, 1), []Signal{SIGUSR1}) || !slices.Equal(signals(acts, 2), []Signal{SIGUSR1}) {
		t.Errorf("SIGUSR1 during a trial: %v", acts)
	}
}
