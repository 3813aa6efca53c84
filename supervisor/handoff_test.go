//go:build linux

package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/upgrade"
)

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

// For runningGrace after a restore the watcher drains, rather than
// kills, should hitless die (of a SIGTERM its new runtime could not
// catch, whose end can come after the restore). A stop inside that
// second is no such death: the watcher is told an image runs first, and
// does not report a death in an upgrade as it ends.
func TestStopRightAfterRestore(t *testing.T) {
	cfg := upgradeConfig(fakeHitless(t, ""))
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cfg.Stderr = stderr
	handed, inProcess := execInProcess()
	r := startWith(t, cfg, inProcess, "")
	r.waitFor("the first child", func(st Status) bool { g, _ := servingGen(st); return g == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.s.Upgrade(ctx, "")
	s, b := restoreNext(t, r, handed)
	watcherPID := s.watcher.pid
	b.stop()
	waitGone(t, watcherPID)
	out, _ := os.ReadFile(stderr.Name())
	if strings.Contains(string(out), "hitless died during an upgrade") {
		t.Errorf("a stop within runningGrace of the restore; the watcher said:\n%s", out)
	}
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
	c := r.s.NewCaller()
	go r.s.ReloadAs(ctx, c) // the old image never answers it: the request rejoins
	r.waitFor("the reload queued behind the upgrade", func(st Status) bool { return st.ReloadQueued })
	release()
	s, b := restoreNext(t, r, handed)
	if err := s.RejoinReload(ctxFor(t, 20*time.Second), c); err != nil {
		t.Fatalf("the carried reload: %v", err)
	}
	b.waitFor("one reload, settled", func(st Status) bool { return len(st.Generations) == 1 && !st.ReloadQueued })
	if st := b.status(); st.ReloadsOK != 1 {
		t.Errorf("%d reloads after one request carried across the upgrade, want 1", st.ReloadsOK)
	}
	if got := b.ask(); !strings.HasPrefix(got, "gen 2 ") {
		t.Errorf("answered by %q, want generation 2", got)
	}
	if err := s.RejoinReload(ctxFor(t, 20*time.Second), s.NewCaller()); err != nil {
		t.Fatalf("a rejoin with nothing to rejoin: %v", err)
	}
	if st := b.status(); st.ReloadsOK != 2 {
		t.Errorf("%d reloads, want 2: a rejoin with nothing left to rejoin reloads", st.ReloadsOK)
	}
	b.stop()
}

// Two reloads wait across an upgrade: R1's generation is on trial, R2 is
// queued behind it. Each carried request takes its own caller's place
// back in the next image, whatever the order they ask in: R1 is told its
// generation was rolled back, R2 that its own serves (before, each took
// an arbitrary place, and the verdicts could be swapped).
func TestUpgradeCarriesEachCallersVerdict(t *testing.T) {
	cfg := upgradeConfig(fakeHitless(t, ""))
	cfg.Trial = time.Hour
	handed, inProcess := execInProcess()
	r := startWith(t, cfg, inProcess, "")
	r.waitFor("the first child", func(st Status) bool { g, _ := servingGen(st); return g == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r1, r2 := r.s.NewCaller(), r.s.NewCaller()
	go r.s.ReloadAs(ctx, r1) // the old image never answers them: the requests rejoin
	r.waitFor("generation 2 on trial", func(st Status) bool { return len(st.Generations) == 2 && st.Generations[1].State == Trial })
	go r.s.ReloadAs(ctx, r2)
	r.waitFor("R2 queued", func(st Status) bool { return st.ReloadQueued })
	go r.s.Upgrade(ctx, "")
	s, b := restoreNext(t, r, handed)
	verdicts := map[Caller]chan error{r1: make(chan error, 1), r2: make(chan error, 1)}
	for _, c := range []Caller{r2, r1} {
		go func() { verdicts[c] <- s.RejoinReload(ctxFor(t, 30*time.Second), c) }()
	}
	st := b.status()
	if len(st.Generations) != 2 || st.Generations[1].State != Trial || !st.ReloadQueued {
		t.Fatalf("after the upgrade: %+v", st)
	}
	syscall.Kill(st.Generations[1].PID, syscall.SIGKILL) // R1's trial fails
	var rerr *ReloadError
	if err := <-verdicts[r1]; !errors.As(err, &rerr) || rerr.Generation != 2 || !rerr.RolledBack {
		t.Errorf("R1, whose generation 2 failed its trial, was told %v", err)
	}
	b.waitFor("generation 3 on trial", func(st Status) bool {
		return len(st.Generations) == 2 && st.Generations[1].ID == 3 && st.Generations[1].State == Trial
	})
	if err := s.Promote(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-verdicts[r2]; err != nil {
		t.Errorf("R2, whose generation 3 serves, was told %v", err)
	}
	if st := b.status(); st.ReloadsOK != 1 || st.ReloadsRolledBack != 1 {
		t.Errorf("%d reloads ok, %d rolled back; want one of each", st.ReloadsOK, st.ReloadsRolledBack)
	}
	b.stop()
}

// A reload's verdict that comes during the hand-over, after the request
// waiting for it was cut off and before the exec, goes across with the
// state, and the carried request gets it in the next image: one request,
// one effect (before, it was lost, and the carried request reloaded
// anew).
func TestUpgradeCarriesVerdictGivenDuringHandoff(t *testing.T) {
	handed, inProcess := execInProcess()
	ctx, cut := context.WithCancelCause(context.Background())
	c := &cutter{cut: cut, reloaded: make(chan error, 1), proceed: make(chan struct{})}
	cfg := upgradeConfig(fakeHitless(t, ""))
	cfg.Trial = time.Hour
	r := startWith(t, cfg, func(s *Supervisor) {
		inProcess(s)
		s.AddCarrier(c)
	}, "")
	r.waitFor("the first child", func(st Status) bool { g, _ := servingGen(st); return g == 1 })
	caller := r.s.NewCaller()
	go func() { c.reloaded <- r.s.ReloadAs(ctx, caller) }()
	r.waitFor("generation 2 on trial", func(st Status) bool { return len(st.Generations) == 2 && st.Generations[1].State == Trial })
	go r.s.Upgrade(context.Background(), "")
	<-c.proceed
	// The request is cut off (as the control socket's are, carried):
	// now generation 2 fails its trial, during the hand-over.
	syscall.Kill(r.status().Generations[1].PID, syscall.SIGKILL)
	r.waitFor("the reload's verdict", func(st Status) bool { return st.ReloadsRolledBack == 1 })
	close(c.proceed)
	s, b := restoreNext(t, r, handed)
	var rerr *ReloadError
	if err := s.RejoinReload(ctxFor(t, 20*time.Second), caller); !errors.As(err, &rerr) || rerr.Generation != 2 || !rerr.RolledBack {
		t.Errorf("the carried request, rejoining, was told %v; want generation 2's rollback", err)
	}
	if st := b.status(); len(st.Generations) != 1 || st.ReloadsRolledBack != 1 || st.ReloadsOK != 0 {
		t.Errorf("after the rejoin: %+v; want no second reload", st)
	}
	b.stop()
}

// cutter is a Carrier that, at the hand-over, cuts off a request as the
// control socket does (the cause ErrCarried), waits for it to return,
// and hands over only once told to (proceed closed).
type cutter struct {
	cut      context.CancelCauseFunc
	reloaded chan error
	proceed  chan struct{}
}

func (c *cutter) Handoff(ctx context.Context, st *upgrade.State) error {
	c.cut(ErrCarried)
	<-c.reloaded // cut off: the request is carried
	c.proceed <- struct{}{}
	<-c.proceed
	return nil
}

func (c *cutter) Resume() {}

// A caller whose wait ends (by ErrCarried, or otherwise) as the answer
// comes gets the answer: a promote that took effect is not asked again
// in the next image. The wait here ends as soon as the loop has the
// request, every time.
func TestCallPrefersItsAnswer(t *testing.T) {
	r := start(t, Config{}, "")
	r.waitFor("the first child", func(st Status) bool { g, _ := servingGen(st); return g == 1 })
	for i := range 20 {
		if err := r.s.Promote(&endsAfterAsk{Context: context.Background()}); err != ErrNoTrial {
			t.Fatalf("promote %d, its wait ended as it was answered: %v, want ErrNoTrial", i, err)
		}
	}
}

// endsAfterAsk is a context whose wait ends, with the cause ErrCarried,
// from the second look at it on: the first (the request's way to the
// loop) goes through.
type endsAfterAsk struct {
	context.Context
	looks atomic.Int32
}

var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *endsAfterAsk) Done() <-chan struct{} {
	if c.looks.Add(1) == 1 {
		return nil
	}
	return closedDone
}

func (c *endsAfterAsk) Err() error {
	if c.looks.Load() < 2 {
		return nil
	}
	return fmt.Errorf("%w: %w", context.Canceled, ErrCarried)
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
