//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/supervisor/internal/hidden"
)

// The watcher makes sure nothing of a generation outlives hitless, however
// hitless dies: SIGKILL, the OOM killer, a panic, when it can run no code
// of its own. The parent-death signal each child gets reaches only that
// child, never what it started: a wrapper script's server, a pre-fork
// master's workers.
//
// The watcher is hitless's own binary in a hidden mode (WatchArg, run by
// package hidden before the program's heavy initialisation), in a
// process group of its own, that outlives hitless. hitless holds the write
// end of a pipe whose read end is the watcher's fd 3, and tells it each
// generation's process group as it starts ("+PGID") and once it is gone
// ("-PGID"). When the last copy of the write end closes, which the kernel
// does when hitless dies or exits, the watcher reads EOF, sends SIGKILL to
// every process group it still knows of, and exits.
//
// Around the exec of an upgrade, hitless says "U SIGNAL MILLISECONDS"
// (its drain signal and timeout) and, once an image runs again, "R". If
// hitless dies in between, it is most likely of a SIGTERM that no Go
// program can catch while its runtime starts (see package upgrade): the
// watcher then does what that SIGTERM asked for, a drain. It sends every
// process group the drain signal, waits until they are gone or the drain
// timeout passes, and only then kills what is left. hitless still dies
// of the signal (exit status 143), but no connection in flight is cut.
//
// Limits: a process that leaves its generation's process group (setsid,
// setpgid) is not killed. A process group id freed and reused in the
// instant between a generation's exit and hitless's own death could be hit.

// watcher is hitless's end of the watcher.
type watcher struct {
	w    *os.File
	pid  int
	exit chan unix.WaitStatus // the watcher process exited
}

// startWatcher starts the watcher process.
func (s *Supervisor) startWatcher() (*watcher, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("watcher pipe: %w", err)
	}
	defer r.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("watcher: %w", err)
	}
	defer null.Close()
	wt := &watcher{w: w, exit: make(chan unix.WaitStatus, 1)}
	attr := &syscall.ProcAttr{
		// One P is all it needs, and a thread fewer: 150 KiB less
		// memory for hitless's whole life.
		Env:   append(runtimeEnv(), "GOMAXPROCS=1"),
		Files: []uintptr{null.Fd(), null.Fd(), s.cfg.Outputs.Stderr.File().Fd(), r.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	wt.pid, err = s.reaper.start(s.cfg.ShimPath, []string{"hitless", WatchArg}, attr, func(ws unix.WaitStatus) { wt.exit <- ws })
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start watcher: %w", err)
	}
	return wt, nil
}

// runtimeEnv is the part of hitless's environment that the watcher, the
// same binary, keeps: the Go runtime's own settings (a race-enabled build
// reads GORACE, for one, and would otherwise sleep a second as it exits,
// holding hitless's stderr). Nothing else of the environment reaches it.
func runtimeEnv() []string {
	env := []string{}
	for _, name := range []string{"GODEBUG", "GORACE", "GOTRACEBACK"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return env
}

// tell sends one line to the watcher (see package hidden for them). A
// watcher that does not read within a second is reported, not waited
// for.
func (wt *watcher) tell(line string) error {
	wt.w.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := wt.w.WriteString(line)
	return err
}

func (wt *watcher) add(pgid int) error    { return wt.tell(hidden.Add(pgid)) }
func (wt *watcher) remove(pgid int) error { return wt.tell(hidden.Remove(pgid)) }

// upgrading tells the watcher that an exec is under way, and how to drain
// the children should hitless die before an image runs again (running).
func (wt *watcher) upgrading(sig syscall.Signal, timeout time.Duration) error {
	return wt.tell(hidden.Upgrading(sig, timeout))
}

func (wt *watcher) running() error { return wt.tell(hidden.Running) }

// stop closes the pipe, which ends the watcher, and waits a moment for
// it to exit so that it is reaped.
func (wt *watcher) stop() {
	wt.w.Close()
	select {
	case <-wt.exit:
	case <-time.After(2 * time.Second):
	}
}
