//go:build linux

package supervisor

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/supervisor/internal/machine"
	"github.com/hitless/hitless/upgrade"
)

var update = flag.Bool("update", false, "rewrite the golden state of this build (testdata/state-vN.json, N = upgrade.StateVersion)")

// The upgrade state is a format: an image reads what the image before it
// wrote, and a rollback, what the image after it wrote. These golden
// files pin it: testdata/state-vN.json is the state of one scenario
// (goldenState) as version N of upgrade.StateVersion wrote it, and
// state-v1-14f122a.json as 14f122a wrote version 1, before issue 16 added
// fields to it (the carried callers, signals, partial lines, dropped
// lines, the caller numbering) without a bump. This build must restore
// every one of them, the fields a file predates taking their zero values;
// and what it writes is state-v<upgrade.StateVersion>.json, byte for
// byte. A change of the format is a new version: bump
// upgrade.StateVersion (so that an older build refuses the new binary at
// the upgrade's check rather than fail to restore), write the new file
// (go test -run TestStateGolden -update), and keep the old ones.
func TestStateGolden(t *testing.T) {
	path := fmt.Sprintf("testdata/state-v%d.json", upgrade.StateVersion)
	b, err := json.MarshalIndent(goldenState(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("this build writes version %d: %v", upgrade.StateVersion, err)
	}
	if string(want) != string(b) {
		t.Errorf("this build writes the state differently from %s: a change of the format (see above):\n%s", path, b)
	}

	files, err := filepath.Glob("testdata/state-v*.json")
	if err != nil || len(files) < 3 {
		t.Fatalf("golden states %v (%v): want 14f122a's, version 1 and this build's at least", files, err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			st := readGolden(t, path)
			if st.Version < upgrade.MinStateVersion || st.Version > upgrade.StateVersion {
				t.Errorf("version %d: this build reads %d to %d", st.Version, upgrade.MinStateVersion, upgrade.StateVersion)
			}
			var h handoff
			if err := st.Get("supervisor", &h); err != nil {
				t.Fatal(err)
			}
			m, err := machine.Restore(h.Machine, goldenConfig)
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			checkGoldenRelay(t, st.Version, h.HandOver)
			sigs, c := st.TakeSignals()
			if strings.Contains(path, "14f122a") {
				if ms := m.Snapshot(); ms.Serving != 1 || ms.Trial != 2 || !ms.Pending || ms.Checking || len(ms.Waiting) != 0 {
					t.Errorf("14f122a's machine: serving %v, trial %v, pending %v, checking %v, waiting %v", ms.Serving, ms.Trial, ms.Pending, ms.Checking, ms.Waiting)
				}
				if h.LastCaller != 0 || h.OutputDropped != (OutputDropped{}) || len(h.Children) != 2 || h.Children[1].Partials != nil {
					t.Errorf("14f122a's hand-over: %+v", h)
				}
				if sigs != nil || c != nil {
					t.Errorf("14f122a's state carries signals %v", sigs)
				}
				return
			}
			got, _ := json.Marshal(m.Snapshot())
			if want, _ := json.Marshal(goldenMachine().Snapshot()); string(got) != string(want) {
				t.Errorf("the machine restores as\n%s\nwant\n%s", got, want)
			}
			if h.LastCaller != 2 || h.OutputDropped != (OutputDropped{Stdout: 3, Stderr: 12}) || len(h.Children) != 2 || string(h.Children[0].Partials[1]) != "half a li" {
				t.Errorf("the hand-over: %+v", h)
			}
			if !slices.Equal(sigs, []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM}) {
				t.Errorf("carried signals %v", sigs)
			}
			checkGoldenV3(t, st, h)
		})
	}
}

// The machine's part of the state has versions of its own (see package
// machine's state.go): a new one is a new upgrade state version too.
func TestStateVersions(t *testing.T) {
	if machine.Version > upgrade.StateVersion {
		t.Errorf("the machine writes version %d of its state, the upgrade state is version %d: bump upgrade.StateVersion", machine.Version, upgrade.StateVersion)
	}
}

// checkGoldenV3 checks what version 3 added: the writer's pid, the
// watcher's protocol and the verdicts given during the hand-over; a state
// of an earlier version has none of them.
func checkGoldenV3(t *testing.T, st *upgrade.State, h handoff) {
	t.Helper()
	if st.Version < 3 {
		if st.PID != 0 || h.WatcherProtocol != 0 || h.Verdicts != nil {
			t.Errorf("version %d: pid %d, watcher protocol %d, verdicts %+v", st.Version, st.PID, h.WatcherProtocol, h.Verdicts)
		}
		return
	}
	if st.PID != 4141 || h.WatcherProtocol != 2 || len(h.Verdicts) != 1 {
		t.Fatalf("version %d: pid %d, watcher protocol %d, verdicts %+v", st.Version, st.PID, h.WatcherProtocol, h.Verdicts)
	}
	var rerr *ReloadError
	if err := h.Verdicts[0].err(); !errors.As(err, &rerr) || rerr.Generation != 3 || rerr.PID != 1003 || !slices.Equal(rerr.Stderr, []string{"bad config"}) {
		t.Errorf("the verdict of caller %d restores as %v", h.Verdicts[0].Caller, err)
	}
}

