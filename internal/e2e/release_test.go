//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

// release14f122a is the last release before issue 16: its upgrade state
// is version 1, and carries no settings; its watcher speaks lines
// without a version, on a pipe.
const release14f122a = "14f122a"

// Upgrades across the release boundary (review of issue 16, finding 5),
// with 14f122a built from this repository's history:
//
//   - from 14f122a, with the config file changed since it started: the
//     sockets and the pid file stay as it ran them (no new pid file is
//     written, the old one is kept), the other settings are read again,
//     and the verdict says so; the watcher 14f122a started is replaced,
//     never leaving the children without one;
//   - back to 14f122a: refused at its check, which reads only version 1
//     (before, the downgrade went ahead and misread the state);
//   - a later upgrade still names the kept settings; and the replaced
//     watcher is the one that kills the children when hitless is killed.
func TestUpgradeAcrossRelease14f122a(t *testing.T) {
	old := buildRelease(t, release14f122a)
	dir := worldReadableDir(t)
	path := filepath.Join(dir, "hitless")
	copyFile(t, old, path, 0o755)
	conf := filepath.Join(dir, "app.yaml")
	pid1, pid2 := filepath.Join(dir, "a.pid"), filepath.Join(dir, "b.pid")
	write := func(s string) {
		if err := os.WriteFile(conf, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("listen: [tcp://127.0.0.1:0]\ndrain_timeout: 30s\npid_file: " + pid1 + "\n")
	p := start(t, harness.Options{Hitless: path, NoListen: true, Args: []string{"--config", conf}})
	g, _ := p.Status().Serving()
	oldWatchers := watchers(t, p.PID())
	if len(oldWatchers) != 1 {
		t.Fatalf("14f122a's watchers: %v", oldWatchers)
	}

	// A listen that would not even be valid (two sockets named tcp-0):
	// it is not used, the sockets carried are.
	write("listen: [tcp://127.0.0.1:0, tcp://127.0.0.1:0]\ndrain_timeout: 5s\npid_file: " + pid2 + "\n")
	deploy(t, bin.hitless, path)
	res := ctl(t, 3*time.Minute, p, "upgrade")
	if res.Code != 0 {
		t.Fatalf("upgrade from %s: %s", release14f122a, res)
	}
	mustContain(t, "the upgrade's verdict", res.Stdout, "the previous release did not carry its settings: listen and pid_file stay as it ran them")
	st := p.Status()
	if s, _ := st.Serving(); st.PID != p.PID() || s.PID != g.PID || len(st.Listeners) != 1 {
		t.Errorf("after the upgrade from %s: %+v", release14f122a, st)
	}
	if b, err := os.ReadFile(pid1); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(p.PID()) {
		t.Errorf("the pid file %s: %q, %v", pid1, b, err)
	}
	if _, err := os.Stat(pid2); err == nil {
		t.Errorf("%s was written by the upgrade", pid2)
	}
	p.WaitFor(10*time.Second, harness.Is("watcher: replaced the one an earlier build started"))
	now := watchers(t, p.PID())
	if len(now) != 1 || now[0] == oldWatchers[0] {
		t.Errorf("watchers after the upgrade: %v, before %v", now, oldWatchers)
	}
	mark := p.Mark()
	p.Reload()
	if _, r := p.WaitSince(mark, 10*time.Second, harness.Is("draining")); time.Duration(r.Int("timeout")) != 5*time.Second {
		t.Errorf("drain timeout after the upgrade: %v, want the file's 5s, read again", time.Duration(r.Int("timeout")))
	}

	back := filepath.Join(dir, "hitless-14f122a")
	copyFile(t, old, back, 0o755)
	res = ctl(t, 3*time.Minute, p, "upgrade", "--binary", back)
	if res.Code != 1 || !strings.Contains(res.Stderr, "upgrade refused") || !strings.Contains(res.Stderr, "reads state versions 1 to 1, not this one's "+strconv.Itoa(upgrade.StateVersion)) {
		t.Errorf("the upgrade back to %s: %s", release14f122a, res)
	}

	res = ctl(t, 3*time.Minute, p, "upgrade")
	if res.Code != 0 {
		t.Fatalf("a second upgrade: %s", res)
	}
	mustContain(t, "the second upgrade's verdict", res.Stdout, "listen and pid_file are still as a release that did not carry its settings ran them")

	serving, _ := p.Status().Serving()
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
	waitUntil(t, 10*time.Second, fmt.Sprintf("child %d gone", serving.PID), func() bool { return !harness.Alive(serving.PID) })
}

// From 14f122a, with a config file that cannot be used now: the upgrade
// goes on with the command line's settings and the defaults, and says
// so. A rollback would not help: 14f122a reads the file again as it
// restores, fails, and rolls back to itself, again and again.
func TestUpgradeFromRelease14f122aBadConfig(t *testing.T) {
	old := buildRelease(t, release14f122a)
	dir := worldReadableDir(t)
	path := filepath.Join(dir, "hitless")
	copyFile(t, old, path, 0o755)
	conf := filepath.Join(dir, "app.yaml")
	if err := os.WriteFile(conf, []byte("listen: [tcp://127.0.0.1:0]\ndrain_timeout: 30s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, harness.Options{Hitless: path, NoListen: true, Args: []string{"--config", conf}})
	g, _ := p.Status().Serving()
	if err := os.WriteFile(conf, []byte("listen: [tcp://127.0.0.1:0]\ndrain_timeout: soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deploy(t, bin.hitless, path)
	res := ctl(t, 3*time.Minute, p, "upgrade")
	if res.Code != 0 {
		t.Fatalf("upgrade from %s with a bad config file: %s", release14f122a, res)
	}
	mustContain(t, "the upgrade's verdict", res.Stdout, "cannot be used now", "drain_timeout", "the other settings are the command line's and the defaults")
	if s, _ := p.Status().Serving(); s.PID != g.PID {
		t.Errorf("serving %+v after the upgrade, %+v before", s, g)
	}
	p.Reload()
}

// watchers lists hitless's watcher processes (children of pid).
func watchers(t *testing.T, pid int) []int {
	t.Helper()
	kids, err := harness.Children(pid)
	if err != nil {
		t.Fatal(err)
	}
	var w []int
	for k, state := range kids {
		if state != "Z" && harness.Arg(k, 1) == supervisor.WatchArg {
			w = append(w, k)
		}
	}
	return w
}

// buildRelease builds hitless as it was at rev, from this repository's
// history; the test is skipped where the history is not at hand (an
// export of the tree, a shallow clone).
func buildRelease(t *testing.T, rev string) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", rev+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("release %s is not in this repository's history: %v %s", rev, err, out)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", rev, err, out)
	}
	bin := filepath.Join(t.TempDir(), "hitless-"+rev)
	if err := harness.Build(src, bin, "./cmd/hitless"); err != nil {
		t.Fatal(err)
	}
	return bin
}
