package childproc

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// setWatchdog sets the watchdog variables for one test; t.Setenv puts
// back what was there (nothing) when the test ends.
func setWatchdog(t *testing.T, usec, pid string) {
	t.Setenv("WATCHDOG_USEC", usec)
	t.Setenv("WATCHDOG_PID", pid)
	if pid == "-" {
		os.Unsetenv("WATCHDOG_PID")
	}
}

// mark sends a datagram of the test's own to the notify socket. Datagrams
// queue in order, so reading up to it tells what was sent before.
func (n *notifyListener) mark(t *testing.T, m string) {
	t.Helper()
	c, err := net.Dial("unixgram", n.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(m)); err != nil {
		t.Fatal(err)
	}
}

// pingsBefore reads up to the datagram m and counts the pings before it.
func (n *notifyListener) pingsBefore(t *testing.T, m string) int {
	t.Helper()
	timer := time.NewTimer(testWait)
	defer timer.Stop()
	pings := 0
	for {
		select {
		case got, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %q", m)
			}
			switch got {
			case m:
				return pings
			case "WATCHDOG=1":
				pings++
			}
		case <-timer.C:
			t.Fatalf("no %q on NOTIFY_SOCKET within %s", m, testWait)
		}
	}
}

func (r *logRecorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if strings.Contains(rec, substr) {
			n++
		}
	}
	return n
}

// TestWatchdog follows the pings through a server's life: at half the
// interval from READY=1, none while Healthy fails (logged once), again
// once it passes (logged once), none after the drain starts.
func TestWatchdog(t *testing.T) {
	notify := newNotifyListener(t)
	t.Setenv("NOTIFY_SOCKET", notify.path)
	const interval = 100 * time.Millisecond // pings; the timeout is twice that
	setWatchdog(t, strconv.Itoa(int(2*interval/time.Microsecond)), strconv.Itoa(os.Getpid()))
	logger, rec := newLogger(t)
	var failing atomic.Bool
	checks := make(chan bool, 1000) // one per Healthy call: whether it failed
	lc := New(Options{Logger: logger, Healthy: func(ctx context.Context) error {
		f := failing.Load()
		select {
		case checks <- f:
		default:
		}
		if f {
			return errors.New("database unreachable")
		}
		return nil
	}})
	waitCheck := func(failed bool) {
		t.Helper()
		timer := time.NewTimer(testWait)
		defer timer.Stop()
		for {
			select {
			case f := <-checks:
				if f == failed {
					return
				}
			case <-timer.C:
				t.Fatalf("no Healthy call with failing=%v within %s", failed, testWait)
			}
		}
	}

	start := time.Now()
	errc := runAsync(lc)
	notify.expect(t, "READY=1", testWait)
	for _, k := range []string{"WATCHDOG_USEC", "WATCHDOG_PID"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%s still in the environment; a process this one starts would take it on", k, v)
		}
	}

	// Healthy: pings, at most one per interval from READY=1 on, since a
	// ticker never runs early; and not so few that a busy machine would
	// explain it (ten take 0.9s at the right pace).
	const n = 10
	for range n {
		notify.expect(t, "WATCHDOG=1", testWait)
	}
	if took := time.Since(start); took < (n-1)*interval || took > 10*n*interval {
		t.Errorf("%d pings took %s; want about %s, one per %s", n, took, (n-1)*interval, interval)
	}

	// Failing: once Healthy has failed, no ping, however many ticks pass.
	failing.Store(true)
	waitCheck(true)
	notify.mark(t, "TEST=failing")
	notify.pingsBefore(t, "TEST=failing") // sent while healthy
	for range 3 {
		waitCheck(true)
	}
	notify.mark(t, "TEST=still-failing")
	if pings := notify.pingsBefore(t, "TEST=still-failing"); pings != 0 {
		t.Errorf("%d pings while Healthy failed", pings)
	}
	if c := rec.count("unhealthy; withholding watchdog pings"); c != 1 {
		t.Errorf("unhealthy logged %d times over 4 failed checks; want once", c)
	}

	// Healthy again: pings resume.
	failing.Store(false)
	notify.expect(t, "WATCHDOG=1", testWait)
	notify.expect(t, "WATCHDOG=1", testWait)
	if c := rec.count("healthy again; watchdog pings resumed"); c != 1 {
		t.Errorf("recovery logged %d times; want once", c)
	}

	// The drain: no ping after STOPPING=1. Absence takes time to show:
	// watch for three intervals in which pings would have come.
	lc.Stop()
	notify.expect(t, "STOPPING=1", testWait)
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
	<-time.After(3 * interval)
	notify.mark(t, "TEST=after-drain")
	if pings := notify.pingsBefore(t, "TEST=after-drain"); pings != 0 {
		t.Errorf("%d pings after the drain started", pings)
	}
}

