//go:build linux

package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/upgrade"
)

// Everything the machine knows survives an upgrade's state: exported,
// written as JSON, read back and imported, it is the same machine, and it
// goes on the same way.
func TestMachineStateRoundTrip(t *testing.T) {
	cfg := trialConfig()
	h := trialWithQueued(t)
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
	// Of the callers, those of reloads are carried (their requests,
	// carried by the control socket, rejoin them); the others ask again.
	if len(h.m.waiting) != 1 || len(h.m.queued) != 0 {
		t.Fatalf("the reload's caller is not waiting: %v %v", h.m.waiting, h.m.queued)
	}
	h.m.stopCallers, h.m.upgradeCallers = nil, nil
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

// trialWithQueued is a machine with much to carry: generation 2 on trial
// beside generation 1, whose watchdog interval the child changed, and a
// reload (a SIGHUP) queued.
func trialWithQueued(t *testing.T) *mtest {
	h := newMtest(t, trialConfig())
	h.do(evReady{gen: 1})
	h.do(evReload{caller: 1})
	h.do(evReady{gen: 2}) // generation 2 on trial
	h.do(evSignal{sig: syscall.SIGHUP})
	h.do(evWatchdog{gen: 1, kind: watchdogInterval, usec: 7 * time.Second})
	return h
}

// fakeHitless writes a script that answers the check mode as a hitless
// build would (or prints what, for a binary that is not hitless).
func fakeHitless(t *testing.T, answer string) string {
	t.Helper()
	if answer == "" {
		answer = checkAnswer()
	}
	path := filepath.Join(t.TempDir(), "hitless")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho '"+answer+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkAnswer is what a hitless prints in the check mode, for a shell's
// echo '...': it answers from the shell's own pid, as a hitless exec'd in
// place does.
func checkAnswer() string {
	b, _ := json.Marshal(upgrade.Info{Hitless: true, Version: "next", States: [2]int{upgrade.MinStateVersion, upgrade.StateVersion}, PID: 123456789})
	return strings.Replace(string(b), "123456789", "'$$'", 1)
}

// upgradeConfig is a supervisor that may upgrade itself to the binary at
// path; the image it would replace is not opened, since the tests fake
// the exec.
func upgradeConfig(path string) Config {
	return Config{Self: &upgrade.Self{Path: path, Args: []string{path}}}
}

// A new binary that fails its check, or an upgrade asked for off the main
// thread, is refused before anything is handed over: the serving child
// is untouched and the refusals are counted.
func TestUpgradeRefused(t *testing.T) {
	good := fakeHitless(t, "")
	var onMain atomic.Bool
	onMain.Store(true)
	r := startWith(t, upgradeConfig(good), func(s *Supervisor) {
		s.os.mainThread = onMain.Load
		s.os.exec = func(*upgrade.Binary, *upgrade.State) error {
			t.Error("a refused upgrade reached the exec")
			return errors.New("no exec here")
		}
	}, "")
	before := r.ask()
	for _, tc := range []struct {
		name, binary, reason string
		offMain              bool
	}{
		{"not hitless", fakeHitless(t, "hello"), `the new binary is not hitless: its check printed "hello"`, false},
		{"missing", filepath.Join(t.TempDir(), "nothing"), "no such file", false},
		{"off the main thread", good, "does not run on the main thread", true},
	} {
		onMain.Store(!tc.offMain)
		err := r.s.Upgrade(ctxFor(t, 20*time.Second), tc.binary)
		var uerr *UpgradeError
		if !errors.As(err, &uerr) || uerr.Result != "refused" || !strings.Contains(uerr.Reason, tc.reason) {
			t.Errorf("%s: Upgrade = %#v, want refused: ...%s...", tc.name, err, tc.reason)
		}
	}
	if got := r.ask(); got != before {
		t.Errorf("after the refusals %q answers, before %q", got, before)
	}
	if st := r.status(); st.UpgradesRefused != 3 || st.UpgradesFailed != 3 || st.LastUpgrade == nil || st.LastUpgrade.Result != "refused" {
		t.Errorf("stats after three refusals: %+v", st.Stats)
	}
}

// An exec that fails puts everything back: the children are followed
// again (a crash is seen and restarted), reloads go on, and the caller
// is told why.
func TestUpgradeExecFails(t *testing.T) {
	r := startWith(t, upgradeConfig(fakeHitless(t, "")), func(s *Supervisor) {
		s.os.mainThread = func() bool { return true }
		s.os.exec = func(*upgrade.Binary, *upgrade.State) error {
			return errors.New("injected exec failure")
		}
	}, "")
	r.waitFor("the first child", func(st Status) bool { g, _ := servingGen(st); return g == 1 })
	err := r.s.Upgrade(ctxFor(t, 20*time.Second), "")
	var uerr *UpgradeError
	if !errors.As(err, &uerr) || uerr.Result != "failed" || !strings.Contains(uerr.Reason, "injected exec failure") {
		t.Fatalf("Upgrade = %#v", err)
	}
	if err := r.s.UpgradeResult(ctxFor(t, 5*time.Second)); !errors.As(err, &uerr) {
		t.Errorf("UpgradeResult = %v", err)
	}
	_, pid := servingGen(r.status())
	syscall.Kill(pid, syscall.SIGKILL)
	r.waitFor("a restart after the crash", func(st Status) bool { g, _ := servingGen(st); return g == 2 })
	if err := r.reload(); err != nil {
		t.Errorf("reload after the failed upgrade: %v", err)
	}
	r.waitFor("generation 2 drained", func(st Status) bool { return len(st.Generations) == 1 })
	if got := r.ask(); !strings.HasPrefix(got, "gen 3 ") {
		t.Errorf("answered by %q, want generation 3", got)
	}
}

// An upgrade within one process: the old supervisor hands over as it
// would across execve (quiesced, state and descriptors exported), then
// freezes, as an image that was replaced; a second supervisor restores
// from what the next image would inherit and carries on. A generation
// that was draining, its deadline armed, is killed at that deadline by
// the new one, which reaps it; the serving child never notices.
func TestUpgradeHandsOverInProcess(t *testing.T) {
	cfg := upgradeConfig(fakeHitless(t, ""))
	cfg.DrainTimeout = 2 * time.Second
	handed, inProcess := execInProcess()
	r := startWith(t, cfg, inProcess, "ignoreterm", "")
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	before := r.status()
	_, servingPID := servingGen(before)
	if len(before.Generations) != 2 {
		t.Fatalf("want generation 1 draining beside 2: %+v", before.Generations)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.s.Upgrade(ctx, "") // the old image never answers: the next one does
	s, b := restoreNext(t, r, handed)
	if err := s.UpgradeResult(ctxFor(t, 10*time.Second)); err != nil {
		t.Errorf("UpgradeResult after the hand-over = %v", err)
	}
	st := b.status()
	if st.UpgradesOK != 1 || !st.Started.Equal(before.Started) || len(st.Generations) != 2 {
		t.Errorf("restored status %+v, before %+v", st, before)
	}
	if _, pid := servingGen(st); pid != servingPID {
		t.Errorf("serving pid %d after the hand-over, %d before", pid, servingPID)
	}
	b.waitFor("generation 1 killed at its drain deadline", func(st Status) bool { return len(st.Generations) == 1 })
	if got, want := b.ask(), fmt.Sprintf("gen 2 pid %d", servingPID); got != want {
		t.Errorf("answered by %q, want %q", got, want)
	}
	if err := b.reload(); err != nil {
		t.Errorf("reload after the upgrade: %v", err)
	}
	if err := b.stop(); err != nil {
		t.Errorf("Run after the upgrade = %v", err)
	}
}

// A watcher that an earlier build started (a version 1 state carries no
// watcher_protocol: it speaks lines without a version, on a pipe) is
// replaced when the next image restores: a new watcher first, told every
// child, then the old one is retired, having been told that every group
// is gone, so that it kills nothing. The serving child never notices;
// the new watcher is the one that kills it if hitless dies.
func TestUpgradeReplacesOlderWatcher(t *testing.T) {
	handed, inProcess := execInProcess()
	r := startWith(t, upgradeConfig(fakeHitless(t, "")), inProcess, "")
	r.waitFor("the first child", func(st Status) bool { g, _ := servingGen(st); return g == 1 })
	_, servingPID := servingGen(r.status())
	oldWatcher := r.s.watcher.pid
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.s.Upgrade(ctx, "")
	select {
	case next := <-handed:
		var h map[string]json.RawMessage
		if err := json.Unmarshal(next.Sections["supervisor"], &h); err != nil {
			t.Fatal(err)
		}
		delete(h, "watcher_protocol") // as an earlier build wrote it
		next.Sections["supervisor"], _ = json.Marshal(h)
		handed <- next
	case <-time.After(20 * time.Second):
		t.Fatal("no hand-over")
	}
	s, b := restoreNext(t, r, handed)
	b.waitFor("the watcher replaced", func(Status) bool { return strings.Contains(b.logs.String(), "watcher: replaced") })
	if s.watcher.pid == oldWatcher || s.watcher.proto != watcherProtocol {
		t.Errorf("watcher pid %d (protocol %d), the old one %d", s.watcher.pid, s.watcher.proto, oldWatcher)
	}
	waitGone(t, oldWatcher)
	if got, want := b.ask(), fmt.Sprintf("gen 1 pid %d", servingPID); got != want {
		t.Errorf("answered by %q, want %q: the old watcher killed the child", got, want)
	}
	if !strings.Contains(cmdline(s.watcher.pid), WatchArg) {
		t.Errorf("the new watcher %d runs %q", s.watcher.pid, cmdline(s.watcher.pid))
	}
	b.stop()
}

// waitGone waits until pid is reaped (or never was this process's
// child).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for children(t)[pid] {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// execInProcess returns the setup of a supervisor whose exec hands over
// within this process: the state, as the next image would inherit it,
// comes on handed, and the supervisor freezes as a replaced image.
func execInProcess() (handed chan *upgrade.State, setup func(*Supervisor)) {
	handed = make(chan *upgrade.State, 1)
	return handed, func(s *Supervisor) {
		s.os.mainThread = func() bool { return true }
		s.os.exec = func(_ *upgrade.Binary, st *upgrade.State) error {
			next, err := upgrade.Loopback(st)
			if err != nil {
				return err
			}
			replaced(s)
			handed <- next
			select {} // as execve: this image is gone
		}
	}
}

// restoreNext takes the state r handed over and runs the supervisor
// restored from it, as the next image would.
func restoreNext(t *testing.T, r *running, handed chan *upgrade.State) (*Supervisor, *running) {
	t.Helper()
	var next *upgrade.State
	select {
	case next = <-handed:
	case <-time.After(20 * time.Second):
		t.Fatal("no hand-over")
	}
	r.replaced.Store(true)
	s, err := Restore(r.s.cfg, next)
	if err != nil {
		t.Fatal(err)
	}
	next.Commit()
	return s, runSupervisor(t, s, r.addr, r.logs)
}

// replaced does to a supervisor that handed over what execve does to an
// image: it closes every descriptor it held (the next image holds its
// own, carried). Without it, this process would keep, for one, the
// watcher's pipe open, and the watcher would outlive the test.
func replaced(s *Supervisor) {
	for _, c := range s.children {
		c.notify.Close()
		for _, p := range c.outs {
			p.r.Close()
		}
	}
	for _, sock := range s.sockets {
		sock.File.Close()
	}
	s.rundir.lock.Close()
	s.watcher.w.Close()
}

// slowHitless is fakeHitless whose check waits until release is called,
// so that a test can act while an upgrade is under way.
func slowHitless(t *testing.T) (path string, release func()) {
	t.Helper()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "go")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "hitless")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nread x < "+fifo+"\necho '"+checkAnswer()+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("go\n")
		f.Close()
	}
}

