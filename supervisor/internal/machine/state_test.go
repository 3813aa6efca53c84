package machine

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/state-vN.json for this build's Version")

// Everything the machine knows survives an upgrade's state: written down,
// written as JSON, read back and restored, it is the same machine, and it
// goes on the same way.
func TestStateRoundTrip(t *testing.T) {
	h := trialWithQueued(t)
	h.do(EvUpgrade{Caller: 3, Binary: "/new"})
	h.do(EvStop{Caller: 4}) // during the check: cancels it

	b, err := json.Marshal(h.m.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var ms Snapshot
	if err := json.Unmarshal(b, &ms); err != nil {
		t.Fatal(err)
	}
	m, err := Restore(ms, trialConfig())
	if err != nil {
		t.Fatal(err)
	}
	if diff := differs(m, h.m); diff != "" {
		t.Errorf("after JSON: %s", diff)
	}

	// The restored machine carries on: the trial passes, the old one drains.
	h = trialWithQueued(t)
	h.do(EvUpgrade{Caller: 3, Binary: "/new"})
	h.do(EvUpgradeChecked{ID: 1})
	if h.m, err = Restore(jsonRoundTrip(t, h.m.Snapshot()), trialConfig()); err != nil {
		t.Fatal(err)
	}
	h.do(EvUpgradeDone{ID: 1, Result: "ok"})
	acts := h.fire(TimerTrial, 2)
	if h.state(2) != Serving || len(signals(acts, 1)) != 1 {
		t.Errorf("after the restore, the trial's end: %v", acts)
	}
}

// A state this build cannot make sense of is refused, not guessed at: the
// upgrade then rolls back to the image that wrote it.
func TestStateRefused(t *testing.T) {
	for _, tc := range []struct{ name, json, want string }{
		{"a generation it does not hold", `{"serving": 9}`, "the serving generation 9 is not in the state"},
		{"a timer's generation it does not hold", `{"timers": [{"id": 1, "kind": "drain", "gen": 3}]}`, "the timer's generation 3"},
		{"an unknown state", `{"gens": [{"id": 1, "kind": "initial", "state": "sleeping"}]}`, `state "sleeping" is not one this build knows`},
		{"an unknown kind", `{"gens": [{"id": 1, "kind": "resurrection", "state": "serving"}]}`, `kind "resurrection" is not one this build knows`},
		{"an unknown version 1 kind", `{"timers": [{"id": 1, "kind": 7}]}`, "version 1 numbered the kinds 0 to 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ms Snapshot
			err := json.Unmarshal([]byte(tc.json), &ms)
			if err == nil {
				_, err = Restore(ms, trialConfig())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// The state is a format: testdata/state-vN.json is the machine of one
// scenario (goldenMachine) as version N wrote it. This build must restore
// every one of them to that machine; and what it writes is
// testdata/state-v<Version>.json, byte for byte, so that a change of the
// format cannot pass unnoticed. Changing it means a new Version (and
// upgrade.StateVersion, so that an older build refuses it at the
// upgrade's check), a new file (go test -run TestStateGolden -update),
// and the old files kept.
func TestStateGolden(t *testing.T) {
	want := goldenMachine(t).m.Snapshot()
	path := fmt.Sprintf("testdata/state-v%d.json", Version)
	written := indent(t, want)
	if *update {
		if err := os.WriteFile(path, []byte(written), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, err := filepath.Glob("testdata/state-v*.json")
	if err != nil || len(files) < 2 {
		t.Fatalf("golden states %v (%v): want version 1 and this build's at least", files, err)
	}
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var ms Snapshot
		if err := json.Unmarshal(b, &ms); err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		m, err := Restore(ms, trialConfig())
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if got, want := indent(t, m.Snapshot()), indent(t, want); got != want {
			t.Errorf("%s restores\n%s\nwant\n%s", path, got, want)
		}
	}

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("this build writes version %d: %v", Version, err)
	}
	if string(b) != written {
		t.Errorf("this build writes the state differently from %s: a change of the format (see the comment above):\n%s", path, written)
	}
	for _, name := range []string{`"kind": "reload"`, `"kind": "trial"`, `"kind": "watchdog"`} {
		if !strings.Contains(written, name) {
			t.Errorf("the state does not write %s: kinds cross by name", name)
		}
	}
}

// goldenMachine is the scenario of the golden states, a machine with much
// to carry: generation 2 on trial beside generation 1, whose watchdog
// interval the child changed, the reload's caller waiting, and a reload
// queued with a caller.
func goldenMachine(t *testing.T) *mtest {
	h := trialWithQueued(t)
	h.do(EvReload{Caller: 2})
	return h
}

// trialWithQueued: generation 2 on trial beside generation 1, whose
// watchdog interval the child changed, and a reload (a SIGHUP) queued.
func trialWithQueued(t *testing.T) *mtest {
	h := newMtest(t, trialConfig())
	h.do(EvReady{Gen: 1})
	h.do(EvReload{Caller: 1})
	h.do(EvReady{Gen: 2}) // generation 2 on trial
	h.do(EvSignal{Sig: SIGHUP})
	h.do(EvWatchdog{Gen: 1, Kind: WatchdogInterval, Interval: 7 * time.Second})
	return h
}

func jsonRoundTrip(t *testing.T, ms Snapshot) Snapshot {
	t.Helper()
	b, err := json.Marshal(ms)
	if err != nil {
		t.Fatal(err)
	}
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back
}

func indent(t *testing.T, ms Snapshot) string {
	t.Helper()
	b, err := json.MarshalIndent(ms, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}
