//go:build linux

package e2e

// What hitless costs: the hidden modes (the shim at each start of a
// child, the watcher for hitless's whole life) run before the program's
// heavy initialisation, and a reload's steps are in the debug log.

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
	"github.com/hitless/hitless/supervisor"
)

// inits runs hitless with args and GODEBUG=inittrace=1 and returns the
// packages initialised, in order.
func inits(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command(bin.client, args...)
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	// fds 3 and 4: the shim's report and start pipes; its start message
	// is empty, so it exits at once.
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	cmd.ExtraFiles = []*os.File{null, null}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hitless %v: %v\n%s", args, err, out)
	}
	var pkgs []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "init" && strings.HasPrefix(f[2], "@") {
			pkgs = append(pkgs, f[1])
		}
	}
	if len(pkgs) == 0 {
		t.Fatalf("hitless %v: no inittrace:\n%s", args, out)
	}
	return pkgs
}

// The packages whose init must run before the rest of hitless is
// initialised: the shim and the watcher (hidden), and the catcher of the
// signals sent to a new image during an upgrade (earlysig).
var earlyInits = []string{"github.com/hitless/hitless/supervisor/internal/hidden", "github.com/hitless/hitless/upgrade/internal/earlysig"}

// oneprocInit sets hitless's GOMAXPROCS before the heavy inits take
// memory on every processor; in a hidden mode it may run first (the
// helpers get GOMAXPROCS=1 in their environment, and it does nothing).
const oneprocInit = "github.com/hitless/hitless/cmd/hitless/internal/oneproc"

// heavyInit reports whether p is a package that an early init must not
// wait for: one outside the standard library, or a heavy one of it.
func heavyInit(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return strings.Contains(first, ".") && !slices.Contains(earlyInits, p) && p != oneprocInit || p == "main" ||
		slices.Contains([]string{"net", "net/http", "crypto/tls", "encoding/json", "log/slog", "reflect", "regexp", "text/template"}, p)
}

// The shim and the watcher run from package hidden's init, which Go
// schedules right after os and os/signal, as it does earlysig's: no
// package outside the standard library, and none of its heavy ones, is
// initialised before them. (A full run initialises them all, main last.)
func TestHiddenModesRunBeforeHeavyInit(t *testing.T) {
	full := inits(t, "--version")
	if full[len(full)-1] != "main" || !slices.Contains(full, "github.com/spf13/cobra") {
		t.Fatalf("a full run initialised %v", full)
	}
	for _, early := range append(earlyInits, oneprocInit) {
		i := slices.Index(full, early)
		if i < 0 {
			t.Errorf("%s: no init in a full run", early)
		}
		if j := slices.IndexFunc(full, heavyInit); j >= 0 && j < i {
			t.Errorf("%s initialised after %s: %v", early, full[j], full[:i+1])
		}
	}
	for _, args := range [][]string{
		{supervisor.ShimArg, "3", "4"},
		{supervisor.WatchArg}, // fd 3 is no socket: it reads EOF at once
	} {
		got := inits(t, args...)
		for _, p := range got {
			if heavyInit(p) || slices.Contains(earlyInits, p) {
				t.Errorf("%s: %s initialised first (all: %v)", args[0], p, got)
			}
		}
		if len(got) >= len(full)/2 {
			t.Errorf("%s: %d of %d packages initialised first: %v", args[0], len(got), len(full), got)
		}
	}
}

// A reload's steps, in the debug log: each one timed, from the request
// to the old generation signalled, and adding up to the total. A reload
// that takes the standby has no fork in it.
func TestReloadSteps(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		steps []string
	}{
		{nil, []string{"request_to_begin", "shim", "child_start", "ready_to_serving", "serving_to_signal"}},
		{[]string{"--no-standby"}, []string{"request_to_fork", "fork", "shim_start", "shim", "child_start", "ready_to_serving", "serving_to_signal"}},
	} {
		t.Run(strings.Join(append([]string{"standby"}, tc.args...), " "), func(t *testing.T) {
			reloadSteps(t, tc.args, tc.steps)
		})
	}
}

func reloadSteps(t *testing.T, args, steps []string) {
	p := start(t, harness.Options{Args: append([]string{"--log-level", "debug"}, args...)})
	if len(args) == 0 {
		// The standby is forked once generation 1 serves.
		p.WaitStatus(10*time.Second, func(st harness.Status) bool { return st.StandbyPID != 0 })
	}
	m := p.Mark()
	p.Reload()
	_, r := p.WaitSince(m, 10*time.Second, harness.IsGen("reload steps", 2))
	sum := 0
	for _, step := range steps {
		d := r.Int(step)
		if d <= 0 || d > int(10*time.Second) {
			t.Errorf("%s: %v", step, time.Duration(d))
		}
		sum += d
	}
	if total := r.Int("total"); total != sum {
		t.Errorf("total %v, the steps add up to %v: %v", time.Duration(total), time.Duration(sum), r)
	}
	if g, _ := p.Status().Serving(); r.Int("pid") != g.PID {
		t.Errorf("steps of pid %d, generation 2 is pid %d", r.Int("pid"), g.PID)
	}
}
