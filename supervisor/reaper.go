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

func newReaper() *reaper {
	r := &reaper{
		waiters: make(map[int]func(unix.WaitStatus)),
		sigc:    make(chan os.Signal, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	signal.Notify(r.sigc, syscall.SIGCHLD)
	go r.loop()
	return r
}

// start runs spawn with the lock held, so that the pid is registered
// before the loop can reap it, however fast the child exits.
func (r *reaper) start(spawn func() (int, error), exited func(unix.WaitStatus)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := spawn()
	if err != nil {
		return 0, err
	}
	r.waiters[pid] = exited
	return pid, nil
}

func (r *reaper) loop() {
	defer close(r.stopped)
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

func (r *reaper) stop() {
	signal.Stop(r.sigc)
	close(r.done)
	<-r.stopped
	r.reap()
}
