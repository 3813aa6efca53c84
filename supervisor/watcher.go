//go:build linux

package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The watcher makes sure nothing of a generation outlives hitless, however
// hitless dies: SIGKILL, the OOM killer, a panic, when it can run no code
// of its own. The parent-death signal each child gets reaches only that
// child, never what it started: a wrapper script's server, a pre-fork
// master's workers.
//
// The watcher is hitless's own binary in a hidden mode (WatchArg), in a
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
		Env:   runtimeEnv(),
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

// tell sends one line to the watcher. A watcher that does not read within
// a second is reported, not waited for.
func (wt *watcher) tell(line string) error {
	wt.w.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := wt.w.WriteString(line + "\n")
	return err
}

func (wt *watcher) add(pgid int) error    { return wt.tell("+" + strconv.Itoa(pgid)) }
func (wt *watcher) remove(pgid int) error { return wt.tell("-" + strconv.Itoa(pgid)) }

// upgrading tells the watcher that an exec is under way, and how to drain
// the children should hitless die before an image runs again (running).
func (wt *watcher) upgrading(sig syscall.Signal, timeout time.Duration) error {
	return wt.tell(fmt.Sprintf("U %d %d", int(sig), timeout.Milliseconds()))
}

func (wt *watcher) running() error { return wt.tell("R") }

// stop closes the pipe, which ends the watcher, and waits a moment for
// it to exit so that it is reaped.
func (wt *watcher) stop() {
	wt.w.Close()
	select {
	case <-wt.exit:
	case <-time.After(2 * time.Second):
	}
}

// runWatcher is the watcher's main: it reads process groups from pipe
// until EOF, then kills the ones it was not told are gone, or drains them
// if hitless died during the exec of an upgrade.
func runWatcher(pipe *os.File) int {
	// Signals meant for hitless's terminal or group are not for it: it
	// ends when hitless does, and only then.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	groups := make(map[int]bool)
	var drain struct {
		on      bool
		sig     unix.Signal
		timeout time.Duration
	}
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		line := sc.Text()
		if line == "R" {
			drain.on = false
			continue
		}
		if f := strings.Fields(line); len(f) == 3 && f[0] == "U" {
			sig, err1 := strconv.Atoi(f[1])
			ms, err2 := strconv.Atoi(f[2])
			if err1 == nil && err2 == nil && sig > 0 && sig < 65 && ms >= 0 {
				drain.on, drain.sig, drain.timeout = true, unix.Signal(sig), time.Duration(ms)*time.Millisecond
				continue
			}
		}
		pgid, err := strconv.Atoi(strings.TrimLeft(line, "+-"))
		if err != nil || pgid <= 1 || len(line) < 2 {
			fmt.Fprintf(os.Stderr, "hitless watcher: ignoring %q\n", line)
			continue
		}
		groups[pgid] = line[0] == '+'
	}
	var live []int
	for pgid, on := range groups {
		if on {
			live = append(live, pgid)
		}
	}
	if drain.on {
		fmt.Fprintf(os.Stderr, "hitless watcher: hitless died during an upgrade; draining %d process group(s) with %v, for at most %v\n",
			len(live), unix.SignalName(drain.sig), drain.timeout)
		live = drainGroups(live, drain.sig, drain.timeout)
	}
	for _, pgid := range live {
		if err := unix.Kill(-pgid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			fmt.Fprintf(os.Stderr, "hitless watcher: kill process group %d: %v\n", pgid, err)
		}
	}
	return 0
}

// drainGroups sends sig to each process group and waits until they are
// gone or timeout passes; it returns those left. Not its children, it
// cannot wait for them: it looks every 50 ms.
func drainGroups(groups []int, sig unix.Signal, timeout time.Duration) []int {
	for _, pgid := range groups {
		unix.Kill(-pgid, sig)
	}
	deadline := time.Now().Add(timeout)
	for len(groups) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		groups = slices.DeleteFunc(groups, func(pgid int) bool { return errors.Is(unix.Kill(-pgid, 0), unix.ESRCH) })
	}
	return groups
}
