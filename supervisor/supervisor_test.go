//go:build linux

package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/harness"
	"github.com/hitless/hitless/supervisor/internal/hidden"
	"github.com/hitless/hitless/supervisor/internal/machine"
	"github.com/hitless/hitless/supervisor/sockets"
)

// The tests in this file run real children: the test binary itself, which
// package hidden's init turns into the shim and the watcher, and TestMain
// into a small server (TEST_CHILD=mode). They run one at a time, since a supervisor reaps every
// child of the process.

func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv("TEST_CHILD"); ok {
		os.Exit(testChild(mode))
	}
	// Under -race every child here is a race-enabled binary, which sleeps
	// a second as it exits (GORACE's atexit_sleep_ms) and so holds every
	// drain and every stop that long.
	os.Setenv("GORACE", harness.NoRaceExitSleep())
	os.Exit(m.Run())
}

// testChild is the child server. Its mode is a comma-separated list:
//
//	exit:N        write to stderr and exit N before ready
//	noready       never send READY=1
//	ignoreterm    ignore SIGTERM
//	noterm        no handler for SIGTERM: it kills the process
//	readyafter:D  send STATUS=booting, and READY=1 only after D
//	status:TEXT   send STATUS=TEXT with READY=1
//	hello         write "hello" to stdout
//	termexit:N    exit N on SIGTERM
//	crashafter:D  exit 4 D after READY=1
//	nowatchdog    never send WATCHDOG=1 (it does every half interval
//	              when WATCHDOG_USEC is set and WATCHDOG_PID is its pid)
//
// Otherwise it sends READY=1 and answers each connection on fd 3 with
// "gen N pid P\n", until SIGTERM.
func testChild(mode string) int {
	opts := map[string]string{}
	for _, kv := range strings.Split(mode, ",") {
		k, v, _ := strings.Cut(kv, ":")
		opts[k] = v
	}
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") == "" {
		fmt.Fprintln(os.Stderr, "bad LISTEN_PID/LISTEN_FDS:", os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"))
		return 90
	}
	if v, ok := opts["exit"]; ok {
		fmt.Fprintln(os.Stderr, "starting up")
		fmt.Fprintln(os.Stderr, "fatal: config missing")
		n, _ := strconv.Atoi(v)
		return n
	}
	if _, ok := opts["hello"]; ok {
		fmt.Println("hello")
	}
	sigs := make(chan os.Signal, 1)
	switch {
	case hasKey(opts, "ignoreterm"):
		signal.Ignore(syscall.SIGTERM)
	case hasKey(opts, "noterm"):
	default:
		signal.Notify(sigs, syscall.SIGTERM)
	}
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 91
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "gen %s pid %d\n", os.Getenv("HITLESS_GENERATION"), os.Getpid())
			c.Close()
		}
	}()
	if d, ok := opts["readyafter"]; ok {
		if err := sendNotify("STATUS=booting"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 92
		}
		dur, _ := time.ParseDuration(d)
		time.Sleep(dur) // the child's own behaviour under test: a slow start
	}
	if !hasKey(opts, "noready") {
		msg := "READY=1"
		if s, ok := opts["status"]; ok {
			msg += "\nSTATUS=" + s
		}
		if err := sendNotify(msg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 92
		}
	}
	if us := os.Getenv("WATCHDOG_USEC"); us != "" && !hasKey(opts, "nowatchdog") {
		if os.Getenv("WATCHDOG_PID") != strconv.Itoa(os.Getpid()) {
			fmt.Fprintln(os.Stderr, "bad WATCHDOG_PID:", os.Getenv("WATCHDOG_PID"))
			return 93
		}
		n, _ := strconv.Atoi(us)
		go func() {
			for range time.Tick(time.Duration(n) * time.Microsecond / 2) {
				sendNotify("WATCHDOG=1")
			}
		}()
	}
	if d, ok := opts["crashafter"]; ok {
		dur, _ := time.ParseDuration(d)
		time.Sleep(dur) // the child's own behaviour under test
		fmt.Fprintln(os.Stderr, "panic: crashed after ready")
		return 4
	}
	<-sigs // blocks forever when SIGTERM is ignored or not handled
	ln.Close()
	n, _ := strconv.Atoi(opts["termexit"])
	return n
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

