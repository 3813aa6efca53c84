//go:build linux

package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/supervisor"
)

// fake is a Handler that records what it was asked.
type fake struct {
	reloads, stops, statuses atomic.Int32
	rejoins                  atomic.Int32
	lastCaller               atomic.Int64 // NewCaller's
	reloadedAs, rejoinedAs   atomic.Int64 // the callers of the last ReloadAs and RejoinReload
	reload                   func(ctx context.Context) error
	stop                     func(ctx context.Context) error
	trial                    func(cmd string) error // promote and rollback; nil: ErrNoTrial
	// trialAt, if set, answers promote and rollback instead, with the
	// request's context.
	trialAt       func(ctx context.Context, cmd string) error
	upgrade       func(ctx context.Context, binary string) error
	upgradeResult func() error
	entered       chan string // receives the command once a handler runs, if set
	st            supervisor.Status
	status        func(ctx context.Context) (supervisor.Status, error) // nil: st
}

func (f *fake) enter(cmd string) {
	if f.entered != nil {
		f.entered <- cmd
	}
}

func (f *fake) NewCaller() supervisor.Caller { return supervisor.Caller(f.lastCaller.Add(1)) }

func (f *fake) ReloadAs(ctx context.Context, c supervisor.Caller) error {
	f.reloadedAs.Store(int64(c))
	f.reloads.Add(1)
	f.enter(CmdReload)
	if f.reload != nil {
		return f.reload(ctx)
	}
	return nil
}

// RejoinReload answers a carried reload as the reload it rejoins would.
func (f *fake) RejoinReload(ctx context.Context, c supervisor.Caller) error {
	f.rejoinedAs.Store(int64(c))
	f.rejoins.Add(1)
	f.enter(CmdReload)
	if f.reload != nil {
		return f.reload(ctx)
	}
	return nil
}

func (f *fake) Stop(ctx context.Context) error {
	f.stops.Add(1)
	f.enter(CmdStop)
	if f.stop != nil {
		return f.stop(ctx)
	}
	return nil
}

func (f *fake) Status(ctx context.Context) (supervisor.Status, error) {
	f.statuses.Add(1)
	if f.status != nil {
		return f.status(ctx)
	}
	return f.st, nil
}

func (f *fake) Upgrade(ctx context.Context, binary string) error {
	f.enter(CmdUpgrade)
	if f.upgrade != nil {
		return f.upgrade(ctx, binary)
	}
	return nil
}

func (f *fake) UpgradeResult(ctx context.Context) error {
	if f.upgradeResult != nil {
		return f.upgradeResult()
	}
	return supervisor.ErrNoUpgrade
}

func (f *fake) Promote(ctx context.Context) error  { return f.endTrial(ctx, CmdPromote) }
func (f *fake) Rollback(ctx context.Context) error { return f.endTrial(ctx, CmdRollback) }

func (f *fake) endTrial(ctx context.Context, cmd string) error {
	f.enter(cmd)
	if f.trialAt != nil {
		return f.trialAt(ctx, cmd)
	}
	if f.trial == nil {
		return supervisor.ErrNoTrial
	}
	return f.trial(cmd)
}

// shortDir returns a new directory with a short path: a unix socket path
// is limited to 107 bytes, which t.TempDir() can exceed.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hlc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serve listens in a new directory and serves h until the test ends.
func serve(t *testing.T, h Handler) *Server {
	t.Helper()
	s, err := Listen(filepath.Join(shortDir(t), "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(h) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return s
}

func dialT(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The socket is 0600 whatever the umask, in a directory created 0700;
// Close removes it.
func TestListenMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(shortDir(t), "run", "hitless", "c.sock")
	s, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v, mode %v: want a socket with mode 0600 under umask 0", err, fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, mode %v; want 0700", err, di.Mode())
	}
	if s.Path() != path {
		t.Errorf("Path() = %q", s.Path())
	}
	s.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
}

// A stale socket file is replaced; a live one is refused, naming the
// pid that holds it; a file that is not a socket is refused.
func TestListenStaleLiveAndOther(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "c.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false) // as a crash would leave it
	stale.Close()
	s, err := Listen(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer s.Close()
	_, err = Listen(path)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("already in use by pid %d", os.Getpid())) {
		t.Errorf("over a live socket: %v", err)
	}
	other := filepath.Join(dir, "file")
	os.WriteFile(other, nil, 0o600)
	if _, err := Listen(other); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a regular file: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("the regular file was touched: %v", err)
	}
}

