//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var testMachineConfig = machineConfig{
	ReadyTimeout: 60 * time.Second, DrainTimeout: 30 * time.Second,
	BackoffMin: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond, StableAfter: 10 * time.Second,
	DrainSignal: syscall.SIGTERM,
}

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// Wait statuses as the kernel reports them.
var (
	exit0     = unix.WaitStatus(0)
	exit1     = unix.WaitStatus(1 << 8)
	exit3     = unix.WaitStatus(3 << 8)
	bySIGTERM = unix.WaitStatus(syscall.SIGTERM)
	bySIGKILL = unix.WaitStatus(syscall.SIGKILL)
)

// mtest drives a machine through events, answering every spawn with
// success (pid 1000+generation) unless told otherwise.
type mtest struct {
	t        *testing.T
	m        *machine
	now      time.Time
	failNext bool // answer the next actStart with a failure
	log      []action
}

func newMtest(t *testing.T, cfg machineConfig) *mtest {
	h := &mtest{t: t, m: newMachine(cfg), now: t0}
	h.settle(h.m.begin(h.now))
	return h
}

// settle answers spawns until none is left, and returns every action.
func (h *mtest) settle(acts []action) []action {
	var all []action
	for len(acts) > 0 {
		all = append(all, acts...)
		var next []action
		for _, a := range acts {
			if s, ok := a.(actStart); ok {
				var ev event = evSpawned{gen: s.gen, pid: 1000 + s.gen}
				if h.failNext {
					h.failNext = false
					ev = evSpawnFailed{gen: s.gen, err: "start: program: no such file or directory"}
				}
				next = append(next, h.m.step(h.now, ev)...)
			}
		}
		acts = next
	}
	h.log = append(h.log, all...)
	return all
}

func (h *mtest) do(ev event) []action {
	h.t.Helper()
	return h.settle(h.m.step(h.now, ev))
}

func (h *mtest) after(d time.Duration) { h.now = h.now.Add(d) }

// fire fires the armed timer of the given kind (of generation gen, 0 for
// the restart timer).
func (h *mtest) fire(kind timerKind, gen int) []action {
	h.t.Helper()
	for id, ref := range h.m.timers {
		if ref.kind == kind && (ref.gen == nil && gen == 0 || ref.gen != nil && ref.gen.id == gen) {
			return h.do(evTimer{id: id, stderr: []string{"last words"}})
		}
	}
	h.t.Fatalf("no timer of kind %d armed for generation %d; armed: %v", kind, gen, h.m.timers)
	return nil
}

func (h *mtest) armed(kind timerKind, gen int) bool {
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

func signals(acts []action, gen int) []syscall.Signal {
	var sigs []syscall.Signal
	for _, a := range acts {
		if s, ok := a.(actSignal); ok && s.gen == gen {
			sigs = append(sigs, s.sig)
		}
	}
	return sigs
}

func replies(acts []action) map[callerID][]error {
	r := map[callerID][]error{}
	for _, a := range acts {
		switch a := a.(type) {
		case actReply:
			r[a.caller] = append(r[a.caller], a.err)
		case actExit:
			for _, c := range a.callers {
				r[c] = append(r[c], nil)
			}
		}
	}
	return r
}

func find[T action](acts []action) (T, bool) {
	for _, a := range acts {
		if x, ok := a.(T); ok {
			return x, true
		}
	}
	var zero T
	return zero, false
}

func logged(acts []action, msg string) bool {
	for _, a := range acts {
		if l, ok := a.(actLog); ok && l.msg == msg {
			return true
		}
	}
	return false
}

func TestMachineFirstStart(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	if start, ok := find[actStart](h.log); !ok || start.gen != 1 || start.kind != kindInitial {
		t.Fatalf("begin: %v", h.log)
	}
	if !h.armed(timerReady, 1) || h.state(1) != Starting {
		t.Fatalf("after spawn: state %s, timers %v", h.state(1), h.m.timers)
	}
	h.after(1500 * time.Millisecond)
	acts := h.do(evReady{gen: 1})
	if h.state(1) != Serving || h.armed(timerReady, 1) {
		t.Fatalf("after READY=1: state %s, timers %v", h.state(1), h.m.timers)
	}
	n, ok := find[actNotify](acts)
	if !ok || n.what != notifyReady || n.text != "serving: generation 1 (pid 1001)" {
		t.Errorf("notify: %+v", n)
	}
	if l, _ := find[actLog](acts); l.msg != "serving" || !slices.Contains(l.attrs, any(1500*time.Millisecond)) {
		t.Errorf("log: %+v", l)
	}
	if acts := h.do(evReady{gen: 1}); len(acts) != 0 {
		t.Errorf("a second READY=1 did something: %v", acts)
	}
}

func TestMachineReload(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	acts := h.do(evReload{caller: 7})
	if n, _ := find[actNotify](acts); n.what != notifyReloading {
		t.Errorf("no RELOADING=1: %v", acts)
	}
	if s, _ := find[actStart](acts); s.gen != 2 || s.kind != kindReload {
		t.Fatalf("reload started %+v", s)
	}
	if len(signals(acts, 1)) != 0 || h.state(1) != Serving {
		t.Fatal("the serving generation was touched before the new one was ready")
	}
	acts = h.do(evReady{gen: 2})
	if got := signals(acts, 1); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM}) {
		t.Errorf("old generation got %v, want one SIGTERM", got)
	}
	if !h.armed(timerDrain, 1) || h.state(1) != Draining || h.state(2) != Serving {
		t.Errorf("states %s %s, timers %v", h.state(1), h.state(2), h.m.timers)
	}
	if r := replies(acts); len(r[7]) != 1 || r[7][0] != nil {
		t.Errorf("caller replies %v", r)
	}
	if h.m.stats.ReloadsOK != 1 {
		t.Errorf("stats %+v", h.m.stats)
	}
	acts = h.do(evExited{gen: 1, status: bySIGTERM})
	if !logged(acts, "drained") || h.armed(timerDrain, 1) {
		t.Errorf("drained: %v", acts)
	}
	if _, ok := find[actForget](acts); !ok {
		t.Error("exited generation not forgotten")
	}
}

