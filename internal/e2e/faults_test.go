//go:build linux

package e2e

// The fault matrix (docs/reliability.md): each test injects one fault
// into a real hitless and asserts what must follow. Rows already covered
// by supervisor_test.go are cited there, not repeated here.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/harness"
)

// A new child that reports ready and then crashes (exit 4, 200ms after
// READY=1): the old one was already told to drain, so hitless restarts the
// program after the backoff; the socket stays open throughout, so no
// client is refused.
func TestFaultReadyThenCrash(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	p := start(t, harness.Options{Args: []string{"--backoff-min", "300ms"}}, "-mode-file", modeFile)
	const workers = 4
	l := work(p.Addr(), workers, true, 0)
	defer l.Stop()
	waitOK(t, l, 50)

	os.WriteFile(modeFile, []byte("crash"), 0o644)
	m := p.Mark()
	p.Signal(syscall.SIGHUP)
	// The log, not the status: generation 2 serves for 200ms only, and
	// the mode must change within the 300ms before its restart.
	_, r := p.WaitSince(m, 20*time.Second, harness.IsGen("serving", 2))
	crashPID := r.Int("pid")
	// The next start must serve: the restart is at least 300ms away.
	os.WriteFile(modeFile, []byte("serve"), 0o644)
	// How the child ended is in the log alone.
	_, r = p.WaitSince(m, 20*time.Second, harness.Is("serving child died"))
	if r.Int("pid") != crashPID || !strings.Contains(r.Str("status"), "exit status 4") {
		t.Errorf("died record %v, want pid %d with exit status 4", r, crashPID)
	}
	// Generation 1 drained, and the restart serves.
	p.WaitStatus(20*time.Second, func(s harness.Status) bool { return serves(3)(s) && len(s.Generations) == 1 })
	waitOK(t, l, 50)
	// As in TestFaultKillServingUnderLoad: no connection refused, and at
	// most the requests on connections the crashed child held.
	heldOnly(t, "across a ready-then-crash reload", workers, map[string]*harness.Tally{"keep-alive": l.Stop()})
	if in := getInfo(t, p.Addr()); in.Generation != "3" {
		t.Errorf("generation %s serves, want 3", in.Generation)
	}
}

// An old child still busy when the drain timeout ends is killed with its
// process group at the deadline; work that fits in the deadline finishes.
func TestFaultDrainLongerThanTimeout(t *testing.T) {
	p := start(t, harness.Options{Args: []string{"--drain-timeout", "2s"}})
	old := getInfo(t, p.Addr())
	short := harness.OpenStream(p.Addr(), 5, 200*time.Millisecond)   // 0.8s: within the deadline
	long := harness.OpenStream(p.Addr(), 1000, 100*time.Millisecond) // 100s: beyond it
	<-short.First()
	<-long.First()
	reloadKillsAtDrainTimeout(t, p, old.PID)
	for _, s := range []*harness.Stream{short, long} {
		if err := s.Wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if short.Err() != nil || short.Events() != 5 {
		t.Errorf("stream within the deadline: %d of 5 events, err %v", short.Events(), short.Err())
	}
	if n := long.Events(); n >= 1000 || n < 2 {
		t.Errorf("stream beyond the deadline got %d events, want it cut after some", n)
	}
	t.Logf("stream beyond the deadline: cut after %d events (%v)", long.Events(), long.Err())
	if in := getInfo(t, p.Addr()); in.Generation != "2" {
		t.Errorf("generation %s serves, want 2", in.Generation)
	}
}

// openHijack opens GET /hijack and returns the upgraded connection.
func openHijack(t *testing.T, addr, query string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /hijack%s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", query)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c, br
}

func echo(t *testing.T, c net.Conn, br *bufio.Reader, line string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, line); err != nil {
		t.Fatalf("write on the hijacked connection: %v", err)
	}
	got, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read on the hijacked connection: %v", err)
	}
	return strings.TrimSpace(got)
}