// A directory someone else controls is refused.
func TestListenDirectoryChecks(t *testing.T) {
	open := filepath.Join(shortDir(t), "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if _, err := Listen(filepath.Join(open, "c.sock")); err == nil || !strings.Contains(err.Error(), "writable by everyone and not sticky") {
		t.Errorf("world-writable directory: %v", err)
	}
	sticky := filepath.Join(shortDir(t), "sticky")
	os.Mkdir(sticky, 0o777)
	os.Chmod(sticky, 0o777|os.ModeSticky)
	s, err := Listen(filepath.Join(sticky, "c.sock"))
	if err != nil {
		t.Errorf("sticky directory like /tmp: %v", err)
	} else {
		s.Close()
	}
	// $TMPDIR/hitless-UID made a symbolic link to a directory that
	// passes every check: the link is refused, not followed.
	link := filepath.Join(shortDir(t), "hitless-0")
	os.Symlink(sticky, link)
	if _, err := Listen(filepath.Join(link, "c.sock")); err == nil || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("symbolic link to a sticky directory: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	theirs := filepath.Join(shortDir(t), "theirs")
	os.Mkdir(theirs, 0o755)
	os.Chown(theirs, 65534, 65534)
	if _, err := Listen(filepath.Join(theirs, "c.sock")); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("directory of another user: %v", err)
	}
}

func TestPathTooLong(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", 110) + ".sock"
	for name, err := range map[string]error{
		"Listen": func() error { _, err := Listen(long); return err }(),
		"Dial":   func() error { _, err := Dial(long); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), "limited to 107 bytes") {
			t.Errorf("%s of a %d-byte path: %v", name, len(long), err)
		}
	}
}

// Close leaves alone a file that has replaced the socket.
// Close is no accept error: Serve returns without a warning, however the
// two interleave.
func TestCloseQuiet(t *testing.T) {
	for range 20 {
		s, err := Listen(filepath.Join(shortDir(t), "c.sock"))
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		s.Log = slog.New(slog.NewTextHandler(&logs, nil))
		done := make(chan error, 1)
		go func() { done <- s.Serve(&fake{}) }()
		s.Close()
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if logs.Len() > 0 {
			t.Fatalf("Close was logged as trouble: %s", logs.String())
		}
	}
}

func TestCloseKeepsAnotherFile(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	s, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	os.WriteFile(path, []byte("someone else's"), 0o600)
	s.Close()
	if b, err := os.ReadFile(path); err != nil || string(b) != "someone else's" {
		t.Errorf("Close removed or changed a file that was not its socket: %v", err)
	}
}

