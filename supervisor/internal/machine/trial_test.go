package machine

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

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

// SIGUSR1 and SIGUSR2 reach every generation that serves: the one on
// trial reopens its logs too.
func TestMachineForwardDuringTrial(t *testing.T) {
	h := reloadIntoTrial(t)
	acts := h.do(EvSignal{Sig: SIGUSR1})
	if !slices.Equal(signals(acts, 1), []Signal{SIGUSR1}) || !slices.Equal(signals(acts, 2), []Signal{SIGUSR1}) {
		t.Errorf("SIGUSR1 during a trial: %v", acts)
	}
}
