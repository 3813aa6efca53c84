package machine

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

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

// A caller that gives up waiting (its context ended) is forgotten: it
// gets no verdict, and no one else can take its place; what it asked
// for goes on, and those who wait on get their verdicts.
func TestCancelledWait(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	h.do(EvReload{Caller: 1})
	h.do(EvReload{Caller: 2})
	h.do(EvReload{Caller: 3})
	h.do(EvUpgrade{Caller: 4, Binary: "/new/hitless"})
	for _, c := range []CallerID{1, 3, 4} {
		if acts := h.do(EvCancel{Caller: c}); len(acts) != 0 {
			t.Errorf("caller %d gave up: %v", c, acts)
		}
	}
	if len(h.m.waiting) != 0 || !slices.Equal(h.m.queued, []CallerID{2}) || len(h.m.upgradeCallers) != 0 {
		t.Errorf("waiting %v, queued %v, upgrade %v; want only caller 2, queued", h.m.waiting, h.m.queued, h.m.upgradeCallers)
	}
	acts := h.do(EvReady{Gen: 2})
	if r := replies(acts); len(r) != 0 {
		t.Errorf("the reload of callers who gave up answered %v", r)
	}
	if s, ok := find[ActStart](acts); !ok || s.Gen != 3 {
		t.Fatalf("the queued reload did not start: %v", acts)
	}
	acts = h.do(EvReady{Gen: 3})
	if r := replies(acts); len(r) != 1 || len(r[2]) != 1 || r[2][0] != nil {
		t.Errorf("the queued reload's verdict went to %v, want caller 2 alone", r)
	}
	if _, ok := find[ActCheckUpgrade](acts); !ok {
		t.Fatalf("the upgrade whose caller gave up did not begin: %v", acts)
	}
	h.do(EvUpgradeChecked{ID: 1})
	if r := replies(h.do(EvUpgradeDone{ID: 1, Result: "ok"})); len(r) != 0 {
		t.Errorf("the upgrade answered %v, its caller gone", r)
	}
}