// checkGoldenRelay checks the connection Relay of a golden state of
// version v: version 1 has none (the Relay starts empty), and from version
// 2 on it is goldenState's. It comes back from the state; the channels did
// not come along (no descriptor in a golden state), so what was passed on
// is lost.
func checkGoldenRelay(t *testing.T, v int, rs *handover.RelayState) {
	t.Helper()
	if v < 2 {
		if rs != nil {
			t.Errorf("version %d carries a Relay: %+v", v, rs)
		}
		return
	}
	if rs == nil {
		t.Fatalf("version %d carries no Relay", v)
	}
	r, err := handover.Import(*rs, func(int) *os.File { return nil }, handover.RelayOptions{})
	if err != nil {
		t.Fatalf("restore the relay: %v", err)
	}
	if tot := r.Totals(); tot.Handed != 7 || tot.Lost != 1 || r.InFlight() != 0 {
		t.Errorf("restored relay: totals %+v, in flight %d", tot, r.InFlight())
	}
}

func readGolden(t *testing.T, path string) *upgrade.State {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st upgrade.State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &st
}

// goldenState is the state of the same scenario 14f122a's golden file
// was written from, written by this build, with what this build adds.
func goldenState(t *testing.T) *upgrade.State {
	m := goldenMachine()
	st := upgrade.NewState(3, "(devel) this build")
	st.PID = 4141 // the pid that wrote it: fixed, for the file
	hs := handoff{Machine: m.Snapshot(), Rundir: "/tmp/hitless-1234", Watcher: 4242, WatcherProtocol: 2, Started: goldenTime,
		Timers: []timerState{{ID: 1, Gen: 1, Deadline: 5 * time.Second}},
		Children: []childState{{ID: 1, PID: 1001, Notify: "/tmp/hitless-1234/1.sock", Outs: []bool{false, true}, Partials: [][]byte{nil, []byte("half a li")}, Stderr: []byte("started\n"), Status: "ok"},
			{ID: 2, PID: 1002, Notify: "/tmp/hitless-1234/2.sock", Outs: []bool{false, true}, Stderr: []byte("ready\n")}},
		Sockets:    []socketState{{Addr: "127.0.0.1:8080", Source: "bound"}},
		LastCaller: 2,
		Verdicts: []verdictState{{Caller: 1, Result: "failed", Reload: &reloadErrorState{Generation: 3, PID: 1003, Reason: "exited before it was ready: exit status 1",
			Stderr: []string{"bad config"}}}},
		OutputDropped: OutputDropped{Stdout: 3, Stderr: 12},
		HandOver: &handover.RelayState{
			Peers: []handover.PeerState{
				{Gen: 1, Version: 1, Kinds: []string{handover.HTTPKind("tcp", "127.0.0.1:8080")}, Counts: handover.Counts{Handed: 7, Closed: 1}},
				{Gen: 2, Version: 1, Kinds: []string{handover.HTTPKind("tcp", "127.0.0.1:8080"), handover.StreamKind("ws")}, Counts: handover.Counts{Adopted: 6}},
			},
			Pending: []handover.RouteState{{ID: 7, Src: 1, Dst: 2}},
			LastID:  7, Adopter: 2,
			Totals: handover.Counts{Handed: 7, Adopted: 6, Closed: 1},
		},
	}
	if err := st.Put("supervisor", hs); err != nil {
		t.Fatal(err)
	}
	st.FDs["socket/0"] = 5
	st.Signals = []string{"SIGHUP", "SIGTERM"}
	return st
}

// goldenConfig is the machine's configuration in the golden states: a
// trial and a watchdog.
var goldenConfig = machine.Config{
	ReadyTimeout: 60 * time.Second, DrainTimeout: 30 * time.Second,
	BackoffMin: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond, StableAfter: 10 * time.Second,
	DrainSignal: machine.SIGTERM, Trial: 3 * time.Second, Watchdog: 2 * time.Second, WatchdogGrace: time.Second,
}

var goldenTime = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// goldenMachine is a machine with much to carry: generation 2 on trial
// beside generation 1, whose watchdog interval the child changed, the
// reload's caller waiting, and a reload queued with a caller.
func goldenMachine() *machine.Machine {
	m := machine.New(goldenConfig)
	acts := m.Begin(goldenTime)
	for _, ev := range []machine.Event{
		nil, machine.EvReady{Gen: 1}, machine.EvReload{Caller: 1}, machine.EvReady{Gen: 2}, machine.EvSignal{Sig: machine.SIGHUP},
		machine.EvWatchdog{Gen: 1, Kind: machine.WatchdogInterval, Interval: 7 * time.Second}, machine.EvReload{Caller: 2},
	} {
		if ev != nil {
			acts = m.Step(goldenTime, ev)
		}
		for len(acts) > 0 { // every spawn succeeds
			var next []machine.Action
			for _, a := range acts {
				if s, ok := a.(machine.ActStart); ok {
					next = append(next, m.Step(goldenTime, machine.EvSpawned{Gen: s.Gen, PID: 1000 + s.Gen})...)
				}
			}
			acts = next
		}
	}
	return m
}