func sendNotify(msg string) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: os.Getenv("NOTIFY_SOCKET"), Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}

// logBuffer collects hitless's log records, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type running struct {
	t      *testing.T
	s      *Supervisor
	addr   string
	logs   *logBuffer
	err    error         // what Run returned
	exited chan struct{} // closed once Run has returned
	// replaced is set once this supervisor handed over to another
	// (an upgrade within the process): like an image after execve, it
	// is gone, and the cleanup leaves it alone.
	replaced atomic.Bool
}

// start runs a supervisor around the test binary in the given child mode
// (the mode of each start is read from modes in turn; the last one
// repeats).
func start(t *testing.T, cfg Config, modes ...string) *running {
	t.Helper()
	return startWith(t, cfg, nil, modes...)
}

// startWith is start with setup applied to the supervisor before Run:
// a test's replacement of its OS seam.
func startWith(t *testing.T, cfg Config, setup func(*Supervisor), modes ...string) *running {
	t.Helper()
	modeFile := t.TempDir() + "/mode"
	os.WriteFile(modeFile, []byte(strings.Join(modes, "\n")), 0o600)
	if cfg.Listen == nil {
		spec, _ := sockets.ParseListen("tcp://127.0.0.1:0")
		cfg.Listen = []sockets.ListenSpec{spec}
	}
	if cfg.Command == nil {
		// The shim runs the child; a shell picks the mode for each start,
		// so that one test can start children that behave differently.
		cfg.Command = []string{"/bin/sh", "-c", `m=$(head -n1 "$0"); [ "$(wc -l < "$0")" -gt 0 ] && sed -i 1d "$0"; TEST_CHILD=$m exec "$1"`, modeFile, os.Args[0]}
	}
	logs := &logBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	return runSupervisor(t, s, s.Addrs()[0], logs)
}