// A WebSocket-style hijacked connection open across a reload keeps working
// on the old generation while the new one takes every new connection; the
// old one exits cleanly when the connection ends, or, when the server says
// goodbye on shutdown, right after it.
func TestFaultHijackedAcrossReload(t *testing.T) {
	t.Run("client-closes", func(t *testing.T) {
		p := start(t, harness.Options{})
		old := getInfo(t, p.Addr())
		c, br := openHijack(t, p.Addr(), "")
		want := fmt.Sprintf("gen=1 pid=%d a", old.PID)
		if got := echo(t, c, br, "a"); got != want {
			t.Fatalf("echo %q, want %q", got, want)
		}
		m := p.Mark()
		p.Signal(syscall.SIGHUP)
		p.WaitStatus(10*time.Second, draining(1))
		p.WaitOutput(10*time.Second, "1 stop accepting")
		if in := getInfo(t, p.Addr()); in.Generation != "2" {
			t.Errorf("new connection answered by generation %s, want 2", in.Generation)
		}
		// The old generation still serves its hijacked connection.
		want = fmt.Sprintf("gen=1 pid=%d b", old.PID)
		if got := echo(t, c, br, "b"); got != want {
			t.Fatalf("echo after the reload %q, want %q", got, want)
		}
		// A generation that has exited is gone from the status, for good.
		if g, ok := p.Status().Gen(1); !ok || g.State != harness.StateDraining {
			t.Errorf("old generation drained while its hijacked connection was open: %+v", g)
		}
		c.Close()
		// How it ended shows only in the log.
		_, r := p.WaitSince(m, 10*time.Second, harness.Is("drained"))
		if r.Int("pid") != old.PID || r.Str("status") != "exit status 0" {
			t.Errorf("drained %v, want pid %d with exit status 0", r, old.PID)
		}
	})
	t.Run("goodbye-on-shutdown", func(t *testing.T) {
		p := start(t, harness.Options{})
		old := getInfo(t, p.Addr())
		c, br := openHijack(t, p.Addr(), "?goodbye=1")
		echo(t, c, br, "a")
		m := p.Mark()
		p.Signal(syscall.SIGHUP)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := br.ReadString('\n')
		if line != "goodbye\n" || err != nil {
			t.Fatalf("read %q, %v; want goodbye", line, err)
		}
		if _, err := br.ReadString('\n'); err != io.EOF {
			t.Errorf("after goodbye: %v, want EOF", err)
		}
		_, r := p.WaitSince(m, 10*time.Second, harness.Is("drained"))
		if r.Int("pid") != old.PID || r.Str("status") != "exit status 0" {
			t.Errorf("drained %v, want pid %d with exit status 0", r, old.PID)
		}
	})
}

// draining is a status predicate: generation gen is draining.
func draining(gen int) func(harness.Status) bool {
	return func(s harness.Status) bool { g, ok := s.Gen(gen); return ok && g.State == harness.StateDraining }
}

// SIGKILL to the serving child under load, with keep-alive and with
// connection-per-request clients: hitless restarts it, no connection is
// refused (the socket stays open, connections wait in its backlog), and
// only requests on connections the killed child held fail.
func TestFaultKillServingUnderLoad(t *testing.T) {
	p := start(t, harness.Options{})
	in := getInfo(t, p.Addr())
	const workers = 4
	ka := work(p.Addr(), workers, true, 0)
	defer ka.Stop()
	pr := work(p.Addr(), workers, false, 0)
	defer pr.Stop()
	waitOK(t, ka, 50)
	waitOK(t, pr, 50)
	if err := syscall.Kill(in.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The serving child died and was restarted.
	p.WaitStatus(10*time.Second, func(s harness.Status) bool { return s.Restarts == 1 && serves(2)(s) })
	waitOK(t, ka, 50)
	waitOK(t, pr, 50)
	heldOnly(t, "across a SIGKILL", workers, map[string]*harness.Tally{"keep-alive": ka.Stop(), "per-request": pr.Stop()})
}

// heldOnly checks the load of workers clients of each kind across the
// death of a child that held some of their connections: no connection
// was refused (hitless kept the socket), and only requests on connections
// the child held failed. Each connection it held can fail the one request
// sent on it. A worker holds one; a keep-alive worker whose request
// failed may next pick a pooled connection that the child had also
// accepted, so each may meet at most two.
func heldOnly(t *testing.T, what string, workers int, loads map[string]*harness.Tally) {
	t.Helper()
	for name, res := range loads {
		t.Logf("%s %s: %s", name, what, res)
		if n := res.Count(harness.Refused); n != 0 {
			t.Errorf("%s: %d connections refused", name, n)
		}
		if res.Failed() > int64(2*workers) {
			t.Errorf("%s: %d requests failed, want at most two per worker (%d)", name, res.Failed(), 2*workers)
		}
	}
}

// A crash loop: the restart delay doubles from --backoff-min up to
// --backoff-max, and a child that served --stable-after resets it.
func TestFaultCrashLoopBackoff(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("crash"), 0o644) // ready, then exit 4 after 200ms
	p := start(t, harness.Options{
		Args: []string{"--backoff-min", "100ms", "--backoff-max", "800ms", "--stable-after", "1s"},
	}, "-mode-file", modeFile)
	// The delays are in the log alone.
	restart := harness.Is("no serving child: restarting")
	var delays []time.Duration
	at := 0
	for len(delays) < 5 {
		i, r := p.WaitSince(at, 20*time.Second, restart)
		at = i + 1
		delays = append(delays, time.Duration(r.Int("in")))
	}
	want := []time.Duration{100, 200, 400, 800, 800}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if fmt.Sprint(delays) != fmt.Sprint(want) {
		t.Errorf("restart delays %v, want %v", delays, want)
	}
	// The next child serves 1.5s, longer than --stable-after, then dies:
	// the delay is back to the minimum. (The write lands within the
	// current 800ms delay, before the next start reads the file.)
	os.WriteFile(modeFile, []byte("crash:1500ms"), 0o644)
	_, r := p.WaitSince(at, 20*time.Second, restart)
	if d := time.Duration(r.Int("in")); d != 100*time.Millisecond {
		t.Errorf("restart delay after a stable run %v, want 100ms", d)
	}
	os.WriteFile(modeFile, []byte("serve"), 0o644)
	t.Logf("delays in the loop %v, after a stable run %v", delays, time.Duration(r.Int("in")))
}

