//go:build linux

package supervisor

import (
	"encoding/json"
	"flag"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/upgrade"
)

var update = flag.Bool("update", false, "rewrite the golden state of this build (testdata/state-v1-current.json)")

// The upgrade state is a format: an image reads what the image before it
// wrote, and a rollback, what the image after it wrote. These golden
// files pin it. state-v1-14f122a.json was written by 14f122a (before
// issue 16): this build must restore it, the fields it added (the
// carried callers, signals, partial lines, dropped lines, the caller
// numbering) taking their zero values. state-v1-current.json is what this
// build writes for the same state: a later build must read it; a change
// to it is a change of the format (go test -run TestStateGolden -update
// rewrites it, for a change made on purpose).
func TestStateGolden(t *testing.T) {
	old := readGolden(t, "testdata/state-v1-14f122a.json")
	var h handoff
	if err := old.Get("supervisor", &h); err != nil {
		t.Fatal(err)
	}
	m, err := importMachine(h.Machine, trialConfig())
	if err != nil {
		t.Fatalf("restore 14f122a's state: %v", err)
	}
	if m.serving == nil || m.serving.id != 1 || m.trial == nil || m.trial.id != 2 || !m.pending || m.checking || len(m.waiting) != 0 {
		t.Errorf("14f122a's machine: serving %v, trial %v, pending %v, checking %v, waiting %v", m.serving, m.trial, m.pending, m.checking, m.waiting)
	}
	if h.LastCaller != 0 || h.OutputDropped != (OutputDropped{}) || len(h.Children) != 2 || h.Children[1].Partials != nil {
		t.Errorf("14f122a's hand-over: %+v", h)
	}
	if sigs, c := old.TakeSignals(); sigs != nil || c != nil {
		t.Errorf("14f122a's state carries signals %v", sigs)
	}

	cur := goldenState(t)
	b, err := json.MarshalIndent(cur, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	const path = "testdata/state-v1-current.json"
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(b) {
		t.Errorf("this build writes the state differently from %s: a change of the format (rerun with -update if it is meant, and keep old states readable):\n%s", path, b)
	}
	back := readGolden(t, path)
	var hb handoff
	if err := back.Get("supervisor", &hb); err != nil {
		t.Fatal(err)
	}
	if _, err := importMachine(hb.Machine, trialConfig()); err != nil {
		t.Errorf("restore this build's state: %v", err)
	}
	if sigs, _ := back.TakeSignals(); !slices.Equal(sigs, []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM}) {
		t.Errorf("carried signals %v", sigs)
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
	h := trialWithQueued(t)
	h.do(evReload{caller: 2})
	st := upgrade.NewState(3, "(devel) this build")
	st.PID = 4141 // the pid that wrote it: fixed, for the file
	hs := handoff{Machine: exportMachine(h.m), Rundir: "/tmp/hitless-1234", Watcher: 4242, Started: t0,
		Timers: []timerState{{ID: 1, Gen: 1, Deadline: 5 * time.Second}},
		Children: []childState{{ID: 1, PID: 1001, Notify: "/tmp/hitless-1234/1.sock", Outs: []bool{false, true}, Partials: [][]byte{nil, []byte("half a li")}, Stderr: []byte("started\n"), Status: "ok"},
			{ID: 2, PID: 1002, Notify: "/tmp/hitless-1234/2.sock", Outs: []bool{false, true}, Stderr: []byte("ready\n")}},
		Sockets:       []socketState{{Addr: "127.0.0.1:8080", Source: "bound"}},
		LastCaller:    2,
		OutputDropped: OutputDropped{Stdout: 3, Stderr: 12},
	}
	if err := st.Put("supervisor", hs); err != nil {
		t.Fatal(err)
	}
	st.FDs["socket/0"] = 5
	st.Signals = []string{"SIGHUP", "SIGTERM"}
	return st
}