// runSupervisor runs s until the test ends, unless it is replaced by a
// restored image first (running.replaced), which is then the one to stop.
func runSupervisor(t *testing.T, s *Supervisor, addr string, logs *logBuffer) *running {
	r := &running{t: t, s: s, addr: addr, logs: logs, exited: make(chan struct{})}
	go func() {
		r.err = s.Run(context.Background())
		close(r.exited)
	}()
	t.Cleanup(func() {
		if r.replaced.Load() {
			return
		}
		s.Stop(context.Background())
		<-r.exited
	})
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// serving waits until a generation serves, by asking for a reload that
// queues behind the first start: its verdict comes when the second serves.
func (r *running) reload() error {
	return r.s.Reload(ctxFor(r.t, 30*time.Second))
}

func (r *running) status() Status {
	r.t.Helper()
	st, err := r.s.Status(ctxFor(r.t, 10*time.Second))
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

func (r *running) stop() error {
	r.t.Helper()
	if err := r.s.Stop(ctxFor(r.t, 30*time.Second)); err != nil {
		r.t.Fatal("Stop:", err)
	}
	select {
	case <-r.exited:
		return r.err
	case <-time.After(10 * time.Second):
		r.t.Fatal("Run did not return after Stop")
		return nil
	}
}

// ask connects to the first socket and returns what the child says.
func (r *running) ask() string {
	r.t.Helper()
	c, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

// waitFor polls the status until cond holds; the state it waits for has
// no event of its own that a test can wait on.
func (r *running) waitFor(what string, cond func(Status) bool) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond(r.status()) {
		if time.Now().After(deadline) {
			r.t.Fatalf("waited 20s for %s; status %+v", what, r.status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func servingGen(st Status) (int, int) {
	for _, g := range st.Generations {
		if g.State == Serving {
			return g.ID, g.PID
		}
	}
	return 0, 0
}

func TestRunReloadStop(t *testing.T) {
	r := start(t, Config{}, "status:warming up", "")
	// A reload asked during the first start queues behind it.
	if err := r.reload(); err != nil {
		t.Fatal("reload:", err)
	}
	st := r.status()
	gen, pid := servingGen(st)
	if gen != 2 || st.ReloadsOK != 1 || len(st.Listeners) != 1 || st.Listeners[0].FD != 3 {
		t.Fatalf("status after a reload: %+v", st)
	}
	// Generation 1 accepts until its drain closes its listener: ask once
	// it is gone.
	r.waitFor("generation 1 gone", func(st Status) bool { return len(st.Generations) == 1 })
	if got, want := r.ask(), fmt.Sprintf("gen 2 pid %d", pid); got != want {
		t.Errorf("the socket answered %q, want %q", got, want)
	}
	for _, g := range st.Generations {
		if g.ID == 2 && g.RSS <= 0 {
			t.Errorf("generation %+v", g)
		}
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run after a stop of a child that exits 0: %v", err)
	}
	// Stop returned: the sockets are closed, the notify directory is gone.
	if c, err := net.Dial("tcp", r.addr); err == nil {
		c.Close()
		t.Error("the socket still accepts after Stop returned")
	}
	if _, err := os.Stat(r.s.rundir.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("notify directory after Stop: %v", err)
	}
}

// Bug 4: a child without a SIGTERM handler dies of the drain signal on
// every stop; that is a clean stop, not exit status 143.
func TestStopChildWithoutHandlerExitsZero(t *testing.T) {
	r := start(t, Config{}, "noterm")
	r.reload() // joins the first start
	if err := r.stop(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// A child's own status at the stop is hitless's: its exit code, or the
// kill at the drain deadline.
func TestStopReportsChildStatus(t *testing.T) {
	for _, tc := range []struct {
		mode string
		code int
	}{{"termexit:3", 3}, {"ignoreterm", 128 + int(syscall.SIGKILL)}} {
		r := start(t, Config{DrainTimeout: time.Second}, tc.mode)
		r.reload()
		var xe *ExitError
		if err := r.stop(); !errors.As(err, &xe) || xe.Code != tc.code {
			t.Errorf("%s: Run = %v, want exit code %d", tc.mode, err, tc.code)
		}
	}
}

// Bug 1: SIGTERM while the first child starts; the child ignores it and
// says READY=1 later. hitless must still kill it at the drain deadline.
func TestStopDuringStartThenReady(t *testing.T) {
	r := start(t, Config{DrainTimeout: time.Second}, "ignoreterm,readyafter:500ms")
	r.waitFor("the child to ignore SIGTERM", func(st Status) bool {
		return len(st.Generations) == 1 && st.Generations[0].Status == "booting"
	})
	// Before the fix, READY=1 cancelled the drain deadline and Run never
	// returned; stop fails the test if Run does not return.
	r.stop()
	if !strings.Contains(r.logs.String(), "drain timeout: killing process group") {
		t.Error("no kill at the drain deadline")
	}
}

// Bug 5: a SIGHUP that arrives between New and Run (a deploy script that
// read the pid file at once) reloads instead of killing hitless.
func TestSIGHUPBeforeRun(t *testing.T) {
	spec, _ := sockets.ParseListen("tcp://127.0.0.1:0")
	s, err := New(Config{Listen: []sockets.ListenSpec{spec}, Command: []string{"/bin/true"}})
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	// The signal is queued for Run, not lost and not fatal.
	select {
	case sig := <-s.sigc:
		if sig != syscall.SIGHUP {
			t.Errorf("got %v", sig)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP not caught")
	}
	s.Close()
}

func TestFailedReloadKeepsServing(t *testing.T) {
	r := start(t, Config{}, "", "", "exit:3", "")
	r.reload()
	_, pid := servingGen(r.status())
	err := r.reload()
	var rerr *ReloadError
	if !errors.As(err, &rerr) || rerr.Generation != 3 || rerr.Reason != "exited before ready: exit status 3" ||
		len(rerr.Stderr) != 2 || rerr.Stderr[1] != "fatal: config missing" {
		t.Fatalf("reload: %#v", err)
	}
	st := r.status()
	if _, p := servingGen(st); p != pid || st.ReloadsFailed != 1 || !strings.Contains(st.LastFailure, "fatal: config missing") {
		t.Errorf("status after a failed reload: %+v", st)
	}
	if got := r.ask(); got != fmt.Sprintf("gen 2 pid %d", pid) {
		t.Errorf("after the failed reload the socket answered %q", got)
	}
	if err := r.reload(); err != nil {
		t.Errorf("the next reload: %v", err)
	}
}

func TestReadyTimeoutDrainsFailedChild(t *testing.T) {
	r := start(t, Config{ReadyTimeout: 2 * time.Second, DrainTimeout: time.Second}, "", "", "noready,ignoreterm", "")
	r.reload()
	err := r.reload()
	var rerr *ReloadError
	if !errors.As(err, &rerr) || rerr.Reason != "not ready within 2s" {
		t.Fatalf("reload: %v", err)
	}
	found := false
	for _, g := range r.status().Generations {
		if g.ID == 3 {
			found = g.State == Failed
		}
	}
	if !found && !strings.Contains(r.logs.String(), "failed generation drained") {
		t.Error("the failed generation is neither failed nor drained")
	}
	if err := r.reload(); err != nil {
		t.Errorf("next reload: %v", err)
	}
}

func TestSpawnFailure(t *testing.T) {
	r := start(t, Config{}, "")
	r.reload()
	r.s.cfg.Dir = "/nonexistent-dir" // only the loop reads it, at each start
	err := r.reload()
	var rerr *ReloadError
	if !errors.As(err, &rerr) || rerr.PID != 0 || !strings.Contains(rerr.Reason, "working directory") {
		t.Errorf("reload from a missing directory: %v", err)
	}
}

func TestOutputPrefixAndStatus(t *testing.T) {
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	r := start(t, Config{OutputPrefix: true, Stdout: wr}, "hello,status:up and running")
	r.reload()
	st := r.status()
	for _, g := range st.Generations {
		if g.State == Serving && g.Status != "up and running" {
			t.Errorf("STATUS= not kept: %+v", g)
		}
	}
	r.stop()
	wr.Close()
	out, _ := io.ReadAll(rd)
	if !strings.Contains(string(out), "[gen 1 pid ") || !strings.Contains(string(out), "] hello") {
		t.Errorf("stdout: %q", out)
	}
}

func TestCrashRestart(t *testing.T) {
	r := start(t, Config{BackoffMin: 10 * time.Millisecond}, "")
	r.reload()
	_, pid := servingGen(r.status())
	syscall.Kill(pid, syscall.SIGKILL)
	// A reload during the backoff runs at once; either way, a generation
	// serves again.
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	if _, p := servingGen(r.status()); p == pid || p == 0 {
		t.Errorf("after a crash: serving pid %d", p)
	}
}

func TestValidate(t *testing.T) {
	spec, _ := sockets.ParseListen("tcp://127.0.0.1:0")
	for _, tc := range []struct {
		cfg  Config
		want []string
	}{
		{Config{}, []string{"Command: no program", "Listen: no sockets"}},
		{Config{Listen: []sockets.ListenSpec{spec, spec}, Command: []string{"x"}}, []string{`Listen[1]: name "tcp-0" is already used by tcp://127.0.0.1:0`}},
		{Config{Listen: []sockets.ListenSpec{spec}, Command: []string{"x"}, Env: []string{"A=1", "LISTEN_FDS=3", "1X=2", "NOEQ"}},
			[]string{"Env[1]: hitless sets LISTEN_FDS", `Env[2]: "1X" is not a variable name`, `Env[3]: "NOEQ" is not KEY=VALUE`}},
		{Config{Listen: []sockets.ListenSpec{spec}, Command: []string{"x"}, ReadyDelay: time.Minute, BackoffMin: time.Minute, BackoffMax: time.Second, DrainSignal: syscall.SIGKILL, StableAfter: -1},
			[]string{"ReadyDelay: 1m0s is not shorter than the ready timeout (1m0s)", "BackoffMax: 1s is below", "DrainSignal: signal 9 cannot", "StableAfter: -1ns is negative"}},
		// 500ns would tell the child WATCHDOG_USEC=0, no watchdog.
		{Config{Listen: []sockets.ListenSpec{spec}, Command: []string{"x"}, Watchdog: 500 * time.Nanosecond}, []string{"Watchdog: 500ns is below the minimum of 100ms"}},
		{Config{Listen: []sockets.ListenSpec{spec}, Command: []string{"x"}, Watchdog: 99 * time.Millisecond}, []string{"Watchdog: 99ms is below the minimum"}},
	} {
		err := tc.cfg.Validate()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, w)
			}
		}
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("not a *ConfigError: %v", err)
		}
		if _, err := New(tc.cfg); err == nil {
			t.Error("New accepted what Validate refuses")
		}
	}
}

// fakeNotifier records what the supervisor tells the service manager.
type fakeNotifier struct {
	mu       sync.Mutex
	sent     []string
	interval time.Duration
	ping     chan struct{}
}

func (f *fakeNotifier) add(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, s)
	return nil
}

func (f *fakeNotifier) Ready(status string) error  { return f.add("READY " + status) }
func (f *fakeNotifier) Reloading() error           { return f.add("RELOADING") }
func (f *fakeNotifier) Stopping() error            { return f.add("STOPPING") }
func (f *fakeNotifier) Status(status string) error { return f.add("STATUS " + status) }
func (f *fakeNotifier) WatchdogInterval() time.Duration {
	return f.interval
}
func (f *fakeNotifier) Watchdog() error {
	select {
	case f.ping <- struct{}{}:
	default:
	}
	return nil
}

func (f *fakeNotifier) messages() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent)
}

func TestServiceManagerNotifications(t *testing.T) {
	n := &fakeNotifier{interval: 10 * time.Millisecond, ping: make(chan struct{}, 1)}
	r := start(t, Config{Notifier: n}, "", "", "exit:1")
	r.reload()
	select {
	case <-n.ping:
	case <-time.After(10 * time.Second):
		t.Error("no watchdog ping while serving")
	}
	r.reload() // fails
	r.stop()
	want := []string{
		"READY serving: generation 1",
		"RELOADING", // the reload asked during the first start, queued until now
		"READY reload succeeded: generation 2",
		"RELOADING",
		"READY reload failed: generation 3",
		"STOPPING",
	}
	got := n.messages()
	if len(got) != len(want) {
		t.Fatalf("sent %q\nwant %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("message %d: %q, want %q...", i, got[i], want[i])
		}
	}
}

// The driver runs without children when osEnv is faked: the seam that
// keeps the OS work out of the state machine.
func TestDriverWithFakeOS(t *testing.T) {
	spec, _ := sockets.ParseListen("tcp://127.0.0.1:0")
	s, err := New(Config{Listen: []sockets.ListenSpec{spec}, Command: []string{"/nonexistent"}, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sent []string
	s.os = osEnv{
		spawn: func(c *child) error {
			c.pid = 4000 + c.id
			go s.post(machine.EvReady{Gen: c.id})
			return nil
		},
		signal: func(pid int, sig syscall.Signal) error {
			mu.Lock()
			sent = append(sent, fmt.Sprintf("%d:%s", pid, sig))
			mu.Unlock()
			if sig == syscall.SIGTERM {
				go s.post(machine.EvExited{Gen: pid - 4000, Exit: exitOf(unix.WaitStatus(syscall.SIGTERM))})
			}
			return nil
		},
	}
	done := make(chan error)
	go func() { done <- s.Run(context.Background()) }()
	ctx := ctxFor(t, 10*time.Second)
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if want := []string{"4001:terminated", "4002:terminated"}; !slices.Equal(sent, want) {
		t.Errorf("signals %q, want %q", sent, want)
	}
}

func TestTrialRollbackOnCrash(t *testing.T) {
	r := start(t, Config{Trial: 5 * time.Second}, "", "crashafter:300ms")
	r.waitFor("the first child", func(st Status) bool { g, _ := servingGen(st); return g == 1 })
	_, pid := servingGen(r.status())
	err := r.reload()
	var rerr *ReloadError
	if !errors.As(err, &rerr) || !rerr.RolledBack || rerr.Reason != "rolled back during the trial: exited: exit status 4" ||
		len(rerr.Stderr) == 0 || rerr.Stderr[len(rerr.Stderr)-1] != "panic: crashed after ready" {
		t.Fatalf("reload: %#v", err)
	}
	st := r.status()
	for _, g := range st.Generations {
		if g.PID == pid && (g.State != Serving || !g.DrainAt.IsZero()) {
			t.Errorf("old generation after the rollback: %+v", g)
		}
	}
	if _, p := servingGen(st); p != pid || st.ReloadsRolledBack != 1 {
		t.Errorf("status after the rollback: %+v", st)
	}
	if got := r.ask(); got != fmt.Sprintf("gen 1 pid %d", pid) {
		t.Errorf("answered by %q", got)
	}
}

func TestTrialPassesAndPromote(t *testing.T) {
	r := start(t, Config{Trial: 300 * time.Millisecond}, "")
	r.reload()
	if err := r.reload(); err != nil {
		t.Fatalf("reload with a trial: %v", err)
	}
	if g, _ := servingGen(r.status()); g != 3 {
		t.Errorf("serving generation %d after the trial", g)
	}
	if err := r.s.Promote(ctxFor(t, 5*time.Second)); err != ErrNoTrial {
		t.Errorf("promote without a trial: %v", err)
	}
	r.stop() // one supervisor per process: it reaps every child
	r2 := start(t, Config{Trial: time.Hour}, "")
	r2.waitFor("the first child", func(st Status) bool { g, _ := servingGen(st); return g == 1 })
	errc := make(chan error, 1)
	go func() { errc <- r2.reload() }()
	r2.waitFor("a generation on trial", func(st Status) bool {
		for _, g := range st.Generations {
			if g.State == Trial && !g.TrialEndsAt.IsZero() {
				return true
			}
		}
		return false
	})
	if err := r2.s.Promote(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Errorf("reload after promote: %v", err)
	}
}

func TestWatchdogAbortsAndRestarts(t *testing.T) {
	var stderr logBuffer
	rd, wr, _ := os.Pipe()
	go io.Copy(&stderr, rd)
	r := start(t, Config{Watchdog: 500 * time.Millisecond, WatchdogGrace: 5 * time.Second, Stderr: wr, BackoffMin: 10 * time.Millisecond}, "nowatchdog", "")
	defer wr.Close()
	r.waitFor("a restart after the watchdog", func(st Status) bool {
		g, _ := servingGen(st)
		return st.WatchdogKills == 1 && g == 2
	})
	if !strings.Contains(r.logs.String(), "after its watchdog expired") {
		t.Error("the log does not say the watchdog killed it")
	}
	r.waitFor("the goroutine dump", func(Status) bool { return strings.Contains(stderr.String(), "goroutine ") })
	if !strings.Contains(stderr.String(), "SIGABRT") {
		t.Errorf("child stderr: %s", stderr.String())
	}
	for _, g := range r.status().Generations {
		if g.State == Serving && g.WatchdogUSec != 500000 {
			t.Errorf("watchdog of the serving generation: %+v", g)
		}
	}
}

func TestLookupUser(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		uid     uint32
		gid     uint32
		wantErr string
	}{
		{"root", 0, 0, ""},
		{"nobody", 65534, 65534, ""},
		{"65534", 65534, 65534, ""},
		{"nobody:root", 65534, 0, ""},
		{"nobody:0", 65534, 0, ""},
		{"4242:4242", 4242, 4242, ""},
		{"4242", 0, 0, "has no entry in the user database"},
		{"no-such-user-xyz", 0, 0, `no user "no-such-user-xyz"`},
		{"nobody:no-such-group-xyz", 0, 0, `no group "no-such-group-xyz"`},
		{":root", 0, 0, "want USER or USER:GROUP"},
		{"nobody:", 0, 0, "want USER or USER:GROUP"},
	} {
		u, err := LookupUser(tc.spec)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("LookupUser(%q) = %+v, %v; want %q", tc.spec, u, err, tc.wantErr)
			}
		case err != nil || u.UID != tc.uid || u.GID != tc.gid:
			t.Errorf("LookupUser(%q) = %+v, %v", tc.spec, u, err)
		}
	}
	u, _ := LookupUser("nobody")
	if env := u.env(); !slices.Contains(env, "USER=nobody") || !slices.Contains(env, "HOME=/nonexistent") {
		t.Errorf("env %q", env)
	}
	if (*User)(nil).String() != "" || u.String() != "nobody:65534" {
		t.Errorf("String: %q", u.String())
	}
}

// A notify directory whose lock nobody holds belongs to a hitless that is
// gone: the next one removes it. Held locks, other users' directories and
// directories without a lock are left alone.
func TestSweepRundirs(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, lock bool) string {
		dir := filepath.Join(base, name)
		os.Mkdir(dir, 0o711)
		if lock {
			os.WriteFile(filepath.Join(dir, "lock"), nil, 0o600)
		}
		return dir
	}
	stale := mk("hitless-stale", true)
	noLock := mk("hitless-old", false)
	other := mk("other-thing", true)
	live := mk("hitless-live", true)
	f, err := os.Open(filepath.Join(live, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	sweepRundirs(base, "", slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	for dir, want := range map[string]bool{stale: false, noLock: true, other: true, live: true} {
		if _, err := os.Stat(dir); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", dir, err == nil, want)
		}
	}
}

// Config.Idle is called once nothing has happened for IdleAfter after
// something did: after the start, after a reload, and not again while
// nothing happens.
func TestIdle(t *testing.T) {
	idle := make(chan time.Time, 8)
	r := start(t, Config{Idle: func() { idle <- time.Now() }})
	next := func(what string) time.Time {
		t.Helper()
		select {
		case at := <-idle:
			return at
		case <-time.After(10 * time.Second):
			t.Fatalf("Idle not called %s", what)
		}
		return time.Time{}
	}
	next("after the start")
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	done := time.Now()
	if at := next("after a reload"); at.Sub(done) < IdleAfter/2 {
		// The old generation's exit comes after the reload's verdict:
		// Idle waits for it too, so at least about IdleAfter passes.
		t.Errorf("Idle %v after the reload, want about %v or more", at.Sub(done), IdleAfter)
	}
	select {
	case <-idle:
		t.Error("Idle called again while nothing happened")
	case <-time.After(2 * IdleAfter):
	}
}

// The watcher's end of the socket stays open however often the garbage
// collector runs: hidden.Watch holds it. Before, once its number was taken,
// the *os.File was garbage, its finalizer closed the descriptor, and the
// watcher, reading EBADF as the end, killed every generation while
// hitless ran (about one run of TestManyReloads in two, at reload 120 to
// 190).
func TestWatcherSurvivesGC(t *testing.T) {
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "60"}, &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Setpgid: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); syscall.Wait4(pid, nil, 0, nil) })
	hitless, conn := watcherConn(t)
	fd := int(conn.Fd())
	done := make(chan int, 1)
	go func(c *os.File) { done <- hidden.Watch(c) }(conn)
	conn = nil // hidden.Watch's alone
	wt := &watcher{w: hitless, proto: watcherProtocol}
	if err := wt.add(pid); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		// A garbage collection, and every finalizer it queued run.
		ran := make(chan struct{})
		sentinel := new([64]byte)
		runtime.SetFinalizer(sentinel, func(*[64]byte) { close(ran) })
		sentinel = nil
		runtime.GC()
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatal("no finalizer ran")
		}
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("the watcher's end was closed under it: %v", err)
	}
	hitless.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not end with hitless's end")
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the group it was told of: %v, want killed", ws)
	}
}