// SIGTERM to hitless under load: every request sent before the signal is
// answered (keep-alive clients with a 50ms handler, and event streams in
// progress); hitless exits 0; what clients send after the signal is
// refused.
func TestFaultStopUnderLoad(t *testing.T) {
	p := start(t, harness.Options{})
	l := work(p.Addr(), 8, true, 50*time.Millisecond)
	defer l.Stop()
	var streams []*harness.Stream
	for range 3 {
		streams = append(streams, harness.OpenStream(p.Addr(), 4, 200*time.Millisecond))
	}
	for _, s := range streams {
		<-s.First()
	}
	waitOK(t, l, 40)
	before := l.Tally()
	after := l.NextPhase()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Errorf("hitless exit code %d, want 0", code)
	}
	l.Stop()
	t.Logf("sent before SIGTERM: %s; sent after: %s", before, after)
	if before.Failed() != 0 {
		t.Errorf("requests sent before SIGTERM failed: %s", before)
	}
	// hitless releases its copies of the sockets when the stop begins, so
	// a client that comes after is refused (it knows nothing was sent),
	// never accepted into a backlog nobody serves and reset at exit.
	if n := after.Failed() - int64(after.Count(harness.Refused)); n != 0 {
		t.Errorf("%d requests sent after SIGTERM failed otherwise than refused: %s", n, after)
	}
	for i, s := range streams {
		if err := s.Wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if s.Err() != nil || s.Events() != 4 {
			t.Errorf("stream %d: %d of 4 events, err %v", i, s.Events(), s.Err())
		}
	}
}

