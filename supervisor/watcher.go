//go:build linux

package supervisor

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The watcher makes sure nothing of a generation outlives hitless, however
// hitless dies: SIGKILL, the OOM killer, a panic, when it can run no code
// of its own. It is the one mechanism: children get no parent-death
// signal, which would reach only the direct child, never what it started
// (a wrapper script's server, a pre-fork master's workers), and would
// kill at once where a drain is due (below).
//
// The watcher is hitless's own binary in a hidden mode (WatchArg), in a
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
		Env:   runtimeEnv(),
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

// tell sends one line to the watcher, with files attached if any. A
// watcher that does not read within a second is reported, not waited for.
func (wt *watcher) tell(line string, files ...int) error {
	wt.w.SetWriteDeadline(time.Now().Add(time.Second))
	if len(files) == 0 {
		_, err := wt.w.WriteString(line + "\n")
		return err
	}
	rc, err := wt.w.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgN(int(fd), []byte(line+"\n"), unix.UnixRights(files...), nil, 0)
		return serr != unix.EAGAIN
	})
	return cmp.Or(err, serr)
}

func (wt *watcher) add(pgid int) error    { return wt.tell("+" + strconv.Itoa(pgid)) }
func (wt *watcher) remove(pgid int) error { return wt.tell("-" + strconv.Itoa(pgid)) }

// maxRights is how many descriptors one message carries (the kernel
// takes at most 253).
const maxRights = 200

// upgrading tells the watcher that an exec is under way, and how to drain
// the children should hitless die before an image runs again (running):
// their output pipes (outs), which it holds meanwhile, and the drain
// signal and timeout.
func (wt *watcher) upgrading(outs []outPipe, sig syscall.Signal, timeout time.Duration) error {
	if wt.proto < 2 {
		// An older watcher: it knows U and R at most, and cannot hold
		// the pipes (replaceWatcher failed).
		return wt.tell(fmt.Sprintf("U %d %d", int(sig), timeout.Milliseconds()))
	}
	for len(outs) > 0 {
		batch := outs[:min(len(outs), maxRights)]
		outs = outs[len(batch):]
		line, fds := "P", make([]int, 0, len(batch))
		for _, p := range batch {
			line += map[bool]string{false: " 1", true: " 2"}[p.stderr]
			fds = append(fds, rawFD(p.r))
		}
		if err := wt.tell(line, fds...); err != nil {
			return err
		}
	}
	return wt.tell(fmt.Sprintf("U %d %d", int(sig), timeout.Milliseconds()))
}

func (wt *watcher) running() error { return wt.tell("R") }

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

// runWatcher is the watcher's main: it reads process groups from conn
// (a unix stream socket; a pipe, from a test, carries no files) until EOF,
// then kills the ones it was not told are gone, or drains them if hitless
// died during the exec of an upgrade.
func runWatcher(conn *os.File) int {
	// Signals meant for hitless's terminal or group are not for it: it
	// ends when hitless does, and only then. Its stdout and stderr are
	// hitless's, whose reader may be gone.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	groups := make(map[int]bool)
	var drain struct {
		on      bool
		sig     unix.Signal
		timeout time.Duration
	}
	var held []heldPipe // the output pipes, during an upgrade's exec
	var files []int     // received, not yet named by a P line
	release := func() {
		for _, p := range held {
			p.f.Close()
		}
		held = nil
	}
	// conn is closed here, by its owner, and only here: unreferenced
	// once its number is taken, its finalizer would close it at some
	// garbage collection, and the watcher, reading EOF, would kill every
	// generation while hitless runs.
	defer conn.Close()
	lines := &lineReader{f: conn, fd: int(conn.Fd())}
	for {
		line, fds, err := lines.next()
		files = append(files, fds...)
		if err != nil {
			break
		}
		f := strings.Fields(line)
		switch {
		case line == "R":
			drain.on = false
			release()
			continue
		case len(f) == 3 && f[0] == "U":
			sig, err1 := strconv.Atoi(f[1])
			ms, err2 := strconv.Atoi(f[2])
			if err1 == nil && err2 == nil && sig > 0 && sig < 65 && ms >= 0 {
				drain.on, drain.sig, drain.timeout = true, unix.Signal(sig), time.Duration(ms)*time.Millisecond
				continue
			}
		case len(f) > 1 && f[0] == "P" && len(f)-1 <= len(files):
			for i, stream := range f[1:] {
				held = append(held, heldPipe{f: os.NewFile(uintptr(files[i]), "output"), stderr: stream == "2"})
			}
			files = files[len(f)-1:]
			continue
		}
		pgid, err := strconv.Atoi(strings.TrimLeft(line, "+-"))
		if err != nil || pgid <= 1 || len(line) < 2 || line[0] != '+' && line[0] != '-' {
			fmt.Fprintf(os.Stderr, "hitless watcher: ignoring %q\n", line)
			continue
		}
		groups[pgid] = line[0] == '+'
	}
	for _, fd := range files {
		unix.Close(fd) // named by no P line
	}
	var live []int
	for pgid, on := range groups {
		if on {
			live = append(live, pgid)
		}
	}
	var copied sync.WaitGroup
	if drain.on {
		fmt.Fprintf(os.Stderr, "hitless watcher: hitless died during an upgrade; draining %d process group(s) with %v, for at most %v\n",
			len(live), unix.SignalName(drain.sig), drain.timeout)
		for _, p := range held {
			copied.Add(1)
			go func() {
				defer copied.Done()
				io.Copy(map[bool]*os.File{false: os.Stdout, true: os.Stderr}[p.stderr], p.f)
			}()
		}
		live = drainGroups(live, drain.sig, drain.timeout)
	}
	for _, pgid := range live {
		if err := unix.Kill(-pgid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			fmt.Fprintf(os.Stderr, "hitless watcher: kill process group %d: %v\n", pgid, err)
		}
	}
	if len(held) > 0 {
		// The children's last words, within a bound: a process that left
		// its group may hold a pipe open.
		done := make(chan struct{})
		go func() { copied.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
	return 0
}

// heldPipe is the read end of a child's output pipe, held by the watcher
// during an upgrade's exec.
type heldPipe struct {
	f      *os.File
	stderr bool
}

// lineReader reads lines, and the descriptors attached to them, from a
// unix socket (or, without descriptors, a pipe).
type lineReader struct {
	f      *os.File // held, so that fd stays open
	fd     int
	buf    []byte
	noSock bool
}

// next returns the next line, without its newline, and the descriptors
// received with it; io.EOF at the end.
func (lr *lineReader) next() (string, []int, error) {
	var fds []int
	for {
		if i := bytes.IndexByte(lr.buf, '\n'); i >= 0 {
			line := string(lr.buf[:i])
			lr.buf = lr.buf[i+1:]
			return line, fds, nil
		}
		chunk := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(4*maxRights))
		var n, oobn int
		var err error
		if !lr.noSock {
			n, oobn, _, _, err = unix.Recvmsg(lr.fd, chunk, oob, unix.MSG_CMSG_CLOEXEC)
			if err == unix.ENOTSOCK {
				lr.noSock = true
			}
		}
		if lr.noSock {
			n, err = unix.Read(lr.fd, chunk)
		}
		if err == unix.EINTR {
			continue
		}
		if oobn > 0 {
			if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, m := range msgs {
					if got, perr := unix.ParseUnixRights(&m); perr == nil {
						fds = append(fds, got...)
					}
				}
			}
		}
		if err != nil || n <= 0 {
			return "", fds, io.EOF
		}
		lr.buf = append(lr.buf, chunk[:n]...)
	}
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
