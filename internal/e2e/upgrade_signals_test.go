//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/control"
	"github.com/hitless/hitless/internal/harness"
)

// Upgrades, each with one signal sent to hitless at a random moment 0 to
// 20 ms after the request (issue 16): SIGHUP, SIGINT, SIGTERM and SIGUSR1
// in turn. A signal is handled exactly once: a SIGHUP gives one reload
// after the upgrade, a SIGINT or SIGTERM a drained stop with exit status
// 0, a SIGUSR1 reaches the child once; and the upgrade's caller always
// gets an answer.
//
// Except in one window per upgrade, which no Go program can close: from
// the old image ignoring SIGHUP, SIGINT and SIGTERM (for the exec) to the
// new one catching them, which it does at its 22nd package
// initialisation. The new image logs the window ("signals uncaught across
// the exec", CLOCK_MONOTONIC bounds); a signal sent in it is lost, and a
// SIGTERM in its last part (once the new runtime set up its handlers)
// ends hitless, whose watcher then drains the child (it was told an exec
// was under way): the child writes a file as it drains. The test counts those apart, and reports them with the
// window's size: the figures of docs/reliability.md. Anything else fails
// it: a signal outside the window lost or handled twice, hitless dead of
// one, an upgrade's caller without an answer.
//
// The hitless binary is the plain build, which users run. HITLESS_UPGRADE_SIGNALS
// sets the number of upgrades (default 200, 40 with -short).
func TestUpgradeSignals(t *testing.T) {
	n := 200
	if s := os.Getenv("HITLESS_UPGRADE_SIGNALS"); s != "" {
		n, _ = strconv.Atoi(s)
	} else if testing.Short() {
		n = 40
	}
	notify := notifyReady
	if p, err := exec.LookPath("systemd-notify"); err == nil {
		notify = p + " --ready"
	}
	sigs := []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1}
	type tally struct{ handled, lost, fatal int }
	counts := map[syscall.Signal]*tally{}
	for _, s := range sigs {
		counts[s] = &tally{}
	}
	var windows []time.Duration
	var p *harness.Hitless
	var reloads, usr1, upgrades int
	var drained string // the file the child writes as it drains
	for i := range n {
		sig := sigs[i%len(sigs)]
		if p == nil {
			drained = filepath.Join(t.TempDir(), "drained")
			p = start(t, harness.Options{Hitless: bin.client, Args: []string{"--drain-timeout", "10s"},
				Command: []string{"/bin/sh", "-c", `trap 'echo got-usr1 >&2' USR1; trap 'echo drained > ` + drained + `; exit 0' TERM; ` + notify + `; while :; do sleep 0.05; done`}})
			reloads, usr1, upgrades = 0, 0, 0
		}
		upgrades++
		delay := rand.N(20 * time.Millisecond)
		what := fmt.Sprintf("upgrade %d with %s %v after the request", i+1, unix.SignalName(sig), delay.Round(10*time.Microsecond))
		mark := p.Mark()
		u := upgradeWithSignal(p, sig, delay)
		if u.err != nil {
			t.Fatalf("%s: %v", what, u.err)
		}
		// The window of this upgrade: the new image logs it before it
		// answers the upgrade's caller.
		inWindow := false
		if u.verdict == "ok" {
			_, r := p.WaitSince(mark, 10*time.Second, harness.Is("upgrade: signals uncaught across the exec"))
			from, to := int64(r.Int("from_monotonic_ns")), int64(r.Int("to_monotonic_ns"))
			windows = append(windows, time.Duration(to-from))
			inWindow = u.sentAt >= from && u.sentAt <= to
		}
		c := counts[sig]
		switch sig {
		case syscall.SIGINT, syscall.SIGTERM:
			wait := 30 * time.Second
			if inWindow {
				wait = 5 * time.Second // it is lost, or it stops at once
			}
			exited := p.WaitExit(wait)
			switch {
			case !exited && inWindow:
				// Lost: hitless runs on. Stop it as an operator would.
				c.lost++
				p.Signal(syscall.SIGTERM)
				p.Wait(30 * time.Second)
			case !exited:
				t.Fatalf("%s: hitless did not stop", what)
			case p.ExitSignal() == syscall.SIGTERM && sig == syscall.SIGTERM &&
				(u.verdict == "" && afterHandOver(p, mark, u.sentWall) || u.verdict == "ok" && inWindow):
				// Ended by the SIGTERM in the window's last part, before
				// the new image could log it (the runtime's death of it
				// can come after the new image answered, on a busy
				// machine): the watcher drains the child, as the stop the
				// SIGTERM asked for would have.
				if !p.OutputWithin(10*time.Second, "hitless died during an upgrade; draining 1 process group(s) with SIGTERM") {
					t.Fatalf("%s: hitless died of it, and the watcher did not drain the child", what)
				}
				waitUntil(t, 10*time.Second, what+": the child drained", func() bool { _, err := os.Stat(drained); return err == nil })
				c.fatal++
			case p.ExitCode() != 0 || u.verdict != "ok" && u.verdict != "stopping":
				t.Fatalf("%s: hitless exited %d (signal %v), the upgrade's caller got %q: want a drained stop, exit 0",
					what, p.ExitCode(), p.ExitSignal(), u.verdict)
			default:
				if _, r := p.WaitSince(mark, time.Second, harness.Is("stopped")); !strings.Contains(r.Str("status"), "exit status 0") {
					t.Fatalf("%s: the child ended with %q, want a drain (exit status 0)", what, r.Str("status"))
				}
				c.handled++
			}
			p = nil
			continue
		case syscall.SIGHUP:
			// The signal reaches hitless's loop after kill(2) returned, so a
			// status asked at once may precede it: wait for its reload. One
			// sent inside the window may have been lost: after a while,
			// take the settled status as it is.
			lostBy := time.Now().Add(time.Hour)
			if inWindow {
				lostBy = time.Now().Add(3 * time.Second)
			}
			st := p.WaitStatus(30*time.Second, func(s harness.Status) bool {
				settled := !s.Upgrading && !s.ReloadQueued && len(s.Generations) == 1
				return settled && (s.ReloadsOK+s.ReloadsFailed > reloads || time.Now().After(lostBy))
			})
			switch got := st.ReloadsOK + st.ReloadsFailed - reloads; {
			case got == 1 && st.ReloadsFailed == 0:
				c.handled++
				reloads++
			case got == 0 && inWindow:
				c.lost++
			default:
				t.Fatalf("%s: %d reloads after it (%d failed), in the window %v; want one", what, got, st.ReloadsFailed, inWindow)
			}
		case syscall.SIGUSR1:
			if inWindow {
				if !p.OutputCount(3*time.Second, "\ngot-usr1\n", usr1+1) {
					c.lost++
					break
				}
			} else {
				if !p.OutputCount(10*time.Second, "\ngot-usr1\n", usr1+1) {
					t.Fatalf("%s: the child did not get it", what)
				}
			}
			usr1++
			c.handled++
		}
		if u.verdict != "ok" {
			t.Fatalf("%s: the upgrade's verdict %q, want ok", what, u.verdict)
		}
		if st := p.Status(); st.UpgradesOK != upgrades {
			t.Fatalf("%s: %d upgrades ok, want %d", what, st.UpgradesOK, upgrades)
		}
		if got := strings.Count(p.Output(), "\ngot-usr1\n"); got != usr1 {
			t.Fatalf("%s: the child got SIGUSR1 %d times, want %d", what, got, usr1)
		}
	}
	slices.Sort(windows)
	var summary []string
	for _, s := range sigs {
		c := counts[s]
		summary = append(summary, fmt.Sprintf("%s %d handled, %d lost, %d fatal", unix.SignalName(s), c.handled, c.lost, c.fatal))
	}
	t.Logf("%d upgrades, one signal each 0-20 ms after the request: %s", n, strings.Join(summary, "; "))
	if len(windows) > 0 {
		t.Logf("signals uncaught across the exec (%d upgrades): median %v, p90 %v, max %v", len(windows),
			windows[len(windows)/2].Round(10*time.Microsecond), windows[len(windows)*9/10].Round(10*time.Microsecond), windows[len(windows)-1].Round(10*time.Microsecond))
	}
}

