//go:build linux

package supervisor

import (
	"encoding/json"
	"reflect"
	"syscall"
	"testing"
	"time"
)

// Everything the machine knows survives an upgrade's state: exported,
// written as JSON, read back and imported, it is the same machine, and it
// goes on the same way.
func TestMachineStateRoundTrip(t *testing.T) {
	cfg := trialConfig()
	h := newMtest(t, cfg)
	h.do(evReady{gen: 1})
	h.do(evReload{caller: 1})
	h.do(evReady{gen: 2}) // generation 2 on trial
	h.do(evSignal{sig: syscall.SIGHUP})
	h.do(evWatchdog{gen: 1, kind: watchdogInterval, usec: 7 * time.Second})
	h.do(evUpgrade{caller: 3, binary: "/new"})

	b, err := json.Marshal(exportMachine(h.m))
	if err != nil {
		t.Fatal(err)
	}
	var ms machineState
	if err := json.Unmarshal(b, &ms); err != nil {
		t.Fatal(err)
	}
	m, err := importMachine(ms, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Callers are not carried (the control socket carries the requests).
	h.m.waiting, h.m.queued, h.m.stopCallers, h.m.upgradeCallers = nil, nil, nil, nil
	if got, want := machineKey(m), machineKey(h.m); got != want {
		t.Errorf("after the round trip:\n%s\nwant\n%s", got, want)
	}
	if got, want := m.view(), h.m.view(); !reflect.DeepEqual(got.stats, want.stats) || len(got.gens) != len(want.gens) {
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
	h.do(evUpgradeDone{id: 1, result: "ok"})
	acts := h.fire(timerTrial, 2)
	if h.state(2) != Serving || len(signals(acts, 1)) != 1 {
		t.Errorf("after the restore, the trial's end: %v", acts)
	}
	if _, err := importMachine(machineState{Serving: 9}, cfg); err == nil {
		t.Error("a state naming a generation it does not hold was imported")
	}
}