// A reload asked for during an upgrade is queued behind it, and its
// caller is carried across the exec: the request that waits for the
// verdict (carried by the control socket) rejoins that reload in the new
// image, which starts it once. One request, one effect. A rejoin with no
// caller left to take the place of reloads anew.
func TestUpgradeCarriesReloadCallers(t *testing.T) {
	bin, release := slowHitless(t)
	handed, inProcess := execInProcess()
	r := startWith(t, upgradeConfig(bin), inProcess, "", "", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.s.Upgrade(ctx, "")
	r.waitFor("the upgrade's check", func(st Status) bool { return st.Upgrading })
	go r.s.Reload(ctx) // the old image never answers it: the request rejoins
	r.waitFor("the reload queued behind the upgrade", func(st Status) bool { return st.ReloadQueued })
	release()
	s, b := restoreNext(t, r, handed)
	if err := s.RejoinReload(ctxFor(t, 20*time.Second)); err != nil {
		t.Fatalf("the carried reload: %v", err)
	}
	b.waitFor("one reload, settled", func(st Status) bool { return len(st.Generations) == 1 && !st.ReloadQueued })
	if st := b.status(); st.ReloadsOK != 1 {
		t.Errorf("%d reloads after one request carried across the upgrade, want 1", st.ReloadsOK)
	}
	if got := b.ask(); !strings.HasPrefix(got, "gen 2 ") {
		t.Errorf("answered by %q, want generation 2", got)
	}
	if err := s.RejoinReload(ctxFor(t, 20*time.Second)); err != nil {
		t.Fatalf("a rejoin with nothing to rejoin: %v", err)
	}
	if st := b.status(); st.ReloadsOK != 2 {
		t.Errorf("%d reloads, want 2: a rejoin with nothing left to rejoin reloads", st.ReloadsOK)
	}
	b.stop()
}

// A stop while the new binary's check hangs does not wait for the check:
// the check's process is killed, the upgrade's caller is told hitless is
// stopping, and Run returns once the children are drained.
func TestUpgradeStopKillsCheck(t *testing.T) {
	bin, _ := slowHitless(t) // never released
	r := startWith(t, upgradeConfig(bin), func(s *Supervisor) {
		s.os.mainThread = func() bool { return true }
	}, "")
	upgraded := make(chan error, 1)
	go func() { upgraded <- r.s.Upgrade(context.Background(), "") }()
	r.waitFor("the upgrade's check", func(st Status) bool { return st.Upgrading })
	began := time.Now()
	if err := r.stop(); err != nil {
		t.Errorf("Run = %v", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the stop took %v: it waited for the check", took)
	}
	select {
	case err := <-upgraded:
		if err != ErrStopping {
			t.Errorf("the upgrade's caller got %v, want ErrStopping", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the upgrade's caller got no answer")
	}
}

// carrier is a Carrier that records what it was asked, and fails its
// hand-over when told to.
type carrier struct {
	fail            bool
	handed, resumed atomic.Int32
}

func (c *carrier) Handoff(ctx context.Context, st *upgrade.State) error {
	c.handed.Add(1)
	if c.fail {
		return errors.New("injected hand-over failure")
	}
	return nil
}

func (c *carrier) Resume() { c.resumed.Add(1) }

// A carrier whose hand-over fails is resumed with the others: it may have
// stopped its work already (the control socket stops accepting first),
// and an upgrade that does not happen must leave it working.
func TestUpgradeHandoffFails(t *testing.T) {
	good, bad := &carrier{}, &carrier{fail: true}
	r := startWith(t, upgradeConfig(fakeHitless(t, "")), func(s *Supervisor) {
		s.os.mainThread = func() bool { return true }
		s.os.exec = func(*upgrade.Binary, *upgrade.State) error {
			t.Error("the exec came after a failed hand-over")
			return nil
		}
		s.AddCarrier(good)
		s.AddCarrier(bad)
	}, "")
	err := r.s.Upgrade(ctxFor(t, 20*time.Second), "")
	var uerr *UpgradeError
	if !errors.As(err, &uerr) || uerr.Result != "failed" || !strings.Contains(uerr.Reason, "injected hand-over failure") {
		t.Fatalf("Upgrade = %v", err)
	}
	if good.resumed.Load() != 1 || bad.resumed.Load() != 1 {
		t.Errorf("resumed: the good carrier %d times, the failing one %d; want both once", good.resumed.Load(), bad.resumed.Load())
	}
}
