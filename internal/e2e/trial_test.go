//go:build linux

package e2e

// The trial window (--trial) and the per-child watchdog (--watchdog),
// driven through hitless reload, promote, rollback and status.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// reloadAsync runs "hitless reload" against p and delivers its outcome:
// with a trial, the verdict waits for the trial's end.
func reloadAsync(p *harness.Hitless) <-chan harness.CLIResult {
	c := make(chan harness.CLIResult, 1)
	go func() { // owned by the test: it reads c, and RunCLI ends within its bound
		r, err := harness.RunCLI(90*time.Second, bin.hitless, "reload", "--control", p.Control(), "--timeout", "60s")
		if err != nil {
			r.Code, r.Stderr = -1, err.Error()
		}
		c <- r
	}()
	return c
}

// onTrial is a status predicate: generation gen is on trial beside a
// serving generation, and says when its trial ends.
func onTrial(gen int) func(harness.Status) bool {
	return func(s harness.Status) bool {
		g, ok := s.Gen(gen)
		_, serving := s.Serving()
		return ok && serving && g.State == harness.StateTrial && !g.TrialEndsAt.IsZero()
	}
}

// untouched fails unless the generation that served before the trial
// (pid) still serves and was never told to drain: its status has no
// drain time, and its childproc never logged a drain step.
func untouched(t *testing.T, p *harness.Hitless, gen, pid int) {
	t.Helper()
	g, ok := p.Status().Gen(gen)
	if !ok || g.PID != pid || g.State != harness.StateServing || !g.DrainAt.IsZero() {
		t.Errorf("the old generation after the rollback: %+v (found %v), want it serving, pid %d, never drained", g, ok, pid)
	}
	for line := range strings.SplitSeq(p.Output(), "\n") {
		if strings.Contains(line, "childproc: drain") && strings.Contains(line, fmt.Sprintf("pid=%d ", pid)) {
			t.Errorf("the old generation drained: %s", line)
		}
	}
}

// A release that crashes 1 s after READY=1, reloaded with a trial under
// POST load: the reload is rolled back and hitless reload says so, with
// the reason and the child's last stderr line; the old child, never
// signalled, serves on. No connection is refused, and only requests on
// connections the crashing child held fail.
func TestTrialRollbackOnCrash(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	p := start(t, harness.Options{Args: []string{"--trial", "30s"}}, "-mode-file", modeFile)
	old := getInfo(t, p.Addr())
	const workers = 4
	pr := work(p.Addr(), workers, false, 0)
	defer pr.Stop()
	waitOK(t, pr, 50)

	os.WriteFile(modeFile, []byte("crash:1s"), 0o644)
	verdict := reloadAsync(p)
	p.WaitStatus(20*time.Second, onTrial(2))
	// Keep-alive clients that connect during the trial: the kernel hands
	// their connections to either generation, so the crashing one holds
	// some of them when it dies.
	ka := work(p.Addr(), workers, true, 0)
	defer ka.Stop()
	r := <-verdict
	if r.Code != 1 {
		t.Fatalf("reload of a release that crashes during its trial: want exit 1: %v", r)
	}
	mustContain(t, "hitless reload's stderr", r.Stderr,
		"reload failed: generation 2",
		"rolled back during the trial: exited: exit status 4",
		"testserver: mode crash: exiting 4, 1s after READY=1, on purpose",
		fmt.Sprintf("generation 1 (pid %d) is still serving; it was never signalled", old.PID))
	untouched(t, p, 1, old.PID)
	st := p.WaitStatus(20*time.Second, gens(1))
	if st.ReloadsRolledBack != 1 || st.ReloadsFailed != 0 || st.ReloadsOK != 0 || !strings.Contains(st.LastFailure, "rolled back during the trial") {
		t.Errorf("status after the rollback: %+v", st)
	}

	waitOK(t, ka, 50)
	waitOK(t, pr, 50)
	heldOnly(t, "across a reload rolled back after a crash", workers, map[string]*harness.Tally{"keep-alive": ka.Stop(), "per-request": pr.Stop()})
	if in := getInfo(t, p.Addr()); in.PID != old.PID {
		t.Errorf("pid %d answers, want the old %d", in.PID, old.PID)
	}
}