// Review of issue 16, finding 3: hitless that dies inside an upgrade's
// exec (here, a new binary that passes its check and exits at the real
// exec: a deterministic stand-in for the SIGTERM no runtime can catch
// while it starts) has its children drained by the watcher: the drain
// signal, which the child, started by hitless as every child is,
// handles; SIGKILL only at the drain deadline. Before, every child had a
// parent-death SIGKILL, which struck first: the child never drained.
// Nothing outlives it: the port refuses, the child is gone.
func TestUpgradeDiesInExecDrains(t *testing.T) {
	dir, path := liveBinary(t)
	drained := filepath.Join(dir, "drained")
	p := start(t, harness.Options{Hitless: path, Args: []string{"--drain-timeout", "20s"},
		Command: []string{"/bin/sh", "-c", `trap 'echo drained > ` + drained + `; exit 0' TERM; ` + notifyReady + `; while :; do sleep 0.05; done`}})
	g, _ := p.Status().Serving()
	dies := filepath.Join(dir, "dies")
	if err := os.WriteFile(dies, []byte("#!/bin/sh\nif [ \"$1\" = __hitless_upgrade_check ]; then exec \""+path+"\" \"$@\"; fi\nexit 7\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	res := ctl(t, 3*time.Minute, p, "upgrade", "--binary", dies)
	if res.Code != 3 {
		t.Errorf("the upgrade's caller, hitless dying in the exec: %s; want exit 3, no answer", res)
	}
	if code := p.Wait(20 * time.Second); code != 7 {
		t.Errorf("hitless exited %d, want the 7 of the binary it exec'd", code)
	}
	if !p.OutputWithin(10*time.Second, "hitless died during an upgrade; draining 1 process group(s) with SIGTERM") {
		t.Fatalf("the watcher did not say it drains:\n%s", p.Output())
	}
	waitUntil(t, 10*time.Second, "the child drained", func() bool {
		b, _ := os.ReadFile(drained)
		return string(b) == "drained\n"
	})
	waitUntil(t, 10*time.Second, fmt.Sprintf("child %d gone", g.PID), func() bool { return !harness.Alive(g.PID) })
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("the port still accepts after hitless and its child are gone")
	}
}

// upgraded is what upgradeWithSignal saw.
type upgraded struct {
	verdict  string // "ok", the code of a refusal ("stopping"), or "" when hitless died
	sentAt   int64  // when the signal was sent, CLOCK_MONOTONIC nanoseconds
	sentWall time.Time
	err      error
}

// upgradeWithSignal asks p for an upgrade on its control socket and sends
// it sig delay after the request went out.
func upgradeWithSignal(p *harness.Hitless, sig syscall.Signal, delay time.Duration) upgraded {
	c, err := control.Dial(p.Control())
	if err != nil {
		return upgraded{err: err}
	}
	defer c.Close()
	type result struct {
		r   *control.UpgradeReply
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := c.Upgrade(context.Background(), "", time.Minute)
		done <- result{r, err}
	}()
	sent := make(chan upgraded, 1)
	time.AfterFunc(delay, func() {
		var u upgraded
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		u.sentAt, u.sentWall = ts.Nano(), time.Now()
		u.err = syscall.Kill(p.PID(), sig)
		sent <- u
	})
	u := <-sent
	if u.err != nil {
		return u
	}
	res := <-done
	var failed *control.UpgradeFailed
	var remote *control.RemoteError
	var unreach *control.UnreachableError
	switch {
	case res.err == nil:
		u.verdict = "ok"
	case errors.As(res.err, &failed):
		u.verdict = "failed: " + failed.Msg
	case errors.As(res.err, &remote):
		u.verdict = remote.Code
	case errors.As(res.err, &unreach):
		u.verdict = "" // the connection ended without an answer: hitless died
	default:
		u.err = fmt.Errorf("no answer to the upgrade: %w", res.err)
	}
	return u
}

// findSince returns the first record from mark on with message msg, and
// its index; -1 if there is none (yet).
func findSince(p *harness.Hitless, mark int, msg string) (int, harness.Record) {
	for i, r := range p.Records(mark) {
		if r.Msg() == msg {
			return mark + i, r
		}
	}
	return -1, harness.Record{}
}

// afterHandOver reports whether t is after the old image of the upgrade
// begun at mark logged that it hands over: the exec came next.
func afterHandOver(p *harness.Hitless, mark int, t time.Time) bool {
	_, r := findSince(p, mark, "upgrade: handing over")
	at, err := time.Parse(time.RFC3339Nano, r.Str("time"))
	return err == nil && t.After(at)
}

// The new image catches signals as soon as its start allows: package
// earlysig is initialised right after os/signal, its only import of
// note, before any heavy package (the CLI, HTTP, metrics, protobuf,
// YAML). Go initialises packages in import-path order among those whose
// imports are ready; a new import of earlysig's, or a package renamed to
// sort before it, would move it (GODEBUG=inittrace=1 shows the order).
func TestEarlySignalsInitFirst(t *testing.T) {
	cmd := exec.Command(bin.client, "--version")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1", "HITLESS_UPGRADE_STATE=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var order []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "init" {
			order = append(order, f[1])
		}
	}
	early := slices.Index(order, "github.com/hitless/hitless/upgrade/internal/earlysig")
	if early < 0 {
		t.Fatalf("earlysig is not initialised:\n%s", strings.Join(order, "\n"))
	}
	// Right after os/signal, or after the other early package, hidden
	// (the shim and the watcher), whose init sorts first and returns at
	// once in any other run (see TestHiddenModesRunBeforeHeavyInit).
	prev := order[early-1]
	if prev == "github.com/hitless/hitless/supervisor/internal/hidden" && early > 1 {
		prev = order[early-2]
	}
	if prev != "os/signal" {
		t.Errorf("earlysig is initialised after %s, not right after os/signal", order[early-1])
	}
	for _, heavy := range []string{"net/http", "github.com/spf13/cobra", "github.com/prometheus/client_golang/prometheus", "go.yaml.in/yaml/v3", "google.golang.org/protobuf/internal/filedesc", "log/slog"} {
		if i := slices.Index(order, heavy); i >= 0 && i < early {
			t.Errorf("%s is initialised before earlysig", heavy)
		}
	}
	t.Logf("earlysig is package %d of %d initialised", early+1, len(order))
}
