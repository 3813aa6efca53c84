//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// liveBinary copies the hitless binary to a path of the test's own, from
// which hitless is started: a deploy then moves a new file over it.
func liveBinary(t *testing.T) (dir, path string) {
	t.Helper()
	dir = worldReadableDir(t)
	path = filepath.Join(dir, "hitless")
	copyFile(t, bin.hitless, path, 0o755)
	return dir, path
}

// deploy moves a new copy of src over path, as an installer does: the
// running image's file is unlinked, not overwritten (see harness.Install).
func deploy(t *testing.T, src, path string) {
	t.Helper()
	if err := harness.Install(src, path); err != nil {
		t.Fatal(err)
	}
}

// A new hitless binary moved over the old one and "hitless upgrade",
// under continuous POST load: exit 0, hitless's pid unchanged and its
// /proc/PID/exe the new file, the serving child untouched, no request
// failed; three times in a row.
func TestUpgradeUnderLoad(t *testing.T) {
	_, path := liveBinary(t)
	pidFile := filepath.Join(harness.ShortDir(t), "hitless.pid")
	p := start(t, harness.Options{Hitless: path, Args: []string{"--pid-file", pidFile}})
	serving, _ := p.Status().Serving()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var loads []*harness.Load
	for _, keepAlive := range []bool{true, false} {
		l := harness.StartLoad(ctx, harness.LoadOptions{URL: harness.WorkURL(p.Addr(), 0), Workers: 4, KeepAlive: keepAlive, Duration: 2 * time.Minute})
		loads = append(loads, l)
		waitOK(t, l, 50)
	}
	for i := range 3 {
		deploy(t, bin.hitless, path)
		res := ctl(t, 3*time.Minute, p, "upgrade")
		if res.Code != 0 || !strings.Contains(res.Stdout, "upgraded: hitless pid "+fmt.Sprint(p.PID())) {
			t.Fatalf("upgrade %d: %s", i+1, res)
		}
		t.Logf("upgrade %d took %v: %s", i+1, res.Took.Round(time.Millisecond), strings.TrimSpace(res.Stdout))
		if !harness.SameFile(fmt.Sprintf("/proc/%d/exe", p.PID()), path) {
			t.Errorf("upgrade %d: /proc/%d/exe is not the new file", i+1, p.PID())
		}
		st := p.Status()
		g, ok := st.Serving()
		if st.PID != p.PID() || !ok || g.PID != serving.PID || st.UpgradesOK != i+1 {
			t.Errorf("upgrade %d: status %+v, want pid %d and child %d serving", i+1, st, p.PID(), serving.PID)
		}
		for _, l := range loads {
			if err := l.WaitOK(50, 20*time.Second); err != nil {
				t.Fatalf("after upgrade %d: %v", i+1, err)
			}
		}
	}
	if b, _ := os.ReadFile(pidFile); strings.TrimSpace(string(b)) != fmt.Sprint(p.PID()) {
		t.Errorf("pid file %q, want %d", b, p.PID())
	}
	// The upgraded hitless reloads, and stops, as the first did.
	p.Reload()
	for i, l := range loads {
		if tally := l.Stop(); tally.Failed() != 0 {
			t.Errorf("load %d: %s", i, tally)
		} else {
			t.Logf("load %d: %s", i, tally)
		}
	}
}

// Children forked while the runtime is busy all survive the exec, with
// their state and deadlines. Eleven generations, ten
// of them draining (they ignore SIGTERM) with their deadlines, carried
// across an upgrade under load, which goes on through it.
func TestUpgradeKeepsDrainingGenerations(t *testing.T) {
	_, path := liveBinary(t)
	p := start(t, harness.Options{Hitless: path, Args: []string{"--drain-timeout", "2m"},
		Command: []string{"/bin/sh", "-c", "trap '' TERM; " + notifyReady + "; exec sleep 1000"}})
	// Keep hitless's runtime busy meanwhile, and through the upgrade
	// (status requests, each on a goroutine of its own), so that its
	// goroutines move between threads; every one is answered, by one
	// image or the other.
	ctx, cancel := context.WithCancel(t.Context())
	busy := make(chan [2]int, 1)
	go func() {
		var ok, failed int
		for ctx.Err() == nil {
			res, err := harness.RunCLI(10*time.Second, bin.client, "status", "--control", p.Control())
			if err != nil || res.Code != 0 {
				failed++
			} else {
				ok++
			}
		}
		busy <- [2]int{ok, failed}
	}()
	for range 10 {
		if res := ctl(t, 30*time.Second, p, "reload"); res.Code != 0 {
			t.Fatalf("reload: %s", res)
		}
	}
	before := p.Status()
	if len(before.Generations) != 11 {
		t.Fatalf("%d generations before the upgrade, want 11", len(before.Generations))
	}
	deploy(t, bin.hitless, path)
	if res := ctl(t, 3*time.Minute, p, "upgrade"); res.Code != 0 {
		t.Fatalf("upgrade: %s", res)
	}
	cancel()
	if n := <-busy; n[1] != 0 || n[0] == 0 {
		t.Errorf("status requests during the reloads and the upgrade: %d answered, %d failed", n[0], n[1])
	}
	after := p.Status()
	if len(after.Generations) != 11 {
		t.Errorf("%d generations after the upgrade, want 11", len(after.Generations))
	}
	for i, g := range before.Generations {
		a := after.Generations[i]
		if !harness.Alive(g.PID) || a.PID != g.PID || a.State != g.State || !a.DrainAt.Equal(g.DrainAt) {
			t.Errorf("generation %d: %+v before, %+v after (alive %v)", g.Generation, g, a, harness.Alive(g.PID))
		}
	}
	// They ignore SIGTERM: a second SIGINT kills them at once.
	p.Signal(syscall.SIGINT)
	p.WaitStatus(10*time.Second, func(s harness.Status) bool { return s.Stopping })
	p.Signal(syscall.SIGINT)
	p.Wait(20 * time.Second)
}

