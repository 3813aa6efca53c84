//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/supervisor/internal/hidden"
)

// A shimProc is a process started as the shim (hidden.ShimArg) that may
// not have been told its program yet. Every generation starts as one: a
// generation's process is forked and given its program at once, or it
// was forked ahead of time, as the standby, and waited there until a
// reload or a restart took it. Its descriptors are the child's: stdio,
// the sockets, then its report pipe and its start pipe, which close at
// the program's execve.
//
// Everything a start decides (the program, its arguments and working
// directory, the environment with the generation's number and notify
// socket) goes in the StartMessage, written when the generation starts;
// what is fixed at the fork (the user and groups, the sockets, where the
// output goes, the process group) cannot change while hitless runs.
type shimProc struct {
	pid    int
	start  *os.File  // the write end of its start pipe
	report *os.File  // the read end of its report pipe
	outs   []outPipe // the read ends of its output pipes
	// fork and forked are when StartProcess was called and returned (the
	// shim's execve done, CLONE_VFORK), on the clock of the reload steps.
	fork, forked int64

	mu    sync.Mutex
	taken bool // a generation's: its exit goes to exitc, counted
	let   bool // let go of: its exit is expected
	dead  bool // reaped
	exitc chan unix.WaitStatus
	gone  chan struct{} // closed when reaped
}

// startShim forks a shim, taken at once (a generation's) or not (the
// standby).
func (s *Supervisor) startShim(taken bool) (*shimProc, error) {
	files, pipes, writeEnds, err := s.stdio()
	if err != nil {
		return nil, err
	}
	// The shim's ends (writeEnds) are closed once it has them; hitless's
	// (kept) only if it does not start.
	var kept []*os.File
	for _, p := range pipes {
		kept = append(kept, p.r)
	}
	failed := func(err error) (*shimProc, error) {
		closeFiles(writeEnds)
		closeFiles(kept)
		return nil, err
	}
	for _, sock := range s.sockets {
		files = append(files, uintptr(sock.FD))
	}
	report, reportW, err := os.Pipe()
	if err != nil {
		return failed(fmt.Errorf("report pipe: %w", err))
	}
	writeEnds, kept = append(writeEnds, reportW), append(kept, report)
	startR, startW, err := os.Pipe()
	if err != nil {
		return failed(fmt.Errorf("start pipe: %w", err))
	}
	writeEnds, kept = append(writeEnds, startR), append(kept, startW)
	files = append(files, reportW.Fd(), startR.Fd())
	attr := &syscall.ProcAttr{
		// The StartMessage brings the program's working directory and
		// environment.
		Dir:   "/",
		Env:   runtimeEnv(),
		Files: files,
		// A shim not given its program yet dies with hitless, at once:
		// it holds the sockets, which must refuse connections when
		// hitless is gone. Once given its program it clears the
		// parent-death signal before the execve: the watcher alone
		// ends the children when hitless dies (see watcher.go), so that
		// it can drain them when hitless died inside an upgrade's exec.
		// The loop forks on one thread, which lives as long as hitless
		// (see Config.Self).
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	if u := s.cfg.User; u != nil {
		attr.Sys.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
	}
	sh := &shimProc{start: startW, report: report, outs: pipes, taken: taken, exitc: make(chan unix.WaitStatus, 1), gone: make(chan struct{})}
	n := len(files)
	argv := []string{"hitless", ShimArg, strconv.Itoa(n - 2), strconv.Itoa(n - 1)}
	sh.fork = hidden.Monotonic()
	sh.pid, err = s.reaper.start(s.cfg.ShimPath, argv, attr, s.shimExited(sh))
	sh.forked = hidden.Monotonic()
	if err != nil {
		return failed(err)
	}
	closeFiles(writeEnds)
	return sh, nil
}

// shimExited is what the reaper calls when sh exits. The exit of a
// generation's process is counted in flight until the loop has it (see
// quiesce); the exit of a standby is nobody's, and only logged if it was
// not let go of.
func (s *Supervisor) shimExited(sh *shimProc) func(unix.WaitStatus) {
	return func(ws unix.WaitStatus) {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		sh.dead = true
		close(sh.gone)
		switch {
		case sh.taken:
			s.exiting.Add(1)
			sh.exitc <- ws
		case !sh.let:
			s.log.Warn("standby exited; the next start forks its own process", "pid", sh.pid, "status", exitOf(ws).Reason)
		}
	}
}

// take makes the standby sh a generation's, unless it is dead.
func (sh *shimProc) take() bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.dead {
		return false
	}
	sh.taken = true
	return true
}

// alive reports whether sh has not been reaped.
func (sh *shimProc) alive() bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return !sh.dead
}