// A healthy release serves beside the old one for its whole trial (both
// serving, the old one not signalled); then hitless reload exits 0 and
// only then does the old one drain. No request fails.
func TestTrialPasses(t *testing.T) {
	const trial = 3 * time.Second
	p := start(t, harness.Options{Args: []string{"--trial", trial.String()}})
	old := getInfo(t, p.Addr())
	ka := work(p.Addr(), 4, true, 0)
	defer ka.Stop()
	pr := work(p.Addr(), 4, false, 0)
	defer pr.Stop()
	waitOK(t, ka, 50)

	m := p.Mark()
	verdict := reloadAsync(p)
	st := p.WaitStatus(20*time.Second, onTrial(2))
	if g, _ := st.Gen(1); g.State != harness.StateServing || !g.DrainAt.IsZero() {
		t.Errorf("during the trial the old generation is %+v, want it serving, not drained", g)
	}
	r := ctl(t, 20*time.Second, p, "status")
	mustContain(t, "hitless status during the trial", r.Stdout, "trial, ", " left")

	r = <-verdict
	if r.Code != 0 || !strings.Contains(r.Stdout, "reload ok: generation 2") {
		t.Fatalf("reload of a healthy release with a trial: %v", r)
	}
	// The verdict waits for the trial: it cannot come sooner.
	if r.Took < trial {
		t.Errorf("hitless reload returned after %v, before the trial of %v ended", r.Took, trial)
	}
	// The old generation drains after the trial passed, not before.
	i, _ := p.WaitSince(m, 20*time.Second, harness.IsGen("trial passed", 2))
	j, _ := p.WaitSince(m, 20*time.Second, harness.IsGen("draining", 1))
	if j < i {
		t.Errorf("generation 1 was told to drain (record %d) before the trial passed (record %d)", j, i)
	}
	p.WaitStatus(40*time.Second, func(s harness.Status) bool { return serves(2)(s) && len(s.Generations) == 1 && s.ReloadsOK == 1 })
	waitOK(t, ka, 50)
	for name, res := range map[string]*harness.Tally{"keep-alive": ka.Stop(), "per-request": pr.Stop()} {
		t.Logf("%s across a reload whose trial passed: %s", name, res)
		if res.Failed() != 0 {
			t.Errorf("%s: requests failed: %s", name, res)
		}
	}
	if in := getInfo(t, p.Addr()); in.PID == old.PID || in.Generation != "2" {
		t.Errorf("generation %s (pid %d) answers, want 2", in.Generation, in.PID)
	}
}

// A release that stops sending WATCHDOG=1 (its health check fails) is
// rolled back during its trial; the old one, which pings, serves on and
// is not counted as a watchdog kill.
func TestTrialRollbackOnWatchdog(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	p := start(t, harness.Options{Args: []string{"--trial", "30s", "--watchdog", "500ms"}}, "-mode-file", modeFile)
	old := getInfo(t, p.Addr())
	os.WriteFile(modeFile, []byte("unhealthy"), 0o644)
	r := ctl(t, 90*time.Second, p, "reload", "--timeout", "60s")
	if r.Code != 1 {
		t.Fatalf("reload of a release that misses its watchdog: want exit 1: %v", r)
	}
	mustContain(t, "hitless reload's stderr", r.Stderr,
		"rolled back during the trial: its watchdog expired: no WATCHDOG=1 within 500ms",
		fmt.Sprintf("generation 1 (pid %d) is still serving; it was never signalled", old.PID))
	untouched(t, p, 1, old.PID)
	st := p.WaitStatus(20*time.Second, gens(1))
	if st.ReloadsRolledBack != 1 || st.WatchdogKills != 0 {
		t.Errorf("status: rolled back %d, watchdog kills %d; want 1 and 0", st.ReloadsRolledBack, st.WatchdogKills)
	}
	// The old one pinged all along: it outlived many intervals.
	if g, _ := st.Serving(); g.WatchdogUSec != 500_000 {
		t.Errorf("serving generation's watchdog: %+v", g)
	}
}