func TestReloadOK(t *testing.T) {
	f := &fake{st: supervisor.Status{Generations: []supervisor.GenerationStatus{
		{ID: 1, PID: 100, State: supervisor.Draining},
		{ID: 2, PID: 200, State: supervisor.Serving},
	}}}
	s := serve(t, f)
	res, err := dialT(t, s.Path()).Reload(context.Background(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if res.Generation != 2 || res.PID != 200 || res.Serving == nil || *res.Serving != (GenRef{2, 200}) {
		t.Errorf("result %+v", res)
	}
	if f.reloads.Load() != 1 {
		t.Errorf("%d reloads", f.reloads.Load())
	}
}

func TestReloadFailed(t *testing.T) {
	f := &fake{
		st: supervisor.Status{Generations: []supervisor.GenerationStatus{{ID: 1, PID: 100, State: supervisor.Serving}}},
		reload: func(ctx context.Context) error {
			return &supervisor.ReloadError{Generation: 2, PID: 200, Reason: "exited before ready: exit status 1", Stderr: []string{"a", "panic: boom"}}
		},
	}
	s := serve(t, f)
	res, err := dialT(t, s.Path()).Reload(context.Background(), time.Minute)
	var failed *ReloadFailed
	if !errors.As(err, &failed) {
		t.Fatalf("error %v, want *ReloadFailed", err)
	}
	r := failed.Result
	if r.Generation != 2 || r.PID != 200 || r.Reason != "exited before ready: exit status 1" ||
		strings.Join(r.Stderr, "|") != "a|panic: boom" || r.Serving == nil || *r.Serving != (GenRef{1, 100}) {
		t.Errorf("result %+v", r)
	}
	if res == nil || res.Generation != 2 || !strings.Contains(err.Error(), "panic: boom") {
		t.Errorf("returned result %+v, error %v", res, err)
	}
}

// A reload rolled back during its trial is a failed reload that says so.
func TestReloadRolledBack(t *testing.T) {
	f := &fake{
		st: supervisor.Status{Generations: []supervisor.GenerationStatus{{ID: 1, PID: 100, State: supervisor.Serving}}},
		reload: func(ctx context.Context) error {
			return &supervisor.ReloadError{Generation: 2, PID: 200, Reason: "rolled back during the trial: exited: exit status 4", RolledBack: true}
		},
	}
	_, err := dialT(t, serve(t, f).Path()).Reload(context.Background(), time.Minute)
	var failed *ReloadFailed
	if !errors.As(err, &failed) || !failed.Result.RolledBack || *failed.Result.Serving != (GenRef{1, 100}) {
		t.Fatalf("error %v, want a *ReloadFailed that was rolled back, generation 1 serving", err)
	}
}

// Promote and rollback end the trial and name the generation that serves
// then; with no trial, both are refused with code no_trial.
func TestPromoteAndRollback(t *testing.T) {
	f := &fake{st: supervisor.Status{Generations: []supervisor.GenerationStatus{{ID: 3, PID: 300, State: supervisor.Serving}}}}
	s := serve(t, f)
	for cmd, end := range map[string]func(*Client, context.Context, time.Duration) (*GenRef, error){
		CmdPromote: (*Client).Promote, CmdRollback: (*Client).Rollback,
	} {
		f.trial = nil
		_, err := end(dialT(t, s.Path()), context.Background(), 0)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != CodeNoTrial || !strings.Contains(err.Error(), "no generation is on trial") {
			t.Errorf("%s without a trial: %v, want code no_trial", cmd, err)
		}
		var asked string
		f.trial = func(c string) error { asked = c; return nil }
		g, err := end(dialT(t, s.Path()), context.Background(), 0)
		if err != nil || asked != cmd || g == nil || *g != (GenRef{3, 300}) {
			t.Errorf("%s: asked %q, %+v, %v; want generation 3 serving", cmd, asked, g, err)
		}
	}
}

func TestReloadStopping(t *testing.T) {
	f := &fake{reload: func(ctx context.Context) error { return supervisor.ErrStopping }}
	s := serve(t, f)
	_, err := dialT(t, s.Path()).Reload(context.Background(), time.Minute)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeStopping {
		t.Errorf("error %v, want code stopping", err)
	}
}

// No verdict within the timeout: the client hears so from the server, in
// time, and the error says the verdict is unknown.
func TestReloadNoVerdict(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var sawDeadline atomic.Bool
	f := &fake{reload: func(ctx context.Context) error {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= 300*time.Millisecond {
			sawDeadline.Store(true)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-release:
			return nil
		}
	}}
	s := serve(t, f)
	start := time.Now()
	_, err := dialT(t, s.Path()).Reload(context.Background(), 300*time.Millisecond)
	if !errors.Is(err, ErrNoVerdict) || !strings.Contains(err.Error(), "may still succeed") {
		t.Errorf("error %v, want ErrNoVerdict saying the reload may still succeed", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v for a 300ms timeout", took)
	}
	if !sawDeadline.Load() {
		t.Error("the handler's context did not carry the request's timeout")
	}
}

func TestStatusAndStop(t *testing.T) {
	want := supervisor.Status{PID: 42, Stats: supervisor.Stats{ReloadsOK: 3, ReloadsFailed: 1, LastFailure: "x"},
		Generations: []supervisor.GenerationStatus{{ID: 7, PID: 700, State: supervisor.Serving, Status: "ok"}}}
	f := &fake{st: want, entered: make(chan string, 2)}
	s := serve(t, f)
	c := dialT(t, s.Path())
	got, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if !bytes.Equal(gb, wb) {
		t.Errorf("status %s, want %s", gb, wb)
	}
	// The same client makes a second request on a new connection. The
	// stop is answered only when the server closes, which the process
	// does last, once it released everything else: a client that sees
	// "stopped" finds the socket gone.
	errc := make(chan error, 1)
	go func() { errc <- c.Stop(context.Background(), time.Minute) }()
	<-f.entered
	select {
	case err := <-errc:
		t.Fatalf("stop answered (%v) before the server closed", err)
	case <-time.After(100 * time.Millisecond): // a reply would have come by now
	}
	s.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file when stop returned: %v", err)
	}
	if f.stops.Load() != 1 || f.reloads.Load() != 0 {
		t.Errorf("stops %d reloads %d", f.stops.Load(), f.reloads.Load())
	}
}

// Close ends the waits in flight (not what they wait for) and returns;
// their clients hear that hitless is stopping.
func TestCloseEndsWaits(t *testing.T) {
	f := &fake{entered: make(chan string, 1), reload: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}}
	s := serve(t, f)
	c := dialT(t, s.Path())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Reload(context.Background(), time.Hour)
		errc <- err
	}()
	<-f.entered
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	var re *RemoteError
	if err := <-errc; !errors.As(err, &re) || re.Code != CodeStopping {
		t.Errorf("client got %v, want code stopping", err)
	}
}