// hitless that dies during the exec of an upgrade (of a SIGTERM the new
// runtime cannot catch yet) has its children drained, not killed: the
// drain signal first, SIGKILL only for what is left at the drain timeout.
// The watcher holds the output pipes it was sent meanwhile: a child that
// writes as it drains is not killed by SIGPIPE. Once an image runs again
// ("R"), a death kills as always. (e2e's TestUpgradeDiesInExecDrains
// does this with hitless and children it started.)
func TestWatcherDrainsDuringUpgrade(t *testing.T) {
	// hidden.Watch, run in this process by the tests before, ignores
	// SIGTERM, and a child inherits an ignored signal, which a shell
	// cannot trap then: handled by Go again, the children get the
	// default.
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	signal.Stop(c)
	spawn := func(script string, stdout *os.File) int {
		files := []uintptr{0, 1, 2}
		if stdout != nil {
			files[1] = stdout.Fd()
		}
		pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{Files: files, Sys: &syscall.SysProcAttr{Setpgid: true}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); syscall.Wait4(pid, nil, 0, nil) })
		return pid
	}
	// Each says when its trap is set: a SIGTERM before that would end it.
	dir := t.TempDir()
	out, in, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	drains := spawn("trap 'echo the last words of a drained child; exit 0' TERM; touch "+dir+"/drains; while :; do sleep 0.05; done", in)
	in.Close()
	stubborn := spawn("trap '' TERM; touch "+dir+"/stubborn; while :; do sleep 0.05; done", nil)
	waitFile(t, dir+"/drains")
	waitFile(t, dir+"/stubborn")
	hitless, conn := watcherConn(t)
	wt := &watcher{w: hitless, proto: watcherProtocol}
	for _, pgid := range []int{drains, stubborn} {
		if err := wt.add(pgid); err != nil {
			t.Fatal(err)
		}
	}
	if err := wt.upgrading([]outPipe{{r: out}}, syscall.SIGTERM, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	out.Close() // the watcher holds it now; hitless dies:
	hitless.Close()
	hidden.Watch(conn)
	for pid, want := range map[int]string{drains: "exit status 0", stubborn: "killed by signal SIGKILL"} {
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
		if got := exitReason(unix.WaitStatus(ws)); got != want {
			t.Errorf("pid %d: %s, want %s", pid, got, want)
		}
	}

	after := spawn("trap 'exit 0' TERM; while :; do sleep 0.05; done", nil)
	r, w, _ := os.Pipe()
	fmt.Fprintf(w, "+%d\nU %d 500\nR\n", after, int(syscall.SIGTERM))
	w.Close()
	hidden.Watch(r)
	var ws syscall.WaitStatus
	syscall.Wait4(after, &ws, 0, nil)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("after R: %v, want killed", ws)
	}
}

