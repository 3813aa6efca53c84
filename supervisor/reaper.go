//go:build linux

package supervisor

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reaper owns every wait(2) in the process. hitless is a subreaper, so
// orphans of its children are re-parented to it; a single loop reaps
// everything and hands each status to whoever started that pid. Nothing
// else in hitless may wait for a child, os/exec included.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]func(unix.WaitStatus)
	sigc    chan os.Signal
	done    chan struct{}
	stopped chan struct{}
}

// newReaper starts reaping. adopt names children started before it (by
// an earlier image of hitless), with what to call when each exits: they
// are registered before anything is reaped.
func newReaper(adopt map[int]func(unix.WaitStatus)) *reaper {
	r := &reaper{waiters: make(map[int]func(unix.WaitStatus))}
	for pid, fn := range adopt {
		r.waiters[pid] = fn
	}
	r.resume()
	return r
}

// start starts the program at path with the lock held, so that the pid
// is registered before the loop can reap it, however fast the child
// exits; exited is called with its wait status.
func (r *reaper) start(path string, argv []string, attr *syscall.ProcAttr, exited func(unix.WaitStatus)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, _, err := syscall.StartProcess(path, argv, attr)
	if err != nil {
		return 0, err
	}
	r.waiters[pid] = exited
	return pid, nil
}

// signal sends sig to pid unless it has been reaped: with the lock held,
// a pid not reaped yet cannot name another process.
func (r *reaper) signal(pid int, sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiters[pid]; !ok {
		return nil
	}
	return syscall.Kill(pid, sig)
}

func (r *reaper) loop() {
	defer close(r.stopped)
	// A child may have exited before SIGCHLD was caught (or while hitless
	// was being replaced by its next image): look once at the start.
	r.reap()
	for {
		select {
		case <-r.sigc:
			r.reap()
		case <-r.done:
			return
		}
	}
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if fn, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			fn(ws)
		}
	}
}

// pause stops reaping: a child that exits from now on stays a zombie, its
// status kept by the kernel for whoever reaps next (this image after
// resume, or the next one).
func (r *reaper) pause() {
	signal.Stop(r.sigc)
	close(r.done)
	<-r.stopped
}

// resume starts reaping again after pause.
func (r *reaper) resume() {
	r.sigc = make(chan os.Signal, 1)
	r.done = make(chan struct{})
	r.stopped = make(chan struct{})
	signal.Notify(r.sigc, syscall.SIGCHLD)
	go r.loop()
}

// stop stops reaping and reaps what has exited by now.
func (r *reaper) stop() {
	r.pause()
	r.reap()
}