// A stop whose wait Close ends (hitless stopped and is exiting) is a
// success.
func TestStopDuringClose(t *testing.T) {
	f := &fake{entered: make(chan string, 1), stop: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}}
	s := serve(t, f)
	c := dialT(t, s.Path())
	errc := make(chan error, 1)
	go func() { errc <- c.Stop(context.Background(), time.Hour) }()
	<-f.entered
	s.Close()
	if err := <-errc; err != nil {
		t.Errorf("stop: %v", err)
	}
}

// A client that sends nothing is answered when the read timeout passes,
// and does not hold up others meanwhile.
func TestIdleClient(t *testing.T) {
	f := &fake{}
	s, err := Listen(filepath.Join(shortDir(t), "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	s.ReadTimeout = 300 * time.Millisecond
	go s.Serve(f)
	defer s.Close()
	idle, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := dialT(t, s.Path()).Status(context.Background()); err != nil {
		t.Errorf("status while a client idles: %v", err)
	}
	idle.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(idle)
	var r Reply
	if json.Unmarshal(b, &r) != nil || r.Code != CodeBadRequest || !strings.Contains(r.Error, "no complete request line within 300ms") {
		t.Errorf("idle client got %q", b)
	}
}

// Beyond MaxConns connections at once, the server answers "busy".
func TestBusy(t *testing.T) {
	s := serve(t, &fake{})
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range MaxConns {
		c, err := net.Dial("unix", s.Path())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	// The idle connections take their slots as their goroutines run:
	// ask until the answer is busy.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := dialT(t, s.Path()).Status(context.Background())
		var re *RemoteError
		if errors.As(err, &re) && re.Code == CodeBusy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never busy with %d idle connections; last: %v", MaxConns, err)
		}
	}
	// Once they go, service resumes.
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err := dialT(t, s.Path()).Status(context.Background())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after the idle connections closed: %v", err)
		}
	}
}

func TestDialErrors(t *testing.T) {
	dir := shortDir(t)
	_, err := Dial(filepath.Join(dir, "none.sock"))
	var ue *UnreachableError
	if !errors.As(err, &ue) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "is hitless running?") {
		t.Errorf("missing socket: %v", err)
	}
	stale := filepath.Join(dir, "stale.sock")
	ln, _ := net.Listen("unix", stale)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(stale); !errors.As(err, &ue) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("stale socket: %v", err)
	}
}