func TestMachineReloadsQueueBehindStart(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	h.do(evReload{caller: 1})
	for c := callerID(2); c <= 5; c++ {
		if acts := h.do(evReload{caller: c}); len(acts) != 0 {
			t.Fatalf("a reload during a reload did %v", acts)
		}
	}
	h.do(evSignal{sig: syscall.SIGHUP})
	acts := h.do(evReady{gen: 2})
	r := replies(acts)
	if len(r) != 1 || len(r[1]) != 1 {
		t.Errorf("first reload's verdict went to %v", r)
	}
	if s, ok := find[actStart](acts); !ok || s.gen != 3 {
		t.Fatalf("queued reload not started: %v", acts)
	}
	acts = h.do(evReady{gen: 3})
	if r := replies(acts); len(r) != 4 {
		t.Errorf("queued callers' verdicts: %v", r)
	}
	if _, ok := find[actStart](acts); ok || h.m.lastID != 3 {
		t.Errorf("a burst of reloads ran more than two starts")
	}
}

// A caller that gives up waiting (its context ended) is forgotten: it
// gets no verdict, and no one else can take its place; what it asked
// for goes on, and those who wait on get their verdicts.
func TestMachineCancelledWait(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	h.do(evReload{caller: 1})
	h.do(evReload{caller: 2})
	h.do(evReload{caller: 3})
	h.do(evUpgrade{caller: 4, binary: "/new/hitless"})
	for _, c := range []callerID{1, 3, 4} {
		if acts := h.do(evCancel{caller: c}); len(acts) != 0 {
			t.Errorf("caller %d gave up: %v", c, acts)
		}
	}
	if !slices.Equal(h.m.waiting, nil) || !slices.Equal(h.m.queued, []callerID{2}) || len(h.m.upgradeCallers) != 0 {
		t.Errorf("waiting %v, queued %v, upgrade %v; want only caller 2, queued", h.m.waiting, h.m.queued, h.m.upgradeCallers)
	}
	acts := h.do(evReady{gen: 2})
	if r := replies(acts); len(r) != 0 {
		t.Errorf("the reload of callers who gave up answered %v", r)
	}
	if s, ok := find[actStart](acts); !ok || s.gen != 3 {
		t.Fatalf("the queued reload did not start: %v", acts)
	}
	acts = h.do(evReady{gen: 3})
	if r := replies(acts); len(r) != 1 || len(r[2]) != 1 || r[2][0] != nil {
		t.Errorf("the queued reload's verdict went to %v, want caller 2 alone", r)
	}
	if _, ok := find[actCheckUpgrade](acts); !ok {
		t.Fatalf("the upgrade whose caller gave up did not begin: %v", acts)
	}
	h.do(evUpgradeChecked{id: 1})
	if r := replies(h.do(evUpgradeDone{id: 1, result: "ok"})); len(r) != 0 {
		t.Errorf("the upgrade answered %v, its caller gone", r)
	}
}

func TestMachineFailedReloads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fail   func(h *mtest) []action
		reason string
		drains bool // what is left of the child gets the drain signal
	}{
		{"exits before ready", func(h *mtest) []action {
			return h.do(evExited{gen: 2, status: exit1, stderr: []string{"listen: config.yaml: no such file"}})
		}, "exited before ready: exit status 1", false},
		{"not ready in time", func(h *mtest) []action { return h.fire(timerReady, 2) }, "not ready within 1m0s", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newMtest(t, testMachineConfig)
			h.do(evReady{gen: 1})
			h.do(evReload{caller: 9})
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
				if h.state(2) != Failed || !h.armed(timerDrain, 2) {
					t.Fatalf("failed generation: %s, timers %v", h.state(2), h.m.timers)
				}
				acts = h.fire(timerDrain, 2)
				if !slices.Equal(signals(acts, 2), []syscall.Signal{syscall.SIGKILL}) {
					t.Errorf("at the drain deadline: %v", acts)
				}
				if acts = h.do(evExited{gen: 2, status: bySIGKILL}); !logged(acts, "failed generation drained") {
					t.Errorf("exit of the failed generation: %v", acts)
				}
			}
			if h.m.stats.ReloadsFailed != 1 || !strings.Contains(h.m.stats.LastFailure, tc.reason) {
				t.Errorf("stats %+v", h.m.stats)
			}
			// The next reload works.
			h.do(evReload{caller: 10})
			if acts := h.do(evReady{gen: 3}); len(replies(acts)[10]) != 1 || h.state(1) != Draining {
				t.Errorf("next reload: %v", acts)
			}
		})
	}
}

func TestMachineSpawnFailure(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	h.failNext = true
	acts := h.do(evReload{caller: 1})
	var rerr *ReloadError
	if r := replies(acts); len(r[1]) != 1 || !errors.As(r[1][0], &rerr) || rerr.PID != 0 || !strings.Contains(rerr.Reason, "no such file") {
		t.Fatalf("verdict %v", r)
	}
	var n actNotify
	for _, a := range acts {
		if x, ok := a.(actNotify); ok {
			n = x
		}
	}
	if n.what != notifyReady || !strings.Contains(n.text, "reload failed") || !strings.Contains(n.text, "generation 1 (pid 1001) still serving") {
		t.Errorf("service manager told %+v", n)
	}
	if h.m.starting != nil || len(h.m.gens) != 1 {
		t.Errorf("machine after a spawn failure: %+v", h.m)
	}
}

func TestMachineFirstChildFails(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReload{caller: 4}) // queued behind the first start
	acts := h.do(evExited{gen: 1, status: exit1})
	x, ok := find[actExit](acts)
	if !ok || x.err == nil || !strings.HasPrefix(x.err.Error(), "first child: generation 1 (pid 1001) failed: exited before ready") {
		t.Fatalf("exit %+v", x)
	}
	if r := replies(acts); len(r[4]) != 1 || r[4][0] != ErrStopping {
		t.Errorf("queued reload: %v", r)
	}
	if acts := h.do(evReload{caller: 5}); len(acts) != 0 {
		t.Errorf("the machine acted after it finished: %v", acts)
	}
}