// watcherConn is a unix socket pair as startWatcher makes it: hitless's
// end and the watcher's.
func watcherConn(t *testing.T) (hitless, watcher *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fds[0], true)
	return os.NewFile(uintptr(fds[0]), "hitless"), os.NewFile(uintptr(fds[1]), "watcher")
}

// waitFile waits for path to exist: a child says it is ready.
func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A watcher that dies is replaced, and told of the children.
func TestWatcherRestarted(t *testing.T) {
	r := start(t, Config{}, "")
	r.waitFor("the first child", func(st Status) bool { g, _ := servingGen(st); return g == 1 })
	var pid int
	for p := range children(t) {
		if strings.Contains(cmdline(p), WatchArg) {
			pid = p
		}
	}
	if pid == 0 {
		t.Fatal("no watcher among the children")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	r.waitFor("a new watcher", func(Status) bool {
		found := false
		for p := range children(t) {
			found = found || p != pid && strings.Contains(cmdline(p), WatchArg)
		}
		return found && strings.Contains(r.logs.String(), "starting another")
	})
}

// children lists the children of this process.
func children(t *testing.T) map[int]bool {
	kids := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(pid); ok && st.ppid == os.Getpid() {
			kids[pid] = true
		}
	}
	return kids
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// One walk of /proc counts every group asked for, and only those.
func TestGroupsRSS(t *testing.T) {
	self := syscall.Getpgrp()
	rss := groupsRSS([]int{self, -1})
	if rss[self] <= 0 {
		t.Errorf("process group %d (this test's): %d bytes resident, want more than 0", self, rss[self])
	}
	if v, ok := rss[-1]; !ok || v != 0 {
		t.Errorf("no such group: %d, %v; want 0, reported", v, ok)
	}
	if len(rss) != 2 {
		t.Errorf("groupsRSS counted %d groups, want the 2 asked for: %v", len(rss), rss)
	}
}
