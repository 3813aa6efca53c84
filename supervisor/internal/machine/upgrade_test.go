package machine

import (
	"errors"
	"strings"
	"testing"
)

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
