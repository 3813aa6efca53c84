//go:build linux

package supervisor

import (
	"cmp"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/supervisor/internal/hidden"
)

// The watcher makes sure nothing of a generation outlives hitless, however
// hitless dies: SIGKILL, the OOM killer, a panic, when it can run no code
// of its own. It is the one mechanism: children get no parent-death
// signal, which would reach only the direct child, never what it started
// (a wrapper script's server, a pre-fork master's workers), and would
// kill at once where a drain is due (below).
//
// The watcher is hitless's own binary in a hidden mode (WatchArg, run by
// package hidden before the program's heavy initialisation), in a
// process group of its own, that outlives hitless. hitless holds one end
// of a unix stream socket whose other end is the watcher's fd 3, and
// tells it each generation's process group as it starts ("+PGID") and
// once it is gone ("-PGID"). When the last copy of hitless's end closes,
// which the kernel does when hitless dies or exits, the watcher reads
// EOF, sends SIGKILL to every process group it still knows of, and exits.
//
// Around the exec of an upgrade, hitless sends the read ends of the
// children's output pipes ("P STREAM...", the descriptors attached), says
// "U SIGNAL MILLISECONDS" (its drain signal and timeout) and, a second
// after an image runs again (runningGrace), "R", at which the watcher
// closes the pipes. If hitless dies in between, it is most likely of a
// SIGTERM that no Go program can catch while its runtime starts (see
// package upgrade; the runtime yields before it dies, so the end can
// come after the new image restored), or of a new binary that failed at
// the exec: the watcher then does what the SIGTERM asked for, a drain.
// It copies the children's output to its own stdout and stderr
// (hitless's), so that a child that logs as it drains is not killed by
// SIGPIPE; sends every process group the drain signal; waits until they
// are gone or the drain timeout passes; and only then kills what is
// left. A stop, or a new watcher, within that second is told as much.
//
// The lines are a format, as the upgrade state is: a watcher outlives
// the image that started it, and the images after it speak to it. Its
// version (watcherProtocol) is carried in the state; an image that
// finds an older watcher replaces it (see replaceWatcher).
//
// Limits: a process that leaves its generation's process group (setsid,
// setpgid) is not killed. A process group id freed and reused in the
// instant between a generation's exit and hitless's own death could be
// hit. A child forked in the instant before hitless dies, and not yet
// told to the watcher, is left running. Should the watcher and hitless
// be killed at the same instant (kill -9 of both, an OOM kill of the
// cgroup outside systemd or a container, which kill the whole group),
// the children are left running. When hitless runs as PID 1, its death
// ends the namespace: the kernel kills everything in it, the watcher and
// the children included, so there is nothing to drain.

// watcherProtocol is the version of what hitless says to its watcher:
//
//	0: "+PGID" and "-PGID", on a pipe (14f122a, which carried no version)
//	1: and "U SIGNAL MS", "R" (the first builds of issue 16)
//	2: on a unix stream socket, and "P STREAM..." with the read ends of
//	   the output pipes attached (STREAM is 1 or 2: stdout or stderr)
//
// A watcher understands every version up to its own.
const watcherProtocol = 2

// watcher is hitless's end of the watcher.
type watcher struct {
	w     *os.File
	pid   int
	proto int                  // what the watcher understands: watcherProtocol, or an older one's (carried)
	exit  chan unix.WaitStatus // the watcher process exited
}

// startWatcher starts the watcher process.
func (s *Supervisor) startWatcher() (*watcher, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("watcher socket: %w", os.NewSyscallError("socketpair", err))
	}
	// hitless's end is non-blocking (a write has a deadline); the
	// watcher's, a socket of its own, blocks.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("watcher socket: %w", err)
	}
	w, r := os.NewFile(uintptr(fds[0]), "watcher"), os.NewFile(uintptr(fds[1]), "watcher socket")
	defer r.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("watcher: %w", err)
	}
	defer null.Close()
	wt := &watcher{w: w, proto: watcherProtocol, exit: make(chan unix.WaitStatus, 1)}
	attr := &syscall.ProcAttr{
		// One P is all it needs, and a thread fewer: 150 KiB less
		// memory for hitless's whole life.
		Env:   append(runtimeEnv(), "GOMAXPROCS=1"),
		Files: []uintptr{null.Fd(), s.cfg.Outputs.Stdout.File().Fd(), s.cfg.Outputs.Stderr.File().Fd(), r.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	wt.pid, err = s.reaper.start(s.cfg.ShimPath, []string{"hitless", WatchArg}, attr, func(ws unix.WaitStatus) { wt.exit <- ws })
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start watcher: %w", err)
	}
	return wt, nil
}

