//go:build linux

package e2e

// hitless under a fake systemd: a notification socket the test owns,
// given to hitless as NOTIFY_SOCKET, that records every datagram with the
// sender's credentials.

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/harness"
	"github.com/hitless/hitless/internal/sdnotify"
)

const markerKey = "X_TEST_MARKER"

// fakeSystemd receives notifications as systemd would (SO_PASSCRED).
type fakeSystemd struct {
	t    *testing.T
	path string
	msgs chan sdnotify.Message

	// Filled by next as it skips WATCHDOG=1 pings and markers.
	pings        int  // every ping so far
	marked       bool // a marker was seen, and the test has not reset this
	pingsWhileMk int  // pings seen while marked
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	f := &fakeSystemd{t: t, path: filepath.Join(harness.ShortDir(t), "notify"), msgs: make(chan sdnotify.Message, 4096)}
	conn, err := sdnotify.Listen(f.path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		defer close(f.msgs)
		for {
			m, err := conn.Read()
			if err != nil {
				var de *sdnotify.DatagramError
				if errors.As(err, &de) {
					t.Errorf("fake systemd: bad datagram: %v", err)
					continue
				}
				return
			}
			f.msgs <- m
		}
	}()
	return f
}

// isPing reports whether m is a lone WATCHDOG=1.
func isPing(m sdnotify.Message) bool {
	return len(m.Fields) == 1 && m.Fields[0] == sdnotify.Field{Key: "WATCHDOG", Value: "1"}
}

// next returns the next notification that is neither a watchdog ping nor
// the test's own marker, and checks that hitless sent it.
func (f *fakeSystemd) next(d time.Duration, pid int) sdnotify.Message {
	f.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-f.msgs:
			if !ok {
				f.t.Fatal("fake systemd: socket closed")
			}
			if _, ok := m.Get(markerKey); ok {
				f.marked = true
				continue
			}
			if int(m.PID) != pid {
				f.t.Errorf("notification %q from pid %d, not hitless (%d)", m.Raw, m.PID, pid)
			}
			if isPing(m) {
				f.pings++
				if f.marked {
					f.pingsWhileMk++
				}
				continue
			}
			return m
		case <-deadline:
			f.t.Fatalf("fake systemd: no notification within %v", d)
		}
	}
}

// mark sends the test's own datagram: whatever hitless sent before it is
// queued before it.
func (f *fakeSystemd) mark() {
	f.t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: f.path, Net: "unixgram"})
	if err != nil {
		f.t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(markerKey + "=1")); err != nil {
		f.t.Fatal(err)
	}
}

// expect checks that m holds exactly the given keys, and returns their values.
func expect(t *testing.T, m sdnotify.Message, keys ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	var names []string
	for _, fl := range m.Fields {
		got[fl.Key] = fl.Value
		names = append(names, fl.Key)
	}
	if strings.Join(names, ",") != strings.Join(keys, ",") {
		t.Errorf("notification %q: keys %v, want exactly %v in that order", m.Raw, names, keys)
	}
	return got
}

