//go:build linux

package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// "hitless stop" answers only once hitless has released everything it
// holds: a deploy script's "hitless stop && hitless run ..." never meets a
// live control socket, a pid file or a bound port. Before, the answer came
// from the loop, ahead of the teardown: in 6 of 8 runs hitless was still
// there.
func TestStopThenRunAgain(t *testing.T) {
	dir := harness.ShortDir(t)
	pidFile := filepath.Join(dir, "hitless.pid")
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	args := []string{"--listen", "tcp://" + addr, "--control", sock, "--pid-file", pidFile}
	for i := range 5 {
		p := start(t, harness.Options{Args: args})
		if res := ctl(t, 60*time.Second, p, "stop"); res.Code != 0 {
			t.Fatalf("round %d: hitless stop: %s", i, res)
		}
		for _, path := range []string{sock, pidFile} {
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("round %d: %s when hitless stop returned: %v", i, path, err)
			}
		}
		if code := p.Wait(10 * time.Second); code != 0 {
			t.Errorf("round %d: hitless exited %d", i, code)
		}
	}
}

// A server without a handler for the drain signal dies of it at every
// stop: that is a clean stop, exit status 0, not 143 (which marks a
// systemd unit failed on every systemctl stop). A child's own failure
// still shows.
func TestStopExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		child string
		want  int
	}{
		{"no SIGTERM handler", notifyReady + "; exec sleep 1000", 0},
		// The trap is set before READY=1: a SIGTERM sent once the child
		// serves must meet it, not the shell's default action.
		{"exits 3 on SIGTERM", `trap 'exit 3' TERM; ` + notifyReady + `; while :; do sleep 0.1; done`, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, harness.Options{Command: []string{"/bin/sh", "-c", tc.child}})
			p.Signal(syscall.SIGTERM)
			if code := p.Wait(20 * time.Second); code != tc.want {
				t.Errorf("hitless exited %d, want %d", code, tc.want)
			}
		})
	}
}

// A deploy script that reads the pid file and sends SIGHUP at once
// reloads hitless: the handlers are installed before the pid is
// announced. (TestSIGHUPBeforeRun in the supervisor package holds the
// window open; here it is the real binary.)
func TestSIGHUPAsSoonAsPidFile(t *testing.T) {
	pidFile := filepath.Join(harness.ShortDir(t), "hitless.pid")
	p := start(t, harness.Options{Args: []string{"--pid-file", pidFile}, NoWait: true})
	var pid int
	waitUntil(t, 10*time.Second, "the pid file", func() bool {
		b, err := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.WaitStatus(20*time.Second, serves(2))
}