// The program is missing, not executable, not a program, or the release
// symlink points nowhere at reload time: the reload fails with the reason,
// the serving child is untouched, and the next good reload works.
func TestFaultBadProgramAtReload(t *testing.T) {
	dir := t.TempDir()
	rel := filepath.Join(dir, "releases", "1")
	os.MkdirAll(rel, 0o755)
	prog := filepath.Join(rel, "testserver")
	copyFile(t, bin.server, prog, 0o755)
	current := filepath.Join(dir, "current")
	os.Symlink(rel, current)
	p := start(t, harness.Options{Command: []string{filepath.Join(current, "testserver")}})
	before := getInfo(t, p.Addr())

	for _, tc := range []struct {
		name   string
		break_ func()
		fix    func()
		reason string
	}{
		{"not executable", func() { os.Chmod(prog, 0o644) }, func() { os.Chmod(prog, 0o755) }, "is not an executable file"},
		{"missing", func() { os.Rename(prog, prog+".away") }, func() { os.Rename(prog+".away", prog) }, "no such file or directory"},
		{"dangling symlink", func() {
			os.Remove(current)
			os.Symlink(filepath.Join(dir, "releases", "404"), current)
		}, func() {
			os.Remove(current)
			os.Symlink(rel, current)
		}, "no such file or directory"},
		{"not a program", func() {
			os.Rename(prog, prog+".away")
			os.WriteFile(prog, []byte("\x00\x01garbage"), 0o755)
		}, func() { os.Rename(prog+".away", prog) }, "exit status 127"},
	} {
		tc.break_()
		failed := p.Status().ReloadsFailed
		p.Signal(syscall.SIGHUP)
		st := p.WaitStatus(10*time.Second, func(s harness.Status) bool { return s.ReloadsFailed > failed })
		if !strings.Contains(st.LastFailure, tc.reason) {
			t.Errorf("%s: last failure %q, want %q", tc.name, st.LastFailure, tc.reason)
		}
		t.Logf("%s: %s", tc.name, st.LastFailure)
		if in := getInfo(t, p.Addr()); in.PID != before.PID {
			t.Errorf("%s: pid %d serves, want the untouched %d", tc.name, in.PID, before.PID)
		}
		tc.fix()
	}
	g := p.ReloadDrained()
	if in := getInfo(t, p.Addr()); in.PID != g.PID {
		t.Errorf("after the fixes: pid %d serves, want %d", in.PID, g.PID)
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// hitless's open-files limit lowered so that a reload cannot get a single
// descriptor: the reload fails with EMFILE, the serving child keeps
// serving, and once the limit is back the next reload works.
func TestFaultNoFileDescriptors(t *testing.T) {
	p := start(t, harness.Options{})
	before := getInfo(t, p.Addr())
	pid := p.PID()
	used := map[int]bool{}
	for _, fd := range fdNumbers(t, pid) {
		used[fd] = true
	}
	lowest := 0
	for used[lowest] {
		lowest++
	}
	var old unix.Rlimit
	lim := unix.Rlimit{Cur: uint64(lowest), Max: 0}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Skipf("prlimit: %v", err)
	}
	lim.Max = old.Max
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Skipf("prlimit: %v", err)
	}
	m := p.Mark()
	p.Signal(syscall.SIGHUP)
	// The log, not the status: without a descriptor to spare, hitless
	// cannot accept a connection on its control socket either.
	_, r := p.WaitSince(m, 10*time.Second, harness.Is("reload failed"))
	if !strings.Contains(r.Str("reason"), "too many open files") {
		t.Errorf("reason %q, want too many open files", r.Str("reason"))
	}
	t.Logf("with RLIMIT_NOFILE=%d: %s", lowest, r.Str("reason"))
	if in := getInfo(t, p.Addr()); in.PID != before.PID {
		t.Errorf("pid %d serves, want the untouched %d", in.PID, before.PID)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
		t.Fatal(err)
	}
	g := p.ReloadDrained()
	if in := getInfo(t, p.Addr()); in.PID != g.PID {
		t.Errorf("after the limit is back: pid %d serves, want %d", in.PID, g.PID)
	}
}

// Malformed, oversized and forged messages on a child's notify socket:
// junk from the child itself is logged and skipped, and its READY=1 after
// it still counts; READY=1 forged by a process outside the child's tree is
// ignored, so a child that never gets ready still fails its reload.
func TestFaultNotifyMessages(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	p := start(t, harness.Options{Args: []string{"--ready-timeout", "2s"}}, "-mode-file", modeFile)

	// From inside the tree: junk, then the real READY=1.
	os.WriteFile(modeFile, []byte("notify-junk"), 0o644)
	m := p.Mark()
	if g := p.Reload(); g.Generation != 2 {
		t.Fatalf("generation %d serves, want 2", g.Generation)
	}
	// What hitless made of the junk is in its log alone.
	var bad []string
	for _, r := range p.Records(m) {
		if r.Msg() == "notify socket: bad message" {
			bad = append(bad, r.Str("err"))
		}
	}
	if len(bad) == 0 || !strings.Contains(strings.Join(bad, "|"), "larger than") {
		t.Errorf("bad-message records %q, want the oversized datagram rejected", bad)
	}
	t.Logf("rejected from the child: %q", bad)

	// From outside the tree: READY=1 for a child that hangs.
	os.WriteFile(modeFile, []byte("hang"), 0o644)
	m = p.Mark()
	p.Signal(syscall.SIGHUP)
	st := p.WaitStatus(10*time.Second, func(s harness.Status) bool { _, ok := s.Gen(3); return ok })
	g, _ := st.Gen(3)
	hangPID := g.PID
	sock := childEnv(t, hangPID, "NOTIFY_SOCKET")
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatalf("dial %s: %v", sock, err)
	}
	c.Write([]byte("READY=1\nMAINPID=1\nSTATUS=forged"))
	c.Close()
	// That the message was ignored, and whose it was, is in the log alone.
	_, r := p.WaitSince(m, 10*time.Second, harness.Is("notify socket: message from a process outside the child's tree ignored"))
	if r.Int("sender_pid") != os.Getpid() {
		t.Errorf("ignored sender %d, want this test's pid %d", r.Int("sender_pid"), os.Getpid())
	}
	st = p.WaitStatus(10*time.Second, func(s harness.Status) bool { return s.ReloadsFailed == 1 })
	mustContain(t, "last failure", st.LastFailure, fmt.Sprintf("generation 3 (pid %d)", hangPID), "not ready within")
	if in := getInfo(t, p.Addr()); in.Generation != "2" {
		t.Errorf("generation %s serves, want 2", in.Generation)
	}
}