// Broken binaries are refused before the swap, with the reason, and the
// service goes on: a reload still works after.
func TestUpgradeRefused(t *testing.T) {
	dir, path := liveBinary(t)
	p := start(t, harness.Options{Hitless: path})
	g, _ := p.Status().Serving()
	script := filepath.Join(dir, "not-hitless")
	os.WriteFile(script, []byte("#!/bin/sh\necho 'something else'\nexit 3\n"), 0o755)
	truncated := filepath.Join(dir, "truncated")
	b, err := os.ReadFile(bin.hitless)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(truncated, b[:len(b)/3], 0o755)
	noexec := filepath.Join(dir, "noexec")
	os.WriteFile(noexec, b, 0o644)
	for _, tc := range []struct{ binary, reason string }{
		{script, "failed its check: exit status 3"},
		{truncated, "failed its check"},
		{noexec, "is not an executable file"},
		{"/bin/true", "is not hitless"},
		{filepath.Join(dir, "missing"), "no such file or directory"},
	} {
		res := ctl(t, 3*time.Minute, p, "upgrade", "--binary", tc.binary)
		if res.Code != 1 || !strings.Contains(res.Stderr, "upgrade refused") || !strings.Contains(res.Stderr, tc.reason) {
			t.Errorf("upgrade to %s: %s, want refused: %s", filepath.Base(tc.binary), res, tc.reason)
		}
	}
	st := p.Status()
	if s, _ := st.Serving(); st.PID != p.PID() || s.PID != g.PID || st.UpgradesFailed != 5 || st.UpgradesOK != 0 {
		t.Errorf("status after refusals: %+v", st)
	}
	if !harness.SameFile(fmt.Sprintf("/proc/%d/exe", p.PID()), path) {
		t.Error("the running image changed")
	}
	p.Reload()
}

// A new image that cannot restore the state (here, a failure injected at
// link time) executes the previous image again, which takes everything
// back: same pid, same child, the old file running, the verdict "rolled
// back". The service goes on: a reload works, and so does an upgrade to
// a good binary. The process keeps its name throughout ("hitless", for
// pgrep -x, pkill and killall; before, an upgrade named it after the
// descriptor it was executed through, "17").
func TestUpgradeRollback(t *testing.T) {
	dir, path := liveBinary(t)
	broken := filepath.Join(dir, "hitless-broken")
	if err := harness.Build("", broken, "github.com/hitless/hitless/cmd/hitless", "-ldflags", "-X main.restoreFault=injected"); err != nil {
		t.Fatal(err)
	}
	p := start(t, harness.Options{Hitless: path})
	g, _ := p.Status().Serving()
	res := ctl(t, 3*time.Minute, p, "upgrade", "--binary", broken)
	if res.Code != 1 || !strings.Contains(res.Stderr, "upgrade rolled back: restore: injected failure: injected") {
		t.Fatalf("upgrade to a binary that cannot restore: %s", res)
	}
	st := p.Status()
	s, _ := st.Serving()
	if st.PID != p.PID() || s.PID != g.PID || st.LastUpgrade == nil || st.LastUpgrade.Result != "rolled_back" {
		t.Errorf("status after the rollback: %+v", st)
	}
	if !harness.SameFile(fmt.Sprintf("/proc/%d/exe", p.PID()), path) {
		t.Error("after the rollback, the old image does not run")
	}
	comm := func(when string) {
		t.Helper()
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID())); err != nil || string(b) != "hitless\n" {
			t.Errorf("%s, the process is named %q (%v), want hitless", when, b, err)
		}
	}
	comm("after the rollback")
	p.Reload()
	deploy(t, bin.hitless, path)
	if res := ctl(t, 3*time.Minute, p, "upgrade"); res.Code != 0 {
		t.Errorf("an upgrade after a rollback: %s", res)
	}
	comm("after the upgrade")
}