// TestWatchdogNilHealthy: without Healthy, and without WATCHDOG_PID, the
// process is always healthy and the watchdog is its own.
func TestWatchdogNilHealthy(t *testing.T) {
	notify := newNotifyListener(t)
	t.Setenv("NOTIFY_SOCKET", notify.path)
	setWatchdog(t, "200000", "-")
	logger, _ := newLogger(t)
	lc := New(Options{Logger: logger})
	errc := runAsync(lc)
	notify.expect(t, "READY=1", testWait)
	notify.expect(t, "WATCHDOG=1", testWait)
	notify.expect(t, "WATCHDOG=1", testWait)
	lc.Stop()
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
}

// TestWatchdogOtherPID: a watchdog meant for another process (a wrapper
// that did not exec this one) is not pinged, and the log says why.
func TestWatchdogOtherPID(t *testing.T) {
	notify := newNotifyListener(t)
	t.Setenv("NOTIFY_SOCKET", notify.path)
	const interval = 50 * time.Millisecond
	setWatchdog(t, strconv.Itoa(int(2*interval/time.Microsecond)), strconv.Itoa(os.Getpid()+1))
	logger, rec := newLogger(t)
	var checks atomic.Int64
	lc := New(Options{Logger: logger, Healthy: func(context.Context) error { checks.Add(1); return nil }})
	errc := runAsync(lc)
	notify.expect(t, "READY=1", testWait)
	rec.waitFor(t, "the watchdog is not for this process", testWait)
	if _, ok := os.LookupEnv("WATCHDOG_USEC"); ok {
		t.Error("WATCHDOG_USEC left in the environment")
	}
	// Absence takes time to show: five intervals in which pings would
	// have come.
	<-time.After(5 * interval)
	notify.mark(t, "TEST=end")
	if pings := notify.pingsBefore(t, "TEST=end"); pings != 0 || checks.Load() != 0 {
		t.Errorf("%d pings and %d Healthy calls for another process's watchdog", pings, checks.Load())
	}
	lc.Stop()
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
}

// TestReadWatchdog: Run's reading of the variables, including the values
// it ignores (logged, never fatal), and that it removes them.
func TestReadWatchdog(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string // pid "-": unset
		want      time.Duration
		log       string
	}{
		{"", "-", 0, ""},
		{"2000000", self, time.Second, ""},
		{"2000000", "-", time.Second, ""},
		{"3", self, 1500 * time.Nanosecond, ""},
		{"2000000", "1", 0, "not for this process"},
		{"0", self, 0, "ignoring the watchdog"},
		{"-5", self, 0, "ignoring the watchdog"},
		{"1s", self, 0, "ignoring the watchdog"},
		{"+5", self, 0, "ignoring the watchdog"},
		{"2000000", "x", 0, "ignoring the watchdog"},
		{"2000000", "0", 0, "ignoring the watchdog"},
	} {
		setWatchdog(t, tc.usec, tc.pid)
		logger, rec := newLogger(t)
		lc := New(Options{Logger: logger})
		if got := lc.readWatchdog(); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: interval %s, want %s", tc.usec, tc.pid, got, tc.want)
		}
		if tc.log != "" && rec.count(tc.log) != 1 {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: no log record saying %q", tc.usec, tc.pid, tc.log)
		}
		if tc.log == "" && rec.count("") != 0 {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: logged %q", tc.usec, tc.pid, rec.records)
		}
		for _, k := range []string{"WATCHDOG_USEC", "WATCHDOG_PID"} {
			if _, ok := os.LookupEnv(k); ok {
				t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %s not removed", tc.usec, tc.pid, k)
			}
		}
	}
}

// TestWatchdogInterval: the function for servers that ping by themselves
// says what Run would do, and leaves the environment alone.
func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"", "-", 0, false},
		{"3000000", self, 1500 * time.Millisecond, true},
		{"3000000", "-", 1500 * time.Millisecond, true},
		{"3000000", "1", 0, false},
		{"0", self, 0, false},
		{"x", "-", 0, false},
		{"3000000", "x", 0, false},
	} {
		setWatchdog(t, tc.usec, tc.pid)
		got, ok := WatchdogInterval()
		if got != tc.want || ok != tc.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: WatchdogInterval() = %s, %v; want %s, %v", tc.usec, tc.pid, got, ok, tc.want, tc.ok)
		}
		if v, _ := os.LookupEnv("WATCHDOG_USEC"); v != tc.usec {
			t.Errorf("WatchdogInterval changed WATCHDOG_USEC to %q", v)
		}
	}
}