// hitless promote and hitless rollback end a trial early, and change
// nothing when no generation is on trial.
func TestTrialPromoteAndRollback(t *testing.T) {
	p := start(t, harness.Options{Args: []string{"--trial", "1h"}})
	for _, cmd := range []string{"promote", "rollback"} {
		r := ctl(t, 20*time.Second, p, cmd)
		if r.Code != 1 || !strings.Contains(r.Stderr, "no generation is on trial") {
			t.Errorf("%s without a trial: want exit 1 saying so: %v", cmd, r)
		}
	}

	verdict := reloadAsync(p)
	p.WaitStatus(20*time.Second, onTrial(2))
	r := ctl(t, 20*time.Second, p, "promote")
	g2, _ := p.Status().Gen(2)
	if r.Code != 0 || r.Stdout != fmt.Sprintf("promoted: generation 2 (pid %d) serving\n", g2.PID) {
		t.Errorf("promote: %v", r)
	}
	if r := <-verdict; r.Code != 0 || !strings.Contains(r.Stdout, "reload ok: generation 2") {
		t.Errorf("reload ended by promote: %v", r)
	}
	p.WaitStatus(20*time.Second, gens(1))

	verdict = reloadAsync(p)
	p.WaitStatus(20*time.Second, onTrial(3))
	r = ctl(t, 20*time.Second, p, "rollback")
	if r.Code != 0 || r.Stdout != fmt.Sprintf("rolled back: generation 2 (pid %d) serving\n", g2.PID) {
		t.Errorf("rollback: %v", r)
	}
	r = <-verdict
	if r.Code != 1 {
		t.Errorf("reload ended by rollback: want exit 1: %v", r)
	}
	mustContain(t, "hitless reload's stderr", r.Stderr, "reload failed: generation 3", "rolled back during the trial: asked by hitless rollback")
	untouched(t, p, 2, g2.PID)
}

// A serving child that stops sending WATCHDOG=1 is aborted (SIGABRT: the
// Go child prints every goroutine's stack) within its interval of its
// last ping, dies well within the grace, and is restarted.
func TestWatchdogKillsServingChild(t *testing.T) {
	const interval, grace, healthyFor = 500 * time.Millisecond, 5 * time.Second, 1500 * time.Millisecond
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("unhealthy:"+healthyFor.String()), 0o644)
	p := start(t, harness.Options{
		NoWait: true,
		Args:   []string{"--watchdog", interval.String(), "--watchdog-grace", grace.String(), "--backoff-min", "100ms"},
	}, "-mode-file", modeFile)
	_, serving := p.WaitSince(0, 20*time.Second, harness.IsGen("serving", 1))
	// The next start serves and stays healthy.
	os.WriteFile(modeFile, []byte("serve"), 0o644)
	_, expired := p.WaitSince(0, 20*time.Second, harness.IsGen("watchdog expired: aborting", 1))
	_, died := p.WaitSince(0, 20*time.Second, harness.Is("serving child died"))
	if died.Int("generation") != 1 || !strings.Contains(died.Str("status"), "(after its watchdog expired)") {
		t.Errorf("died record %v, want generation 1 with the watchdog in its status", died)
	}
	// Its pings kept it alive while it was healthy, well past one
	// interval; then it was aborted within an interval (and a ping
	// period) of its health check failing, and died within the grace.
	alive := expired.At.Sub(serving.At)
	if alive < 2*interval || alive > healthyFor+interval+2*time.Second {
		t.Errorf("aborted %v after it began serving; healthy for %v, watchdog %v", alive, healthyFor, interval)
	}
	if d := died.At.Sub(expired.At); d > grace {
		t.Errorf("died %v after SIGABRT, grace %v", d, grace)
	}
	p.WaitOutput(10*time.Second, "SIGABRT: abort")
	mustContain(t, "the aborted child's stderr", p.Output(), "goroutine 1 gp=", "main.main()")
	st := p.WaitStatus(20*time.Second, serves(2))
	if st.WatchdogKills != 1 || st.Restarts != 1 {
		t.Errorf("status: watchdog kills %d, restarts %d; want 1 and 1", st.WatchdogKills, st.Restarts)
	}
	if g, _ := st.Serving(); g.WatchdogUSec != interval.Microseconds() {
		t.Errorf("restarted generation's watchdog: %+v", g)
	}
	t.Logf("generation 1 served %v, died %v after SIGABRT", alive, died.At.Sub(expired.At))
}
