package machine

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// Everything the machine knows survives an upgrade's state: exported,
// written as JSON, read back and imported, it is the same machine, and it
// goes on the same way.
func TestStateRoundTrip(t *testing.T) {
	cfg := trialConfig()
	h := trialWithQueued(t)
	h.do(EvUpgrade{Caller: 3, Binary: "/new"})

	b, err := json.Marshal(h.m.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var ms Snapshot
	if err := json.Unmarshal(b, &ms); err != nil {
		t.Fatal(err)
	}
	m, err := Restore(ms, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Of the callers, those of reloads are carried (their requests,
	// carried by the control socket, rejoin them); the others ask again.
	if len(h.m.waiting) != 1 || len(h.m.queued) != 0 {
		t.Fatalf("the reload's caller is not waiting: %v %v", h.m.waiting, h.m.queued)
	}
	h.m.stopCallers, h.m.upgradeCallers = nil, nil
	if got, want := machineKey(m), machineKey(h.m); got != want {
		t.Errorf("after the round trip:\n%s\nwant\n%s", got, want)
	}
	if got, want := m.view(), h.m.view(); !reflect.DeepEqual(got.Stats, want.Stats) || len(got.Gens) != len(want.Gens) {
		t.Errorf("view %+v, want %+v", got, want)
	}
	for i := range m.gens {
		a, b := *m.gens[i], *h.m.gens[i]
		if !a.started.Equal(b.started) || !a.readyAt.Equal(b.readyAt) || !a.trialEnds.Equal(b.trialEnds) || a.wdInterval != b.wdInterval {
			t.Errorf("generation %d: %+v, want %+v", a.id, a, b)
		}
	}
	// The restored machine carries on: the trial passes, the old one drains.
	h.m = m
	h.do(EvUpgradeDone{ID: 1, Result: "ok"})
	acts := h.fire(TimerTrial, 2)
	if h.state(2) != Serving || len(signals(acts, 1)) != 1 {
		t.Errorf("after the restore, the trial's end: %v", acts)
	}
	if _, err := Restore(Snapshot{Serving: 9}, cfg); err == nil {
		t.Error("a state naming a generation it does not hold was imported")
	}
}

// trialWithQueued is a machine with much to carry: generation 2 on trial
// beside generation 1, whose watchdog interval the child changed, and a
// reload (a SIGHUP) queued.
func trialWithQueued(t *testing.T) *mtest {
	h := newMtest(t, trialConfig())
	h.do(EvReady{Gen: 1})
	h.do(EvReload{Caller: 1})
	h.do(EvReady{Gen: 2}) // generation 2 on trial
	h.do(EvSignal{Sig: SIGHUP})
	h.do(EvWatchdog{Gen: 1, Kind: WatchdogInterval, Interval: 7 * time.Second})
	return h
}