func TestAuthorize(t *testing.T) {
	for _, tc := range []struct {
		peer uint32
		self int
		ok   bool
	}{
		{0, 1000, true},
		{1000, 1000, true},
		{0, 0, true},
		{65534, 1000, false},
		{1001, 1000, false},
		{65534, 0, false},
	} {
		err := authorize(tc.peer, tc.self)
		if (err == nil) != tc.ok {
			t.Errorf("authorize(peer %d, self %d) = %v, want ok=%v", tc.peer, tc.self, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("not authorized: uid %d", tc.peer)) {
			t.Errorf("message %q", err)
		}
	}
}

const helperEnv = "HITLESS_CONTROL_TEST_HELPER"

// Another user who can connect (the file opened to everyone) is refused by
// the peer-credentials check, and the handler is never called. The client
// is this test binary run as nobody.
func TestPeerCredentialsRefuseOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a client as nobody")
	}
	f := &fake{}
	s := serve(t, f)
	os.Chmod(filepath.Dir(s.Path()), 0o755)
	os.Chmod(s.Path(), 0o666)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pub := shortDir(t)
	os.Chmod(pub, 0o755)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(pub, "control.test")
	if err := os.WriteFile(helper, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{CmdReload, CmdStop, CmdStatus} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c := exec.CommandContext(ctx, helper, "-test.run=^TestHelperClient$", "-test.v")
		c.Env = append(os.Environ(), helperEnv+"="+s.Path(), helperEnv+"_CMD="+cmd)
		c.Dir = pub
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, _ := c.CombinedOutput()
		cancel()
		if !strings.Contains(string(out), "HELPER: not authorized: uid 65534 may not control this hitless") {
			t.Errorf("%s as nobody:\n%s", cmd, out)
		}
	}
	if n := f.reloads.Load() + f.stops.Load() + f.statuses.Load(); n != 0 {
		t.Errorf("the handler was called %d times for another user", n)
	}
}

// TestHelperClient is the client of TestPeerCredentialsRefuseOtherUser.
func TestHelperClient(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	c, err := Dial(path)
	if err != nil {
		fmt.Println("HELPER: dial:", err)
		return
	}
	ctx := context.Background()
	switch os.Getenv(helperEnv + "_CMD") {
	case CmdReload:
		_, err = c.Reload(ctx, 5*time.Second)
	case CmdStop:
		err = c.Stop(ctx, 5*time.Second)
	default:
		_, err = c.Status(ctx)
	}
	var ue *UnreachableError
	if errors.As(err, &ue) && errors.Is(err, os.ErrPermission) {
		fmt.Println("HELPER:", ue.Err)
		return
	}
	fmt.Println("HELPER: unexpected:", err)
}

// Many clients at once each get their own answer.
func TestConcurrentClients(t *testing.T) {
	f := &fake{st: supervisor.Status{PID: 9}}
	s := serve(t, f)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			c, err := Dial(s.Path())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			st, err := c.Status(context.Background())
			if err == nil && st.PID != 9 {
				err = fmt.Errorf("pid %d", st.PID)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		var re *RemoteError
		if errors.As(err, &re) && re.Code == CodeBusy {
			continue
		}
		t.Error(err)
	}
}

// Reload requests waiting for their verdict have places of their own:
// with MaxWaiting of them waiting, one more is refused as busy, but
// status, promote, rollback and stop are answered.
func TestWaitersDoNotCrowdOut(t *testing.T) {
	block := make(chan struct{})
	var s *Server
	f := &fake{entered: make(chan string, MaxWaiting+1), reload: func(ctx context.Context) error {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil
	}, stop: func(context.Context) error { go s.Close(); return nil }}
	s = serve(t, f)
	defer close(block)
	for range MaxWaiting {
		go dialT(t, s.Path()).Reload(context.Background(), time.Minute)
	}
	for range MaxWaiting {
		<-f.entered
	}
	_, err := dialT(t, s.Path()).Reload(context.Background(), time.Minute)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeBusy {
		t.Errorf("one reload more than MaxWaiting: %v, want busy", err)
	}
	if _, err := dialT(t, s.Path()).Status(context.Background()); err != nil {
		t.Errorf("status with %d reloads waiting: %v", MaxWaiting, err)
	}
	for _, cmd := range []string{CmdPromote, CmdRollback} {
		if _, err := dialT(t, s.Path()).endTrial(context.Background(), cmd, 0); !errors.As(err, &re) || re.Code != CodeNoTrial {
			t.Errorf("%s with %d reloads waiting: %v, want no_trial", cmd, MaxWaiting, err)
		}
	}
	if err := dialT(t, s.Path()).Stop(context.Background(), 10*time.Second); err != nil {
		t.Errorf("stop with %d reloads waiting: %v", MaxWaiting, err)
	}
}