func TestMachineCrashRestartBackoff(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	var delays []time.Duration
	gen := 1
	for range 4 {
		acts := h.do(evExited{gen: gen, status: exit3, stderr: []string{"a", "b", "c", "panic: boom"}})
		arm, ok := find[actArm](acts)
		if !ok || !logged(acts, "serving child died") {
			t.Fatalf("no restart after a crash: %v", acts)
		}
		delays = append(delays, arm.after)
		acts = h.fire(timerRestart, 0)
		gen++
		if s, _ := find[actStart](acts); s.gen != gen || s.kind != kindRestart {
			t.Fatalf("restart started %+v", s)
		}
		acts = h.do(evReady{gen: gen})
		if n, _ := find[actNotify](acts); n.what != notifyStatus || !strings.HasPrefix(n.text, "restarted") {
			t.Errorf("restart notify %+v", n)
		}
	}
	if want := []time.Duration{100, 200, 400, 400}; !slices.Equal(delays, scale(want, time.Millisecond)) {
		t.Errorf("backoff %v, want %v ms", delays, want)
	}
	// A child that served StableAfter resets the backoff.
	h.after(testMachineConfig.StableAfter)
	acts := h.do(evExited{gen: gen, status: exit3})
	if arm, _ := find[actArm](acts); arm.after != 100*time.Millisecond {
		t.Errorf("after a stable child: %v", arm.after)
	}
	if h.m.stats.Restarts != 4 {
		t.Errorf("stats %+v", h.m.stats)
	}
	// An operator's reload during the backoff runs at once.
	acts = h.do(evReload{caller: 3})
	if _, ok := find[actDisarm](acts); !ok || h.m.restart != 0 {
		t.Errorf("restart timer left armed: %v", acts)
	}
	if s, _ := find[actStart](acts); s.kind != kindReload {
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
		status unix.WaitStatus
		code   int
	}{
		{exit0, 0},
		{bySIGTERM, 0}, // a server without a handler for the drain signal
		{exit3, 3},
		{bySIGKILL, 137},
	} {
		t.Run(exitReason(tc.status), func(t *testing.T) {
			h := newMtest(t, testMachineConfig)
			h.do(evReady{gen: 1})
			acts := h.do(evStop{caller: 2})
			if n, _ := find[actNotify](acts); n.what != notifyStopping {
				t.Errorf("no STOPPING=1: %v", acts)
			}
			if _, ok := find[actRelease](acts); !ok {
				t.Error("sockets not released at the stop")
			}
			if !slices.Equal(signals(acts, 1), []syscall.Signal{syscall.SIGTERM}) || !h.armed(timerDrain, 1) {
				t.Errorf("serving generation at stop: %v", acts)
			}
			if r := replies(acts); len(r) != 0 {
				t.Errorf("stop answered before the children exited: %v", r)
			}
			h.do(evStop{caller: 3})
			acts = h.do(evExited{gen: 1, status: tc.status})
			x, ok := find[actExit](acts)
			if !ok || !slices.Equal(x.callers, []callerID{2, 3}) {
				t.Fatalf("exit %+v", x)
			}
			var xerr *ExitError
			if tc.code == 0 && x.err != nil || tc.code != 0 && (!errors.As(x.err, &xerr) || xerr.Code != tc.code) {
				t.Errorf("exit error %v, want code %d", x.err, tc.code)
			}
		})
	}
}

// Bug 1: a SIGTERM during the first start, a child that ignores it and
// sends READY=1 later: the READY must not cancel the drain deadline.
func TestMachineStopDuringStartThenReady(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evSignal{sig: syscall.SIGTERM})
	if h.state(1) != Draining || !h.armed(timerDrain, 1) {
		t.Fatalf("starting generation at stop: %s %v", h.state(1), h.m.timers)
	}
	if acts := h.do(evReady{gen: 1}); len(acts) != 0 {
		t.Fatalf("READY=1 after the stop did %v", acts)
	}
	acts := h.fire(timerDrain, 1)
	if !slices.Equal(signals(acts, 1), []syscall.Signal{syscall.SIGKILL}) {
		t.Fatalf("deadline: %v", acts)
	}
	acts = h.do(evExited{gen: 1, status: bySIGKILL})
	if _, ok := find[actExit](acts); !ok || !logged(acts, "stopped before ready") {
		t.Errorf("never finished: %v", acts)
	}
}

// Bug 2: SIGHUP, SIGTERM, then the new child's READY=1: the old
// generation gets its drain signal once, and the new one keeps its drain
// deadline.
func TestMachineReloadStopReady(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	h.do(evSignal{sig: syscall.SIGHUP})
	h.do(evSignal{sig: syscall.SIGTERM})
	h.do(evReady{gen: 2})
	if got := signals(h.log, 1); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM}) {
		t.Errorf("old generation got %v", got)
	}
	if !h.armed(timerDrain, 2) || !h.armed(timerDrain, 1) || h.state(2) != Draining {
		t.Errorf("drain deadlines: %v, new generation %s", h.m.timers, h.state(2))
	}
}

func TestMachineSignals(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	if acts := h.do(evSignal{sig: syscall.SIGUSR1}); len(signals(acts, 1)) != 0 {
		t.Error("forwarded to a child that does not serve yet")
	}
	h.do(evReady{gen: 1})
	if acts := h.do(evSignal{sig: syscall.SIGUSR2}); !slices.Equal(signals(acts, 1), []syscall.Signal{syscall.SIGUSR2}) {
		t.Errorf("USR2: %v", acts)
	}
	h.do(evSignal{sig: syscall.SIGHUP})
	h.do(evSignal{sig: syscall.SIGINT})
	acts := h.do(evSignal{sig: syscall.SIGINT})
	if !slices.Equal(signals(acts, 1), []syscall.Signal{syscall.SIGKILL}) || !slices.Equal(signals(acts, 2), []syscall.Signal{syscall.SIGKILL}) {
		t.Errorf("second SIGINT: %v", acts)
	}
}

