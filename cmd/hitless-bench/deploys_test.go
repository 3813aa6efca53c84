//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

func TestBodyPID(t *testing.T) {
	for body, want := range map[string]int{
		"ok gen=3 pid=1234 bytes=7\n": 1234,
		"ok pid=99 bytes=5\n":         99,
		"ok pid=77\n":                 77,
		"ok gen=1 bytes=7\n":          0,
		"":                            0,
	} {
		if got := bodyPID([]byte(body)); got != want {
			t.Errorf("bodyPID(%q) = %d, want %d", body, got, want)
		}
	}
	var seen pidsSeen
	for _, b := range []string{"ok pid=5 ", "ok pid=6 ", "ok pid=5 ", "no pid", "ok pid=7 "} {
		seen.add([]byte(b))
	}
	if got := seen.pids(); !slices.Equal(got, []int{5, 6, 7}) {
		t.Errorf("pids seen %v, want [5 6 7]", got)
	}
}

// Each peer that is installed runs in front of the test server, and each
// blue/green deploy behind it moves new connections to a new backend;
// once the replaced backends are gone and the setup is stopped, no
// process of the peer's nor any backend is left. A peer that is not
// installed is skipped (scripts/bench.sh installs them).
func TestBlueGreenDeploys(t *testing.T) {
	dir := t.TempDir()
	server := filepath.Join(dir, "testserver")
	if err := harness.Build("", server, "github.com/hitless/hitless/internal/e2e/testserver"); err != nil {
		t.Fatal(err)
	}
	look := func(name string) string {
		for _, p := range []string{name, "/usr/sbin/" + name} {
			if bin, err := exec.LookPath(p); err == nil {
				return bin
			}
		}
		return ""
	}
	b := &bench{bins: bins{server: server, nginx: look("nginx"), haproxy: look("haproxy"), caddy: look("caddy")}, tmp: dir}
	for i, st := range deploySetups() {
		if st.peer == "" || st.key == "hitless behind nginx" {
			continue // hitless's own setups: the e2e tests and the bench
		}
		t.Run(st.key, func(t *testing.T) {
			if b.peerBin(st.peer) == "" {
				t.Skipf("%s is not installed", st.peer)
			}
			var pids []int
			var gone []time.Duration
			var pgid int
			_, err := b.run(func(s *scenario) []row {
				sub := filepath.Join(dir, fmt.Sprintf("%s-%d", st.peer, i))
				s.check(os.MkdirAll(sub, 0o755))
				tg := st.start(s, sub)
				pids = append(pids, tg.first)
				for range 3 {
					pid, err := tg.deploy()
					s.check(err)
					pids = append(pids, pid)
				}
				gone = tg.gone()
				pgid = tg.proxy
				tg.stop()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(pids) != 4 || hasRepeats(pids) {
				t.Errorf("backend pids %v: want 4 different ones", pids)
			}
			if len(gone) != 3 {
				t.Errorf("%d replaced backends gone, want 3", len(gone))
			}
			for _, pid := range pids {
				if harness.Alive(pid) {
					t.Errorf("backend pid %d still runs", pid)
				}
			}
			if err := syscall.Kill(-pgid, 0); err != syscall.ESRCH {
				t.Errorf("process group %d of %s: %v, want no process left", pgid, st.peer, err)
			}
		})
	}
}

func hasRepeats(xs []int) bool {
	seen := map[int]bool{}
	for _, x := range xs {
		if seen[x] {
			return true
		}
		seen[x] = true
	}
	return false
}

// The versions line names each peer and its version, or says it is not
// installed.
func TestPeerVersion(t *testing.T) {
	if got := peerVersion("caddy", ""); got != "caddy: not installed" {
		t.Errorf("no binary: %q", got)
	}
	for name, want := range map[string]string{"nginx": `^nginx \d+\.\d+`, "haproxy": `^HAProxy \d+\.\d+`, "caddy": `^Caddy v?\d+\.\d+`} {
		bin, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		if got := peerVersion(name, bin); !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("%s: %q, want it to match %s", name, got, want)
		}
	}
}