// childEnv reads one variable from the environment pid was started with.
func childEnv(t *testing.T, pid int, key string) string {
	t.Helper()
	var env []byte
	waitUntil(t, 5*time.Second, "child environment readable", func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		env = b
		return err == nil && strings.Contains("\x00"+string(b), "\x00"+key+"=")
	})
	for kv := range strings.SplitSeq(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	t.Fatalf("%s not in the environment of %d", key, pid)
	return ""
}

// Generations that exited must not be kept for the life of hitless: 300
// failed reloads of a child that writes 32 KiB to stderr must not grow
// hitless's resident memory by more than 8 MiB (20 MiB with the race
// detector, whose shadow memory moves more). Measured without the race
// detector: 2.6 MiB with exited generations released, 13.6 MiB when the
// supervisor kept them all (each with its stderr tail).
func TestFaultExitedGenerationsReleased(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	p := start(t, harness.Options{}, "-mode-file", modeFile)
	os.WriteFile(modeFile, []byte("exit-loud"), 0o644)
	// Through the control socket, which answers when the reload has
	// failed: one command per reload rather than a poll of the status.
	fail := func() {
		t.Helper()
		if res := ctl(t, 10*time.Second, p, "reload"); res.Code != 1 {
			t.Fatalf("hitless reload of a child that exits: %s, want exit status 1", res)
		}
	}
	for range 20 { // warm up
		fail()
	}
	rss0 := usage(t, p.PID()).RSS
	for range 300 {
		fail()
	}
	rss1 := usage(t, p.PID()).RSS
	if st := p.Status(); st.ReloadsFailed != 320 {
		t.Errorf("%d failed reloads counted, want 320", st.ReloadsFailed)
	}
	t.Logf("hitless RSS %d KiB -> %d KiB after 300 failed reloads", rss0>>10, rss1>>10)
	limit := int64(8 << 20)
	if raceEnabled {
		limit = 20 << 20
	}
	if rss1-rss0 > limit {
		t.Errorf("hitless grew by %d KiB over 300 exited generations", (rss1-rss0)>>10)
	}
}

// A new child that serves but never says it is ready (a server run with
// the wrong --ready) fails the reload, yet it has taken connections from
// the shared queue: it is drained like an old generation, so every
// request it accepted is answered, and the serving child is untouched.
func TestFaultServesButNeverReady(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	p := start(t, harness.Options{Args: []string{"--ready-timeout", "1s"}}, "-mode-file", modeFile)
	before := getInfo(t, p.Addr())
	ka := work(p.Addr(), 4, true, 20*time.Millisecond)
	defer ka.Stop()
	pr := work(p.Addr(), 4, false, 20*time.Millisecond)
	defer pr.Stop()
	waitOK(t, ka, 20)
	os.WriteFile(modeFile, []byte("silent"), 0o644)
	m := p.Mark()
	p.Signal(syscall.SIGHUP)
	st := p.WaitStatus(10*time.Second, func(s harness.Status) bool { return s.ReloadsFailed == 1 })
	mustContain(t, "last failure", st.LastFailure, "generation 2 (pid ", "not ready within 1s")
	// How the failed child ended is in the log alone.
	_, d := p.WaitSince(m, 10*time.Second, harness.Is("failed generation drained"))
	if d.Int("generation") != 2 || !strings.Contains(st.LastFailure, fmt.Sprintf("(pid %d)", d.Int("pid"))) || d.Str("status") != "exit status 0" {
		t.Errorf("failed child ended %v, want generation 2 of %q drained with exit status 0", d, st.LastFailure)
	}
	waitOK(t, ka, 20)
	for name, res := range map[string]*harness.Tally{"keep-alive": ka.Stop(), "per-request": pr.Stop()} {
		t.Logf("%s: %s", name, res)
		if res.Failed() != 0 {
			t.Errorf("%s: requests failed across a reload whose child never became ready: %s", name, res)
		}
	}
	if in := getInfo(t, p.Addr()); in.PID != before.PID {
		t.Errorf("pid %d serves, want the untouched %d", in.PID, before.PID)
	}
}