func monotonicUsec(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

// checkReloading checks a RELOADING=1 datagram and that its timestamp lies
// between before and the moment it was received.
func checkReloading(t *testing.T, m sdnotify.Message, before uint64) {
	t.Helper()
	after := monotonicUsec(t)
	v := expect(t, m, "RELOADING", "MONOTONIC_USEC")
	if v["RELOADING"] != "1" {
		t.Errorf("RELOADING=%q", v["RELOADING"])
	}
	us, err := strconv.ParseUint(v["MONOTONIC_USEC"], 10, 64)
	if err != nil || us < before || us > after {
		t.Errorf("MONOTONIC_USEC=%q, want a CLOCK_MONOTONIC reading between %d (before the reload was asked for) and %d (received)", v["MONOTONIC_USEC"], before, after)
	}
}

func checkReady(t *testing.T, m sdnotify.Message, status string) {
	t.Helper()
	v := expect(t, m, "READY", "STATUS")
	if v["READY"] != "1" || !strings.Contains(v["STATUS"], status) {
		t.Errorf("notification %q, want READY=1 with a STATUS= containing %q", m.Raw, status)
	}
}

// hitless speaks for the whole service: READY=1 once the first child is
// ready; per reload, by SIGHUP (Type=notify-reload) or by "hitless
// reload" (Type=notify with ExecReload=), RELOADING=1 with MONOTONIC_USEC
// and then READY=1 with a STATUS= that says how it went; STOPPING=1 on
// SIGTERM; WATCHDOG=1 only while a child serves. Children never see the
// socket.
func TestSystemdNotifications(t *testing.T) {
	sd := newFakeSystemd(t)
	sock := ctlSocket(t)
	modeFile := filepath.Join(t.TempDir(), "mode")
	// Each child takes 300ms to start, as a real server would: a ping in
	// that time would be a lie.
	child := []string{"/bin/sh", "-c", `sleep 0.3; exec "$1" -mode-file "$2"`, "sh", bin.server, modeFile}
	p := start(t, harness.Options{
		Env:     []string{"NOTIFY_SOCKET=" + sd.path, "WATCHDOG_USEC=200000"},
		Args:    []string{"--control", sock, "--backoff-min", "1s"},
		Command: child,
	})
	pid := p.PID()

	// Start-up.
	checkReady(t, sd.next(20*time.Second, pid), "serving: generation 1")
	if sd.pings != 0 {
		t.Errorf("%d WATCHDOG=1 before the first child was ready", sd.pings)
	}
	checkChildEnv(t, p.Addr(), sd.path)

	// Type=notify-reload: systemd sends SIGHUP right after READY=1; the
	// handler must already be in place.
	before := monotonicUsec(t)
	p.Signal(syscall.SIGHUP)
	checkReloading(t, sd.next(20*time.Second, pid), before)
	checkReady(t, sd.next(20*time.Second, pid), "reload succeeded: generation 2")

	// Type=notify with ExecReload=hitless reload.
	before = monotonicUsec(t)
	if r := cli(t, 60*time.Second, nil, "reload", "--control", sock, "--timeout", "30s"); r.Code != 0 {
		t.Fatalf("hitless reload: %v", r)
	}
	checkReloading(t, sd.next(20*time.Second, pid), before)
	checkReady(t, sd.next(20*time.Second, pid), "reload succeeded: generation 3")
	checkChildEnv(t, p.Addr(), sd.path)

	// A failed reload ends with READY=1 too, and says so.
	os.WriteFile(modeFile, []byte("exit"), 0o644)
	before = monotonicUsec(t)
	if r := cli(t, 60*time.Second, nil, "reload", "--control", sock, "--timeout", "30s"); r.Code != 1 {
		t.Fatalf("failing reload: want exit 1: %v", r)
	}
	checkReloading(t, sd.next(20*time.Second, pid), before)
	m := sd.next(20*time.Second, pid)
	checkReady(t, m, "reload failed: generation 4")
	checkReady(t, m, "generation 3")
	os.WriteFile(modeFile, []byte("serve"), 0o644)

	// No serving child, no ping: between the crash (as hitless logged it,
	// then the marker) and the restarted child's report.
	pingsServing := sd.pings
	in := getInfo(t, p.Addr())
	mk := p.Mark()
	syscall.Kill(in.PID, syscall.SIGKILL)
	// The log, not the status: the marker must go out within the 1s
	// before the restart, and the record comes as soon as hitless knows.
	p.WaitSince(mk, 20*time.Second, harness.Is("serving child died"))
	sd.mark()
	v := expect(t, sd.next(20*time.Second, pid), "STATUS")
	if !strings.HasPrefix(v["STATUS"], "restarted: generation 5") {
		t.Errorf("after the crash: STATUS=%q, want restarted: generation 5", v["STATUS"])
	}
	if !sd.marked {
		t.Fatal("the marker did not come before the restart's STATUS=")
	}
	if sd.pingsWhileMk != 0 {
		t.Errorf("%d WATCHDOG=1 while no child served", sd.pingsWhileMk)
	}
	sd.marked = false
	if pingsServing == 0 {
		t.Errorf("no WATCHDOG=1 at all while a child served (WATCHDOG_USEC=200000)")
	}

	// Stop.
	p.Signal(syscall.SIGTERM)
	expect(t, sd.next(20*time.Second, pid), "STOPPING")
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Errorf("hitless exited %d", code)
	}
	// Nothing but pings after STOPPING=1: all hitless sent is queued
	// before the marker.
	sd.mark()
	for {
		select {
		case m := <-sd.msgs:
			if _, ok := m.Get(markerKey); ok {
				return
			}
			if !isPing(m) {
				t.Errorf("after STOPPING=1: %q", m.Raw)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the marker never came")
		}
	}
}

// checkChildEnv checks that the serving child got a private notification
// socket and no watchdog settings.
func checkChildEnv(t *testing.T, addr, systemd string) {
	t.Helper()
	in := getInfo(t, addr)
	if ns := in.Env["NOTIFY_SOCKET"]; ns == "" || ns == systemd {
		t.Errorf("generation %s: NOTIFY_SOCKET=%q, want a private socket, never systemd's %q", in.Generation, ns, systemd)
	}
	if w, ok := in.Env["WATCHDOG_USEC"]; ok {
		t.Errorf("generation %s: WATCHDOG_USEC=%q leaked to the child", in.Generation, w)
	}
}
