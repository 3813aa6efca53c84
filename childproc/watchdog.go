package childproc

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/hitless/hitless/internal/sdnotify"
)

// Environment variables of the watchdog (systemd's WatchdogSec=; hitless
// sets them too). Lifecycle.Run removes them once read, as Inherit removes
// LISTEN_*, so that a process this one starts does not take the pings on.
const (
	envWatchdogUSec = "WATCHDOG_USEC"
	envWatchdogPID  = "WATCHDOG_PID"
)

// WatchdogInterval reports whether the supervisor expects WATCHDOG=1
// keep-alive pings from this process, and how often to send them: half of
// WATCHDOG_USEC, so that one late ping is not fatal.
//
// As go-systemd's SdWatchdogEnabled, it says no when WATCHDOG_USEC is
// unset, or when WATCHDOG_PID is set and names another process (the one
// the pings are expected from). Unlike it, it returns the interval to ping
// at rather than the timeout, and a malformed value counts as unset
// (Lifecycle.Run logs it).
//
// It only reads the environment. Lifecycle.Run pings by itself (see
// Options.Healthy) and removes the variables; a server without a
// Lifecycle sends WATCHDOG=1 with Notify.
func WatchdogInterval() (time.Duration, bool) {
	timeout, err := sdnotify.ParseWatchdog(os.Getenv(envWatchdogUSec), os.Getenv(envWatchdogPID), os.Getpid())
	if err != nil || timeout <= 0 {
		return 0, false
	}
	return timeout / 2, true
}

// readWatchdog reads the watchdog variables for Run and removes them from
// the environment. It returns the ping interval, or 0 when no pings are
// expected; a malformed value is logged and ignored, never fatal, since a
// server that cannot ping still serves.
func (l *Lifecycle) readWatchdog() time.Duration {
	usec, pid := os.Getenv(envWatchdogUSec), os.Getenv(envWatchdogPID)
	os.Unsetenv(envWatchdogUSec)
	os.Unsetenv(envWatchdogPID)
	timeout, err := sdnotify.ParseWatchdog(usec, pid, os.Getpid())
	switch {
	case errors.Is(err, sdnotify.ErrWatchdogOtherPID):
		// A supervisor expects pings from another process: typically a
		// wrapper that did not exec this one. Pinging for it would keep a
		// dead service alive, and not pinging will get it killed: worth
		// saying.
		l.log.Warn("childproc: the watchdog is not for this process; not pinging it", "err", err)
		return 0
	case err != nil:
		l.log.Error("childproc: ignoring the watchdog", "err", err)
		return 0
	}
	return timeout / 2
}

// watchdog pings the supervisor's watchdog while the server is healthy.
type watchdog struct {
	l        *Lifecycle
	interval time.Duration
	ctx      context.Context // done when stop is called
	cancel   context.CancelFunc

	mu        sync.Mutex
	stopped   bool  // nothing is pinged or logged once set
	healthErr error // Healthy's last answer, as logged
	sendErr   error // the last ping's error, as logged
}

// startWatchdog starts pinging every interval, the first ping at once
// (Run calls it right after READY=1). It returns nil when there is nothing
// to ping.
func (l *Lifecycle) startWatchdog(interval time.Duration) *watchdog {
	if interval <= 0 {
		return nil
	}
	if os.Getenv(envNotifySocket) == "" {
		l.log.Warn("childproc: WATCHDOG_USEC is set but NOTIFY_SOCKET is not; no watchdog pings")
		return nil
	}
	w := &watchdog{l: l, interval: interval}
	w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(l.opts.Context))
	l.log.Info("childproc: pinging the watchdog", "every", interval)
	go w.run()
	return w
}

// stop ends the pings: once it returned, nothing is pinged or logged. It
// does not wait for a Healthy call in progress (its context is cancelled,
// and the goroutine ends when it returns), only for a ping in flight.
func (w *watchdog) stop() {
	if w == nil {
		return
	}
	w.cancel()
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

func (w *watchdog) run() {
	ticker := time.NewTicker(w.interval)
	defer ticker.Stop()
	for {
		if !w.tick(w.check()) {
			return
		}
		select {
		case <-ticker.C:
		case <-w.ctx.Done():
			return
		}
	}
}

// check asks Options.Healthy, with a context that ends at the next ping
// or at the drain, whichever comes first.
func (w *watchdog) check() error {
	healthy := w.l.opts.Healthy
	if healthy == nil {
		return nil
	}
	if err := w.ctx.Err(); err != nil {
		return err // stopped while the tick was due: no call, no ping
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.interval)
	defer cancel()
	return healthy(ctx)
}

// tick pings if healthy, and logs each change of state once rather than
// at every tick. It reports false once stopped; holding the lock while it
// sends is what lets stop promise that no ping follows it.
func (w *watchdog) tick(healthErr error) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false
	}
	if (healthErr == nil) != (w.healthErr == nil) {
		if healthErr != nil {
			w.l.log.Error("childproc: unhealthy; withholding watchdog pings", "err", healthErr)
		} else {
			w.l.log.Info("childproc: healthy again; watchdog pings resumed")
		}
	}
	w.healthErr = healthErr
	if healthErr != nil {
		return true
	}
	err := Notify("WATCHDOG=1")
	if (err == nil) != (w.sendErr == nil) {
		if err != nil {
			w.l.log.Error("childproc: could not ping the watchdog", "err", err)
		} else {
			w.l.log.Info("childproc: watchdog pings go through again")
		}
	}
	w.sendErr = err
	return true
}