// begin writes msg on sh's start pipe and closes it: the shim runs the
// program. It never waits for the shim, whatever state it is in (a
// standby may have been stopped): what the pipe holds is written at once,
// and the rest, if any, by a goroutine (counted in bg) as the shim reads
// it, which ends once the shim has read it all or has exited. A new pipe
// holds 64 KiB, but only 2 pages (4 KiB on kernels before 5.14) for a
// user past its pipe budget (pipe-user-pages-soft, see pipe(7)), which
// a host with many pipes of the same user reaches; an environment can be
// larger than either.
func (sh *shimProc) begin(msg []byte, bg *sync.WaitGroup) error {
	rc, err := sh.start.SyscallConn()
	if err != nil {
		sh.start.Close()
		return fmt.Errorf("start message: %w", err)
	}
	var n int
	var werr error
	err = rc.Control(func(fd uintptr) {
		if werr = unix.SetNonblock(int(fd), true); werr != nil {
			return
		}
		n, werr = unix.Write(int(fd), msg)
		if werr == unix.EAGAIN {
			n, werr = 0, nil
		}
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		sh.start.Close()
		return fmt.Errorf("start message: %w", err)
	}
	if n == len(msg) {
		sh.start.Close()
		return nil
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		// The pipe is the runtime's poller's: the write parks, it holds
		// no thread. An error is the shim's exit (EPIPE), which its
		// exit status tells.
		sh.start.Write(msg[n:])
		sh.start.Close()
	}()
	return nil
}

// abandon lets go of sh, a generation's process that could not begin:
// it exits having run nothing, and its exit, reaped already or not, is
// nobody's.
func (s *Supervisor) abandon(sh *shimProc) {
	sh.mu.Lock()
	if sh.dead {
		<-sh.exitc
		s.exiting.Done()
	}
	// Let go of in the same breath: an exit reaped from now on is
	// expected, not a standby's death to report.
	sh.taken, sh.let = false, true
	sh.mu.Unlock()
	s.letGo(sh)
	if err := s.watcher.remove(sh.pid); err != nil {
		s.log.Warn("watcher", "err", err)
	}
}

// letGo lets go of sh, a standby or a process that could not begin: it
// gets SIGKILL, for it holds the sockets, which a stop must close. (Were
// it to miss it, it would read EOF on its start pipe and exit having run
// nothing.)
func (s *Supervisor) letGo(sh *shimProc) {
	sh.mu.Lock()
	sh.let = true
	sh.mu.Unlock()
	if err := s.reaper.signal(sh.pid, syscall.SIGKILL); err != nil {
		s.log.Warn("standby", "pid", sh.pid, "err", err)
	}
	sh.start.Close()
	sh.report.Close()
	for _, p := range sh.outs {
		p.r.Close()
	}
}

// keepStandby forks the standby once things are settled (a generation
// serves, nothing starts, no stop or upgrade is under way), so that it is
// ready when the next start comes, and lets go of it when hitless stops.
// It runs after each step of the machine. A standby forked during a
// reload would take CPU from the child starting; one that cannot be
// forked is no failure: the next start forks its own process, as it
// would without a standby.
func (s *Supervisor) keepStandby() {
	if s.cfg.NoStandby || s.reaper == nil {
		return
	}
	if s.standby != nil && s.m.Stopping() {
		// The stop closes the sockets once the children are gone: the
		// standby is gone first.
		sh := s.standby
		s.letGoStandby()
		select {
		case <-sh.gone:
		case <-time.After(time.Second):
			s.log.Warn("standby not reaped a second after SIGKILL", "pid", sh.pid)
		}
	}
	if s.standby != nil && !s.standby.alive() {
		s.letGoStandby()
	}
	if s.standby != nil || s.standbyFailed || !s.m.Settled() || s.exit != nil {
		return
	}
	sh, err := s.startShim(false)
	if err != nil {
		// Not again at every step (a status request, a scrape, a
		// watchdog tick), each with its warning: what failed the fork
		// (a limit on processes, a missing binary) lasts, and the next
		// start tells whether it still does.
		s.standbyFailed = true
		s.log.Warn("standby not forked; the next start forks its own process", "err", err)
		return
	}
	s.standby = sh
	s.log.Debug("standby forked", "pid", sh.pid)
}

// letGoStandby lets go of the standby, if any: at a stop, and before an
// upgrade's exec, whose next image would not know it.
func (s *Supervisor) letGoStandby() {
	if s.standby != nil {
		s.letGo(s.standby)
		s.standby = nil
	}
}

// takeShim returns the process generation c starts in: the standby, if a
// live one waits, or a new one.
func (s *Supervisor) takeShim() (sh *shimProc, standby bool, err error) {
	s.standbyFailed = false
	if sb := s.standby; sb != nil {
		s.standby = nil
		if sb.take() {
			return sb, true, nil
		}
		s.letGo(sb)
	}
	sh, err = s.startShim(true)
	return sh, false, err
}