func TestMachineReadyDelay(t *testing.T) {
	cfg := testMachineConfig
	cfg.ReadyDelay = 2 * time.Second
	h := newMtest(t, cfg)
	acts := h.fire(timerReadyDelay, 1)
	if h.state(1) != Serving {
		t.Fatalf("after the delay: %s %v", h.state(1), acts)
	}
	if _, ok := find[actDisarm](acts); !ok {
		t.Error("ready timeout left armed")
	}
}

func TestMachineStatusAndWatchdog(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	if acts := h.do(evTick{}); len(acts) != 0 {
		t.Errorf("watchdog ping before anything serves: %v", acts)
	}
	h.do(evReady{gen: 1})
	if n, _ := find[actNotify](h.do(evTick{})); n.what != notifyWatchdog {
		t.Error("no watchdog ping while serving")
	}
	h.do(evReload{caller: 1})
	acts := h.do(evStatus{caller: 2})
	st, ok := find[actStatus](acts)
	if !ok || st.caller != 2 || len(st.view.gens) != 2 || st.view.gens[0].state != Serving || st.view.gens[1].state != Starting {
		t.Errorf("status %+v", st)
	}
}

func TestMachineStaleTimer(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	var ready timerID
	for id := range h.m.timers {
		ready = id
	}
	h.do(evReady{gen: 1})
	if acts := h.do(evTimer{id: ready}); len(acts) != 0 || h.state(1) != Serving {
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
	trial := func(c *machineConfig) { c.Trial, c.Watchdog, c.WatchdogGrace = 3*time.Second, time.Second, time.Second }
	for _, tc := range []struct {
		name     string
		depth    int
		set      func(*machineConfig)
		upgrades bool
	}{
		{"ready notify", depth, func(*machineConfig) {}, false},
		{"ready delay", depth, func(c *machineConfig) { c.ReadyDelay = time.Second }, false},
		{"trial and watchdog", depth - 1, trial, false},
		{"upgrades", depth, nil, true},
		// An upgrade goes across a trial: both, with a shallower search.
		{"upgrades and trial", depth - 1, func(c *machineConfig) { c.Trial = 3 * time.Second }, true},
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
	ev        event
	spawnFail []bool
}

func (tr transition) String() string {
	return fmt.Sprintf("%T%+v%v", tr.ev, tr.ev, tr.spawnFail)
}

// observer follows the actions of a path and holds what the invariants
// need beyond the machine's own state.
type observer struct {
	callers  map[callerID]string // caller -> "reload" or "stop"
	replied  map[callerID]int
	gaveUp   map[callerID]bool // callers that stopped waiting before their verdict (evCancel)
	killed   map[int]bool      // generations sent SIGKILL
	armed    []timerID         // every timer armed on the path, for stale firings
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
	return &observer{callers: map[callerID]string{}, replied: map[callerID]int{}, gaveUp: map[callerID]bool{}, killed: map[int]bool{}, drainSig: map[int]int{}, drainArm: map[int]int{}}
}

type pathState struct {
	m        *machine
	obs      *observer
	watchdog bool // explore watchdog events
	upgrades bool // explore upgrades
}

// apply runs one transition, checking the invariants of each step. It
// returns false when the transition needs more spawn answers than given.
func (ps *pathState) apply(cfg machineConfig, tr transition, check func(string, ...any)) bool {
	m, obs := ps.m, ps.obs
	switch ev := tr.ev.(type) {
	case evReload:
		obs.callers[ev.caller] = "reload"
	case evStop:
		obs.callers[ev.caller] = "stop"
	case evPromote:
		obs.callers[ev.caller] = "promote"
	case evRollback:
		obs.callers[ev.caller] = "rollback"
	case evUpgrade:
		obs.callers[ev.caller] = "upgrade"
	case evCancel:
		obs.gaveUp[ev.caller] = true
	case evUpgradeChecked:
		if ev.id == obs.cancelled {
			obs.cancelled = 0
		} else {
			obs.checking = 0
		}
	case evUpgradeDone:
		obs.execing = 0
	}
	var preKey string
	if _, ok := tr.ev.(evReady); ok {
		preKey = machineKey(m)
	}
	pre := map[int]bool{} // drainSent before the step
	for _, g := range m.gens {
		pre[g.id] = g.drainSent
	}
	preArmed := map[timerID]bool{}
	for id := range m.timers {
		preArmed[id] = true
	}
	var preStale string
	if ev, ok := tr.ev.(evUpgradeChecked); ok && ev.id == obs.cancelled {
		preStale = machineKey(m)
	}
	var preStarting *mgen
	if m.starting != nil && m.starting.state == Starting {
		preStarting = m.starting
	}
	var acts []action
	if tr.ev == nil {
		acts = m.begin(t0)
	} else {
		acts = m.step(t0, tr.ev)
	}
	used := 0
	var all []action
	for len(acts) > 0 {
		all = append(all, acts...)
		var next []action
		for _, a := range acts {
			s, ok := a.(actStart)
			if !ok {
				continue
			}
			if used == len(tr.spawnFail) {
				return false
			}
			var ev event = evSpawned{gen: s.gen, pid: 1000 + s.gen}
			if tr.spawnFail[used] {
				ev = evSpawnFailed{gen: s.gen, err: "start failed"}
			}
			used++
			next = append(next, m.step(t0, ev)...)
		}
		acts = next
	}
	if used != len(tr.spawnFail) {
		return false
	}

	// Invariants of the transition.
	switch ev := tr.ev.(type) {
	case evReady:
		if preStarting == nil || preStarting.id != ev.gen {
			if len(all) != 0 || machineKey(m) != preKey {
				check("READY=1 from generation %d, not the starting one, changed the machine: %v", ev.gen, all)
			}
		}
	case evTimer:
		if !preArmed[ev.id] && len(all) != 0 {
			check("stale timer %d did %v", ev.id, all)
		}
	case evUpgradeChecked:
		if preStale != "" && (len(all) != 0 || machineKey(m) != preStale) {
			check("the answer of cancelled check %d changed the machine: %v", ev.id, all)
		}
	}
	if obs.finished && len(all) != 0 {
		check("the machine acted after it finished: %v", all)
	}
	for _, a := range all {
		switch a := a.(type) {
		case actSignal:
			if a.sig == cfg.DrainSignal {
				obs.drainSig[a.gen]++
				if obs.drainSig[a.gen] > 1 || pre[a.gen] {
					check("generation %d sent the drain signal twice", a.gen)
				}
			}
			if a.sig == syscall.SIGKILL {
				obs.killed[a.gen] = true
			}
		case actCheckUpgrade:
			if obs.checking != 0 || obs.execing != 0 {
				check("upgrade %d checked while upgrade %d/%d is in flight", a.id, obs.checking, obs.execing)
			}
			obs.checking = a.id
		case actExecUpgrade:
			obs.execing = a.id
		case actCancelCheck:
			if obs.checking != a.id {
				check("cancelled check %d, but the check running is %d", a.id, obs.checking)
			}
			obs.checking, obs.cancelled = 0, a.id
		case actArm:
			obs.armed = append(obs.armed, a.id)
			if a.kind == timerDrain {
				obs.drainArm[a.gen]++
			}
		case actReply:
			if k := obs.callers[a.caller]; k == "stop" || k == "" || obs.gaveUp[a.caller] {
				check("reply to %d (%q, gave up %v), which is not waiting for a reply", a.caller, k, obs.gaveUp[a.caller])
			}
			obs.replied[a.caller]++
		case actExit:
			obs.finished = true
			for _, c := range a.callers {
				if obs.callers[c] != "stop" {
					check("stop reply to %d, which did not ask to stop", c)
				}
				obs.replied[c]++
			}
			for c := range obs.callers {
				if want := map[bool]int{false: 1, true: 0}[obs.gaveUp[c]]; obs.replied[c] != want {
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
		if ref.kind == timerDrain {
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
		if ref.kind == timerWatchdog && ref.gen.state != Serving && ref.gen.state != Trial {
			check("watchdog armed for generation %d, which is %s", ref.gen.id, ref.gen.state)
		}
		if ref.kind == timerTrial && ref.gen != m.trial {
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
func machineKey(m *machine) string {
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
		for _, t := range []timerID{g.ready, g.delay, g.drain, g.trial, g.watchdog, g.abort} {
			if t != 0 {
				fmt.Fprintf(&b, "t%d,", t)
			}
		}
	}
	return b.String()
}

func (obs *observer) key() string {
	return fmt.Sprintf("%v|%v|%v|%v|%v|%d|%d|%d", obs.callers, obs.replied, obs.gaveUp, obs.killed, obs.finished, obs.checking, obs.execing, obs.cancelled)
}

func replay(cfg machineConfig, path []transition) *pathState {
	ps := &pathState{m: newMachine(cfg), obs: newObserver()}
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
	m.timers = make(map[timerID]timerRef, len(ps.m.timers))
	for id, ref := range ps.m.timers {
		m.timers[id] = timerRef{kind: ref.kind, gen: remap(ref.gen)}
	}
	o := *ps.obs
	o.callers, o.replied, o.killed, o.gaveUp = maps.Clone(o.callers), maps.Clone(o.replied), maps.Clone(o.killed), maps.Clone(o.gaveUp)
	o.drainSig, o.drainArm, o.armed = maps.Clone(o.drainSig), maps.Clone(o.drainArm), slices.Clone(o.armed)
	return &pathState{m: &m, obs: &o, watchdog: ps.watchdog, upgrades: ps.upgrades}
}

// The clone above copies every field of machine and mgen by hand; a new
// field must be handled there.
func TestCloneCoversMachine(t *testing.T) {
	if n := reflect.TypeFor[machine]().NumField(); n != 30 {
		t.Errorf("machine has %d fields: check that pathState.clone copies the new ones deeply, and that exportMachine and importMachine (handoff.go) carry them across an upgrade, then update this count", n)
	}
	if n := reflect.TypeFor[mgen]().NumField(); n != 18 {
		t.Errorf("mgen has %d fields: check pathState.clone, exportMachine and importMachine, then update this count", n)
	}
	ps := replay(testMachineConfig, []transition{{spawnFail: []bool{false}}, {ev: evReady{gen: 1}}, {ev: evReload{caller: 1}, spawnFail: []bool{false}}})
	c := ps.clone()
	c.apply(testMachineConfig, transition{ev: evStop{caller: 2}}, func(string, ...any) {})
	if machineKey(ps.m) == machineKey(c.m) || ps.m.stopping || len(ps.obs.callers) != 1 {
		t.Error("a clone shares state with its original")
	}
}

// candidates lists the events that can happen next: signals, requests
// (a bounded number of callers), READY=1 from any generation, any exit of
// any live generation, and any timer firing, stale ones included.
func candidates(ps *pathState) []event {
	m, obs := ps.m, ps.obs
	evs := []event{evSignal{sig: syscall.SIGHUP}, evSignal{sig: syscall.SIGTERM}, evSignal{sig: syscall.SIGINT}, evTick{}}
	next := callerID(len(obs.callers) + 1)
	if len(obs.callers) < 3 {
		evs = append(evs, evReload{caller: next}, evStop{caller: next})
	}
	if len(obs.callers) < 3 {
		evs = append(evs, evPromote{caller: next}, evRollback{caller: next})
		if ps.upgrades {
			evs = append(evs, evUpgrade{caller: next, binary: "/new/hitless"}, evUpgrade{caller: next, binary: "/other/hitless"})
		}
	}
	// A caller of a reload or an upgrade that gives up before its verdict.
	for _, c := range slices.Sorted(maps.Keys(obs.callers)) {
		if k := obs.callers[c]; (k == "reload" || k == "upgrade") && obs.replied[c] == 0 && !obs.gaveUp[c] {
			evs = append(evs, evCancel{caller: c})
		}
	}
	if obs.checking != 0 {
		evs = append(evs, evUpgradeChecked{id: obs.checking}, evUpgradeChecked{id: obs.checking, err: "not hitless"})
	}
	if obs.cancelled != 0 {
		evs = append(evs, evUpgradeChecked{id: obs.cancelled})
	}
	if obs.execing != 0 {
		evs = append(evs, evUpgradeDone{id: obs.execing, result: "ok"}, evUpgradeDone{id: obs.execing, result: "failed", reason: "exec: ENOENT"})
	}
	for _, g := range m.gens {
		evs = append(evs, evReady{gen: g.id})
		if ps.watchdog {
			evs = append(evs, evWatchdog{gen: g.id, kind: watchdogPing}, evWatchdog{gen: g.id, kind: watchdogTrigger},
				evWatchdog{gen: g.id, kind: watchdogInterval, usec: 0})
		}
		statuses := []unix.WaitStatus{exit0, exit1, bySIGTERM}
		if obs.killed[g.id] {
			statuses = []unix.WaitStatus{bySIGKILL}
		}
		for _, st := range statuses {
			evs = append(evs, evExited{gen: g.id, status: st})
		}
	}
	for _, id := range obs.armed {
		evs = append(evs, evTimer{id: id})
	}
	return evs
}

// expand returns the transitions for ev from ps, one per combination of
// spawn answers it needs, each with the state it leads to.
func expand(cfg machineConfig, ps *pathState, ev event, check func(transition) func(string, ...any)) ([]transition, []*pathState) {
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

func explore(t *testing.T, cfg machineConfig, depth int, upgrades bool) (states, transitions int) {
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
	trs, pss := expand(cfg, &pathState{m: newMachine(cfg), obs: newObserver(), watchdog: cfg.Watchdog > 0, upgrades: upgrades}, nil, checker(nil))
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
func checkCompletion(t *testing.T, cfg machineConfig, path []transition, ps *pathState) {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Errorf("completing %v:\n"+format, append([]any{path}, a...)...)
	}
	caller := callerID(len(ps.obs.callers) + 1)
	steps := []event{evStop{caller: caller}}
	for i := 0; i < 50 && !ps.obs.finished; i++ {
		if len(steps) == 0 {
			if id := ps.obs.checking; id != 0 {
				steps = append(steps, evUpgradeChecked{id: id, err: "refused"})
			}
			if id := ps.obs.cancelled; id != 0 {
				steps = append(steps, evUpgradeChecked{id: id})
			}
			if id := ps.obs.execing; id != 0 {
				steps = append(steps, evUpgradeDone{id: id, result: "failed", reason: "exec failed"})
			}
			for id := range ps.m.timers {
				steps = append(steps, evTimer{id: id})
			}
			for _, g := range ps.m.gens {
				if ps.obs.killed[g.id] {
					steps = append(steps, evExited{gen: g.id, status: bySIGKILL})
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

func trialConfig() machineConfig {
	cfg := testMachineConfig
	cfg.Trial, cfg.Watchdog, cfg.WatchdogGrace = 3*time.Second, 2*time.Second, time.Second
	return cfg
}

// reloadIntoTrial serves generation 1, reloads, and brings generation 2
// into its trial.
func reloadIntoTrial(t *testing.T) *mtest {
	h := newMtest(t, trialConfig())
	h.do(evReady{gen: 1})
	h.do(evReload{caller: 1})
	acts := h.do(evReady{gen: 2})
	if h.state(2) != Trial || h.state(1) != Serving || len(signals(acts, 1)) != 0 || len(replies(acts)) != 0 {
		t.Fatalf("into the trial: %s %s %v", h.state(1), h.state(2), acts)
	}
	if !h.armed(timerTrial, 2) || !h.armed(timerWatchdog, 2) || !h.armed(timerWatchdog, 1) {
		t.Fatalf("timers in the trial: %v", h.m.timers)
	}
	return h
}

func TestMachineTrialPasses(t *testing.T) {
	h := reloadIntoTrial(t)
	if acts := h.do(evSignal{sig: syscall.SIGHUP}); len(acts) != 1 || !h.m.pending {
		t.Errorf("SIGHUP during the trial: %v", acts) // queued: only the log line
	}
	h.after(3 * time.Second)
	acts := h.fire(timerTrial, 2)
	if h.state(2) != Serving || h.state(1) != Draining || !slices.Equal(signals(acts, 1), []syscall.Signal{syscall.SIGTERM}) {
		t.Fatalf("after the trial: %s %s %v", h.state(1), h.state(2), acts)
	}
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != nil {
		t.Errorf("verdict %v", r)
	}
	if o, ok := find[actObserve](acts); !ok || o.what != observeReload || o.d != 3*time.Second {
		t.Errorf("reload observed as %+v", o)
	}
	if s, ok := find[actStart](acts); !ok || s.gen != 3 {
		t.Errorf("the SIGHUP queued during the trial did not start: %v", acts)
	}
}

func TestMachineTrialRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fail   func(h *mtest) []action
		reason string
		drains bool
	}{
		{"crash", func(h *mtest) []action {
			return h.do(evExited{gen: 2, status: unix.WaitStatus(4 << 8), stderr: []string{"panic: nil map"}})
		}, "rolled back during the trial: exited: exit status 4", false},
		{"watchdog", func(h *mtest) []action { return h.fire(timerWatchdog, 2) }, "rolled back during the trial: its watchdog expired: no WATCHDOG=1 within 2s", true},
		{"trigger", func(h *mtest) []action { return h.do(evWatchdog{gen: 2, kind: watchdogTrigger}) }, "its watchdog expired: it sent WATCHDOG=trigger", true},
		{"rollback", func(h *mtest) []action { return h.do(evRollback{caller: 9}) }, "rolled back during the trial: asked by hitless rollback", true},
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
			if got := signals(acts, 2); tc.drains != slices.Equal(got, []syscall.Signal{syscall.SIGTERM}) {
				t.Errorf("new generation got %v", got)
			}
			if h.m.trial != nil || h.m.stats.ReloadsRolledBack != 1 || h.m.stats.ReloadsFailed != 0 {
				t.Errorf("after the rollback: trial %v, stats %+v", h.m.trial, h.m.stats)
			}
			var n actNotify
			for _, a := range acts {
				if x, ok := a.(actNotify); ok {
					n = x
				}
			}
			if n.what != notifyReady || !strings.HasPrefix(n.text, "reload rolled back") {
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
	acts := h.do(evExited{gen: 1, status: exit1})
	if h.state(2) != Serving || len(replies(acts)[1]) != 1 || replies(acts)[1][0] != nil {
		t.Fatalf("old generation died during the trial: %v", acts)
	}
	if _, ok := find[actArm](acts); ok && h.m.restart != 0 {
		t.Error("restart scheduled although the new generation serves")
	}
}

func TestMachinePromote(t *testing.T) {
	h := newMtest(t, trialConfig())
	h.do(evReady{gen: 1})
	if r := replies(h.do(evPromote{caller: 5})); len(r[5]) != 1 || r[5][0] != ErrNoTrial {
		t.Errorf("promote without a trial: %v", r)
	}
	if r := replies(h.do(evRollback{caller: 6})); len(r[6]) != 1 || r[6][0] != ErrNoTrial {
		t.Errorf("rollback without a trial: %v", r)
	}
	h.do(evReload{caller: 1})
	h.do(evReady{gen: 2})
	acts := h.do(evPromote{caller: 7})
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != nil || len(r[7]) != 1 || r[7][0] != nil || h.state(1) != Draining {
		t.Errorf("promote: %v", acts)
	}
	if h.armed(timerTrial, 2) {
		t.Error("trial timer left armed")
	}
}

func TestMachineTrialStop(t *testing.T) {
	h := reloadIntoTrial(t)
	acts := h.do(evStop{caller: 4})
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != ErrStopping {
		t.Errorf("reload verdict at the stop: %v", r)
	}
	if len(signals(acts, 1)) != 1 || len(signals(acts, 2)) != 1 || h.m.trial != nil {
		t.Errorf("stop during the trial: %v", acts)
	}
}

func TestMachineWatchdog(t *testing.T) {
	h := newMtest(t, trialConfig())
	if h.armed(timerWatchdog, 1) {
		t.Fatal("watchdog enforced before READY=1")
	}
	h.do(evWatchdog{gen: 1, kind: watchdogPing}) // early pings are harmless
	h.do(evReady{gen: 1})
	if !h.armed(timerWatchdog, 1) {
		t.Fatal("no watchdog once serving")
	}
	acts := h.do(evWatchdog{gen: 1, kind: watchdogPing})
	if a, ok := find[actArm](acts); !ok || a.after != 2*time.Second {
		t.Errorf("a ping did not re-arm the watchdog: %v", acts)
	}
	acts = h.do(evWatchdog{gen: 1, kind: watchdogInterval, usec: 5 * time.Second})
	if a, _ := find[actArm](acts); a.after != 5*time.Second {
		t.Errorf("WATCHDOG_USEC= did not change the interval: %v", acts)
	}
	acts = h.fire(timerWatchdog, 1)
	if !slices.Equal(signals(acts, 1), []syscall.Signal{syscall.SIGABRT}) || !h.armed(timerAbort, 1) || h.m.stats.WatchdogKills != 1 {
		t.Fatalf("watchdog expiry: %v", acts)
	}
	if acts := h.do(evWatchdog{gen: 1, kind: watchdogPing}); len(acts) != 0 {
		t.Errorf("a ping after the expiry did %v", acts)
	}
	acts = h.fire(timerAbort, 1)
	if !slices.Equal(signals(acts, 1), []syscall.Signal{syscall.SIGKILL}) {
		t.Errorf("after the grace: %v", acts)
	}
	acts = h.do(evExited{gen: 1, status: bySIGKILL})
	var l actLog
	for _, a := range acts {
		if x, ok := a.(actLog); ok && x.msg == "serving child died" {
			l = x
		}
	}
	if !slices.Contains(l.attrs, any("killed by signal SIGKILL (after its watchdog expired)")) || h.m.restart == 0 {
		t.Errorf("exit after the watchdog: %+v, restart %v", l, h.m.restart)
	}
	// WATCHDOG_USEC=0 turns it off.
	h2 := newMtest(t, trialConfig())
	h2.do(evReady{gen: 1})
	h2.do(evWatchdog{gen: 1, kind: watchdogInterval})
	if h2.armed(timerWatchdog, 1) {
		t.Error("WATCHDOG_USEC=0 left the watchdog armed")
	}
}

func TestMachineUpgrade(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	acts := h.do(evUpgrade{caller: 1, binary: "/usr/local/bin/hitless"})
	c, ok := find[actCheckUpgrade](acts)
	if !ok || c.id != 1 || c.binary != "/usr/local/bin/hitless" {
		t.Fatalf("upgrade: %v", acts)
	}
	h.do(evUpgrade{caller: 2, binary: "/usr/local/bin/hitless"}) // joins
	// Another binary is refused while this one is under way: its
	// verdict would not be that caller's.
	var busy *UpgradeBusyError
	if r := replies(h.do(evUpgrade{caller: 4, binary: "/opt/other"})); len(r[4]) != 1 || !errors.As(r[4][0], &busy) || busy.Binary != "/usr/local/bin/hitless" {
		t.Errorf("an upgrade to another binary during this one: %v", r)
	}
	// While the upgrade runs, a reload and a restart wait for it.
	if acts := h.do(evSignal{sig: syscall.SIGHUP}); !h.m.pending {
		t.Errorf("SIGHUP during the upgrade: %v", acts)
	}
	acts = h.do(evUpgradeChecked{id: 1})
	if x, ok := find[actExecUpgrade](acts); !ok || x.id != 1 {
		t.Fatalf("after the check: %v", acts)
	}
	acts = h.do(evUpgradeDone{id: 1, result: "ok"})
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != nil || len(r[2]) != 1 || r[2][0] != nil {
		t.Errorf("verdicts %v", r)
	}
	if s, ok := find[actStart](acts); !ok || s.kind != kindReload {
		t.Errorf("the SIGHUP during the upgrade did not start: %v", acts)
	}
	if h.m.stats.UpgradesOK != 1 || h.m.stats.LastUpgrade == nil || h.m.stats.LastUpgrade.Result != "ok" {
		t.Errorf("stats %+v", h.m.stats)
	}
	if r := replies(h.do(evUpgradeResult{caller: 3})); len(r[3]) != 1 || r[3][0] != nil {
		t.Errorf("UpgradeResult %v", r)
	}
}

func TestMachineUpgradeRefused(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	h.do(evUpgrade{caller: 1, binary: "/tmp/not-hitless"})
	acts := h.do(evUpgradeChecked{id: 1, err: "the new binary failed its check: exit status 3"})
	var uerr *UpgradeError
	if r := replies(acts); len(r[1]) != 1 || !errors.As(r[1][0], &uerr) || uerr.Result != "refused" || !strings.Contains(uerr.Error(), "exit status 3") {
		t.Fatalf("verdict %v", r)
	}
	if h.m.upgrading || h.m.stats.UpgradesFailed != 1 {
		t.Errorf("after a refusal: %+v", h.m.stats)
	}
	// A rollback is reported the same way, to whoever asks after it.
	h.do(evUpgrade{caller: 2})
	h.do(evUpgradeChecked{id: 2})
	h.do(evUpgradeDone{id: 2, result: "rolled_back", reason: "restore: injected"})
	if r := replies(h.do(evUpgradeResult{caller: 4})); len(r[4]) != 1 || !errors.As(r[4][0], &uerr) || uerr.Result != "rolled_back" {
		t.Errorf("UpgradeResult after a rollback: %v", r)
	}
}

// A stop while the new binary's check runs does not wait for it: the
// check is killed, the upgrade's callers are told that hitless is
// stopping, the stop begins at once (a second SIGINT kills), and the
// check's late answer changes nothing.
func TestMachineStopCancelsCheck(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	h.do(evUpgrade{caller: 1, binary: "/new"})
	acts := h.do(evSignal{sig: syscall.SIGTERM})
	if c, ok := find[actCancelCheck](acts); !ok || c.id != 1 {
		t.Errorf("the check was not cancelled: %v", acts)
	}
	if r := replies(acts); len(r[1]) != 1 || r[1][0] != ErrStopping {
		t.Errorf("the upgrade's caller: %v", r)
	}
	if !h.m.stopping || h.m.upgrading || len(signals(acts, 1)) != 1 {
		t.Errorf("stopping %v, upgrading %v, drain %v", h.m.stopping, h.m.upgrading, signals(acts, 1))
	}
	if acts := h.do(evSignal{sig: syscall.SIGINT}); len(signals(acts, 1)) != 1 || signals(acts, 1)[0] != syscall.SIGKILL {
		t.Errorf("a second SIGINT: %v", acts)
	}
	if acts := h.do(evUpgradeChecked{id: 1}); len(acts) != 0 || h.m.stats.LastUpgrade != nil {
		t.Errorf("the cancelled check's answer: %v", acts)
	}
}

// An upgrade asked for during a trial begins at once: the generation on
// trial goes across it, with its deadline; the reload's verdict comes at
// the trial's end, and a reload queued meanwhile starts after both.
func TestMachineUpgradeDuringTrial(t *testing.T) {
	h := reloadIntoTrial(t)
	if acts := h.do(evUpgrade{caller: 5, binary: "/new"}); !h.m.upgrading {
		t.Fatalf("an upgrade during a trial waits: %v", acts)
	}
	h.do(evSignal{sig: syscall.SIGHUP})
	acts := h.do(evUpgradeChecked{id: 1})
	if _, ok := find[actExecUpgrade](acts); !ok {
		t.Fatalf("after the check: %v", acts)
	}
	if acts := h.do(evUpgradeDone{id: 1, result: "ok"}); h.m.starting != nil {
		t.Errorf("the queued reload started during the trial: %v", acts)
	}
	acts = h.fire(timerTrial, 2)
	if s, ok := find[actStart](acts); h.state(2) != Serving || !ok || s.gen != 3 {
		t.Errorf("the trial's end: %v", acts)
	}
}

func TestMachineUpgradeWaitsForReload(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(evReady{gen: 1})
	h.do(evReload{caller: 1})
	if acts := h.do(evUpgrade{caller: 2}); len(acts) != 0 || !h.m.upgradeQueued {
		t.Fatalf("upgrade during a reload: %v", acts)
	}
	acts := h.do(evReady{gen: 2})
	if _, ok := find[actCheckUpgrade](acts); !ok {
		t.Errorf("the upgrade did not begin once the reload was over: %v", acts)
	}
	// A stop during the hand-over (the exec under way) is carried
	// across it, and stops after it.
	h.do(evUpgradeChecked{id: 1})
	if acts := h.do(evStop{caller: 3}); len(acts) != 0 || h.m.stopping {
		t.Errorf("stop during the hand-over: %v", acts)
	}
	acts = h.do(evUpgradeDone{id: 1, result: "failed", reason: "exec: permission denied"})
	if !h.m.stopping || len(signals(acts, 2)) != 1 {
		t.Errorf("after the upgrade, the stop: %v", acts)
	}
	// The restart timer that fires during an upgrade waits for it too.
	h2 := newMtest(t, testMachineConfig)
	h2.do(evReady{gen: 1})
	h2.do(evExited{gen: 1, status: exit1})
	h2.do(evUpgrade{caller: 1})
	if acts := h2.fire(timerRestart, 0); len(acts) != 0 || !h2.m.restartDue {
		t.Errorf("restart during the upgrade: %v", acts)
	}
	h2.do(evUpgradeChecked{id: 1, err: "refused"})
	if h2.m.starting == nil || h2.m.starting.kind != kindRestart {
		t.Errorf("no restart after the upgrade")
	}
}

// SIGUSR1 and SIGUSR2 reach every generation that serves: the one on
// trial reopens its logs too.
func TestMachineForwardDuringTrial(t *testing.T) {
	h := reloadIntoTrial(t)
	acts := h.do(evSignal{sig: syscall.SIGUSR1})
	if !slices.Equal(signals(acts, 1), []syscall.Signal{syscall.SIGUSR1}) || !slices.Equal(signals(acts, 2), []syscall.Signal{syscall.SIGUSR1}) {
		t.Errorf("SIGUSR1 during a trial: %v", acts)
	}
}
