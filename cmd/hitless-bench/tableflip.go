//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// flipServer is the tableflip server (cmd/hitless-bench/tableflipserver)
// as the bench runs it: the process the bench started, then each process
// that an upgrade started in its place, a child of the one before. They
// share the first one's process group. While it runs, the bench is a
// subreaper: each process whose parent has exited becomes the bench's
// child, so that the bench sees it exit (the old process's drain is
// timed that way) and reaps it, instead of leaving it to the machine's
// init.
type flipServer struct {
	addr, pidFile, log string
	pgid               int
	pid                int // the process that serves: the last one the pid file named
}

// startFlip starts bin on addr, with its pid file and log in dir, and
// waits until it serves. The bench is a subreaper until stop.
func startFlip(bin, addr, dir string) (*flipServer, error) {
	f := &flipServer{addr: addr, pidFile: filepath.Join(dir, "tableflip.pid"), log: filepath.Join(dir, "tableflip.log")}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become a subreaper: %w", err)
	}
	pid, err := f.start(bin)
	if err != nil {
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
		return nil, err
	}
	f.pgid = pid
	if err := f.waitServing(0, 10*time.Second); err != nil {
		f.stop()
		return nil, err
	}
	return f, nil
}

// start starts the first process, in a process group of its own, its
// output to the log. Not with os/exec: the bench waits for it, and for
// its successors, by pid.
func (f *flipServer) start(bin string) (int, error) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer null.Close()
	log, err := os.Create(f.log)
	if err != nil {
		return 0, err
	}
	defer log.Close() // the server has its own copy, and so will each successor
	pid, err := syscall.ForkExec(bin, []string{bin, "-listen", f.addr, "-pid-file", f.pidFile}, &syscall.ProcAttr{
		Env:   cleanEnv(),
		Files: []uintptr{null.Fd(), log.Fd(), log.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", bin, err)
	}
	return pid, nil
}

// upgrade does what tableflip's README says to do: SIGHUP to the process
// that serves. It returns when the new process serves (the pid file names
// it and a request on a new connection is answered by it) and when the
// old one has exited, both counted from the SIGHUP.
func (f *flipServer) upgrade(d time.Duration) (serving, exited time.Duration, err error) {
	old := f.pid
	t0 := time.Now()
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		return 0, 0, err
	}
	if err := f.waitServing(old, d); err != nil {
		return 0, 0, err
	}
	serving = time.Since(t0)
	// The old one drains (http.Server.Shutdown), then exits; the example
	// gives it 30 s.
	if err := reap(old, t0.Add(d)); err != nil {
		return 0, 0, err
	}
	return serving, time.Since(t0), nil
}

// waitServing waits until the pid file names a process other than old,
// and a request on a new connection is answered by that process.
func (f *flipServer) waitServing(old int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(f.pidFile)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid != 0 && pid != old && f.answeredBy(pid) {
			f.pid = pid
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("tableflip server: no new process serving within %v (pid file %s, old pid %d); its log ends:\n%s", d, f.pidFile, old, f.logTail())
}

// answeredBy reports whether a request on a new connection is answered by
// pid: until the old process has closed its listener, both take
// connections from the same accept queue.
func (f *flipServer) answeredBy(pid int) bool {
	got, err := answeredPID(f.addr)
	return err == nil && got == pid
}

// reap waits, until deadline, for pid (a child of the bench) to exit,
// and reaps it.
func reap(pid int, deadline time.Time) error {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("wait for pid %d: %w", pid, err)
		case got == pid:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("pid %d still running", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop kills every process of the server's group, reaps them all (a
// successor whose parent died is the bench's child by then), and ends
// the bench's time as a subreaper.
func (f *flipServer) stop() {
	syscall.Kill(-f.pgid, syscall.SIGKILL)
	for {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-f.pgid, &ws, 0, nil); err != nil && !errors.Is(err, syscall.EINTR) {
			break // ECHILD: none left
		}
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
}

// logTail is the end of what the server's processes wrote.
func (f *flipServer) logTail() string { return fileTail(f.log) }