// replaceWatcher replaces a watcher that an older build started, which
// does not understand all this one says (see watcherProtocol): the new
// one is started and told every group first, and only then is the old
// one retired, so that no moment goes without a watcher.
func (s *Supervisor) replaceWatcher() {
	old := s.watcher
	w, err := s.startWatcher()
	if err != nil {
		s.log.Error("watcher: cannot replace the one an earlier build started; it goes on", "pid", old.pid, "protocol", old.proto, "err", err)
		return
	}
	var pgids []int
	var outs []outPipe
	for _, c := range s.children {
		if err := w.add(c.pid); err != nil {
			s.log.Warn("watcher", "err", err)
		}
		pgids = append(pgids, c.pid)
		outs = append(outs, c.outs...)
	}
	// Replaced as an upgrade's new image restores: until runningGrace
	// passes, a death drains (see resumeRestored).
	if err := w.upgrading(outs, s.cfg.DrainSignal, s.cfg.DrainTimeout); err != nil {
		s.log.Warn("watcher", "err", err)
	}
	s.watcher = w
	old.retire(pgids)
	s.log.Info("watcher: replaced the one an earlier build started", "old_pid", old.pid, "old_protocol", old.proto, "pid", w.pid, "protocol", w.proto)
}

// runtimeEnv is the environment of hitless's helpers, the watcher and
// the shim (the same binary): the Go runtime's own settings, from
// hitless's environment (a race-enabled build reads GORACE, for one, and
// would otherwise sleep a second as it exits, holding hitless's stderr),
// and one processor: a helper does one thing at a time, and each
// processor the runtime sets up costs memory for the helper's whole life.
// Nothing else of the environment reaches them.
func runtimeEnv() []string {
	env := []string{"GOMAXPROCS=1"}
	for _, name := range []string{"GODEBUG", "GORACE", "GOTRACEBACK"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return env
}

// tell sends one line to the watcher (see package hidden for them), with
// files attached if any. A watcher that does not read within a second is
// reported, not waited for.
func (wt *watcher) tell(line string, files ...int) error {
	wt.w.SetWriteDeadline(time.Now().Add(time.Second))
	if len(files) == 0 {
		_, err := wt.w.WriteString(line)
		return err
	}
	rc, err := wt.w.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgN(int(fd), []byte(line), unix.UnixRights(files...), nil, 0)
		return serr != unix.EAGAIN
	})
	return cmp.Or(err, serr)
}

func (wt *watcher) add(pgid int) error    { return wt.tell(hidden.Add(pgid)) }
func (wt *watcher) remove(pgid int) error { return wt.tell(hidden.Remove(pgid)) }

// upgrading tells the watcher that an exec is under way, and how to drain
// the children should hitless die before an image runs again (running):
// their output pipes (outs), which it holds meanwhile, and the drain
// signal and timeout.
func (wt *watcher) upgrading(outs []outPipe, sig syscall.Signal, timeout time.Duration) error {
	if wt.proto < 2 {
		// An older watcher: it knows U and R at most, and cannot hold
		// the pipes (replaceWatcher failed).
		return wt.tell(hidden.Upgrading(sig, timeout))
	}
	for len(outs) > 0 {
		batch := outs[:min(len(outs), hidden.MaxRights)]
		outs = outs[len(batch):]
		stderr, fds := make([]bool, 0, len(batch)), make([]int, 0, len(batch))
		for _, p := range batch {
			stderr = append(stderr, p.stderr)
			fds = append(fds, rawFD(p.r))
		}
		if err := wt.tell(hidden.Pipes(stderr), fds...); err != nil {
			return err
		}
	}
	return wt.tell(hidden.Upgrading(sig, timeout))
}

func (wt *watcher) running() error { return wt.tell(hidden.Running) }

// stop closes the socket, which ends the watcher, and waits a moment for
// it to exit so that it is reaped.
func (wt *watcher) stop() {
	wt.w.Close()
	select {
	case <-wt.exit:
	case <-time.After(2 * time.Second):
	}
}

// retire ends a watcher that another has replaced: it is told every
// group is gone, so that it kills nothing, and then killed, so that it
// drains nothing either (an older watcher told an exec was under way).
func (wt *watcher) retire(pgids []int) {
	for _, pgid := range pgids {
		wt.remove(pgid)
	}
	unix.Kill(wt.pid, unix.SIGKILL)
	wt.w.Close()
}
