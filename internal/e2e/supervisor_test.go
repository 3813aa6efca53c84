//go:build linux

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/harness"
)

// The socket is bound once: every generation sees the same kernel socket,
// with the systemd contract exactly (LISTEN_PID is the child's own pid),
// the compatibility variables, a private NOTIFY_SOCKET, and no other fd.
func TestChildContract(t *testing.T) {
	p := start(t, harness.Options{
		Args: []string{"--listen", "http=tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0"},
		Env:  []string{"NOTIFY_SOCKET=/nonexistent/systemd.sock", "LISTEN_PIDFDID=1234", "LISTEN_FDS=7"},
	})
	port2 := p.Addrs()[1]
	var first info
	for gen := 1; gen <= 3; gen++ {
		in := getInfo(t, p.Addr())
		if gen == 1 {
			first = in
		} else {
			p.ReloadDrained()
			in = getInfo(t, p.Addr())
		}
		if in.Generation != strconv.Itoa(gen) {
			t.Fatalf("generation %q, want %d", in.Generation, gen)
		}
		if in.Inode == 0 || in.Inode != first.Inode {
			t.Errorf("gen %d: socket inode %d, first generation had %d", gen, in.Inode, first.Inode)
		}
		want := map[string]string{
			"LISTEN_PID":                strconv.Itoa(in.PID),
			"LISTEN_FDS":                "2",
			"LISTEN_FDNAMES":            "http:tcp-0",
			"SERVER_STARTER_PORT":       p.Addr() + "=3;" + port2 + "=4",
			"SERVER_STARTER_GENERATION": strconv.Itoa(gen),
			"EINHORN_FD_COUNT":          "2",
			"EINHORN_FD_0":              "3",
			"EINHORN_FD_1":              "4",
			"EINHORN_FDS":               "3 4",
			"HITLESS_GENERATION":        strconv.Itoa(gen),
		}
		for k, v := range want {
			if in.Env[k] != v {
				t.Errorf("gen %d: %s=%q, want %q", gen, k, in.Env[k], v)
			}
		}
		if _, ok := in.Env["LISTEN_PIDFDID"]; ok {
			t.Errorf("gen %d: LISTEN_PIDFDID leaked into the child", gen)
		}
		if ns := in.Env["NOTIFY_SOCKET"]; ns == "" || ns == "/nonexistent/systemd.sock" {
			t.Errorf("gen %d: NOTIFY_SOCKET=%q, want a private socket", gen, ns)
		}
		if in.PGID != in.PID {
			t.Errorf("gen %d: child is not its own process group leader (pgid %d)", gen, in.PGID)
		}
		// Beyond stdio and the two sockets, no descriptor of the child may
		// share an open file description with hitless: kcmp(2) tells.
		hpid := p.PID()
		for _, fd := range in.FDs {
			n, target, _ := strings.Cut(fd, " -> ")
			num, _ := strconv.Atoi(n)
			if num <= 4 || target == "" {
				// Beyond the sockets; an fd without a target was the
				// directory being listed, closed since, its number
				// free for whatever the child opened later.
				continue
			}
			for _, hfd := range fdNumbers(t, hpid) {
				if sameFile(in.PID, hpid, num, hfd) {
					t.Errorf("gen %d: child fd %s is hitless's fd %d", gen, fd, hfd)
				}
			}
		}
	}
}

// The shared socket stays non-blocking: hitless never calls Fd() on it
// (which would clear O_NONBLOCK on the open file description that every
// generation shares, and leave an old Go child's accept blocked).
func TestSocketStaysNonBlocking(t *testing.T) {
	p := start(t, harness.Options{})
	in := getInfo(t, p.Addr())
	p.ReloadDrained()
	p.ReloadDrained()
	hpid := p.PID()
	want := fmt.Sprintf("socket:[%d]", in.Inode)
	found := false
	for _, fd := range fdNumbers(t, hpid) {
		dir := "/proc/" + strconv.Itoa(hpid)
		if target, _ := os.Readlink(dir + "/fd/" + strconv.Itoa(fd)); target != want {
			continue
		}
		found = true
		b, err := os.ReadFile(dir + "/fdinfo/" + strconv.Itoa(fd))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if flags&syscall.O_NONBLOCK == 0 {
					t.Errorf("hitless fd %d (the socket) lost O_NONBLOCK after reloads: flags %s", fd, strings.TrimSpace(v))
				}
			}
		}
	}
	if !found {
		t.Fatalf("hitless holds no fd for %s", want)
	}
}

func fdNumbers(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		n, _ := strconv.Atoi(e.Name())
		fds = append(fds, n)
	}
	return fds
}

// sameFile reports whether fd1 of pid1 and fd2 of pid2 are the same open
// file description.
func sameFile(pid1, pid2, fd1, fd2 int) bool {
	const kcmpFile = 0
	r, _, errno := syscall.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	return errno == 0 && r == 0
}

// A reload under continuous POST load, which no client retries, loses
// nothing: with keep-alive and with a new connection per request, with a
// fast handler and a slow one.
func TestReloadUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keepAlive bool
		delay     time.Duration
	}{
		{"keepalive-fast", true, 0},
		{"keepalive-slow", true, 50 * time.Millisecond},
		{"per-request-fast", false, 0},
		{"per-request-slow", false, 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, harness.Options{})
			l := work(p.Addr(), 8, tc.keepAlive, tc.delay)
			defer l.Stop()
			const reloads = 5
			for range reloads {
				p.Reload()
			}
			// Let the last old generation drain under load too.
			p.WaitStatus(30*time.Second, gens(1))
			res := l.Stop()
			t.Logf("%d reloads: %s", reloads, res)
			if res.Failed() != 0 || res.OK() == 0 {
				t.Fatalf("want zero failed requests: %s", res)
			}
		})
	}
}

// A new generation that fails in any way leaves the serving one as it was.
func TestFailedReloadKeepsServing(t *testing.T) {
	for _, tc := range []struct {
		mode, reason string
	}{
		{"exit", "exited before ready: exit status 1"},
		{"hang", "not ready within 1s"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			modeFile := filepath.Join(t.TempDir(), "mode")
			p := start(t, harness.Options{Args: []string{"--ready-timeout", "1s"}}, "-mode-file", modeFile)
			before := getInfo(t, p.Addr())
			l := work(p.Addr(), 4, true, 0)
			defer l.Stop()

			os.WriteFile(modeFile, []byte(tc.mode), 0o644)
			p.Signal(syscall.SIGHUP)
			st := p.WaitStatus(20*time.Second, func(s harness.Status) bool { return s.ReloadsFailed == 1 })
			if !strings.HasPrefix(st.LastFailure, "generation 2 ") || !strings.Contains(st.LastFailure, tc.reason) {
				t.Errorf("last failure %q, want generation 2 and reason %q", st.LastFailure, tc.reason)
			}
			// Reaped: hitless lists a generation until it has waited for it.
			p.WaitStatus(5*time.Second, func(s harness.Status) bool { _, ok := s.Gen(2); return !ok })
			// The next reload works again.
			os.WriteFile(modeFile, []byte("serve"), 0o644)
			p.ReloadDrained()
			res := l.Stop()
			t.Logf("load across the failed reload: %s", res)
			if res.Failed() != 0 {
				t.Fatalf("requests failed while a reload failed: %s", res)
			}
			after := getInfo(t, p.Addr())
			if after.Generation != "3" || after.PID == before.PID {
				t.Errorf("after a good reload: generation %s pid %d", after.Generation, after.PID)
			}
		})
	}
}

// An old child that ignores the drain signal is killed at the deadline,
// with its whole process group; the new one serves throughout.
func TestDrainTimeoutKills(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("ignore-term"), 0o644)
	p := start(t, harness.Options{Args: []string{"--drain-timeout", "1s"}}, "-mode-file", modeFile)
	old := getInfo(t, p.Addr())
	os.WriteFile(modeFile, []byte("serve"), 0o644)
	reloadKillsAtDrainTimeout(t, p, old.PID)
	if in := getInfo(t, p.Addr()); in.Generation != "2" {
		t.Errorf("generation %s serves, want 2", in.Generation)
	}
}

// reloadKillsAtDrainTimeout reloads to generation 2 while the old child
// (oldPID) cannot finish within the drain timeout, and checks that its
// process group is killed at the deadline.
func reloadKillsAtDrainTimeout(t *testing.T, p *harness.Hitless, oldPID int) {
	t.Helper()
	m := p.Mark()
	p.Signal(syscall.SIGHUP)
	p.WaitStatus(10*time.Second, serves(2))
	// The kill and how the old child ended show only in the log.
	_, r := p.WaitSince(m, 10*time.Second, harness.Is("drain timeout: killing process group"))
	if r.Int("pid") != oldPID {
		t.Errorf("killed pid %d, want the old child %d", r.Int("pid"), oldPID)
	}
	_, r = p.WaitSince(m, 10*time.Second, harness.Is("drained"))
	if !strings.Contains(r.Str("status"), "SIGKILL") {
		t.Errorf("old child ended with %q, want SIGKILL", r.Str("status"))
	}
}

// Fifty SIGHUPs in a burst: at most one reload queued behind the one in
// flight; one serving child at the end, no zombie, no leaked fd.
func TestSIGHUPBurst(t *testing.T) {
	p := start(t, harness.Options{})
	getInfo(t, p.Addr())
	pid := p.PID()
	p.Reload() // warm up: the first reload opens what every reload keeps
	// The serving child (childproc) sends hitless its hand-over channel
	// after READY=1: count hitless's fds once it has.
	p.WaitStatus(10*time.Second, func(s harness.Status) bool { return gens(1)(s) && servingChannelled(s) })
	fds := usage(t, pid).FDs
	for range 50 {
		p.Signal(syscall.SIGHUP)
	}
	// Wait for the burst's reloads to settle, then make sure the state
	// machine still reloads.
	st := p.WaitStatus(60*time.Second, func(s harness.Status) bool {
		return s.ReloadsOK+s.ReloadsFailed >= 2 && settled(s)
	})
	// One reload in flight, and one queued that every later SIGHUP joins:
	// a burst sent faster than a reload ends starts at most two.
	if n := st.ReloadsOK + st.ReloadsFailed - 1; n > 2 {
		t.Errorf("50 SIGHUPs started %d generations, want at most 2", n)
	}
	t.Logf("50 SIGHUPs started %d generations", st.ReloadsOK+st.ReloadsFailed-1)
	p.ReloadDrained()
	p.WaitStatus(60*time.Second, func(s harness.Status) bool { return settled(s) && servingChannelled(s) })
	in := getInfo(t, p.Addr())
	kids := children(t, pid)
	if len(kids) != 1 || kids[in.PID] == "" {
		t.Fatalf("children of hitless %v, want only the serving pid %d", kids, in.PID)
	}
	if got := usage(t, pid).FDs; got != fds {
		t.Errorf("hitless has %d fds after the burst, %d before", got, fds)
	}
}

// servingChannelled is a status predicate: the serving generation has
// given hitless its hand-over channel (a childproc server does, once
// ready), so hitless holds its descriptor.
func servingChannelled(s harness.Status) bool {
	g, ok := s.Serving()
	return ok && g.HandOver != nil
}

// settled is a status predicate: one generation is left, and it serves,
// and every generation started after the first has had its verdict (with
// no restart after a crash, each is a reload that served or failed).
func settled(s harness.Status) bool {
	g, ok := s.Serving()
	return ok && len(s.Generations) == 1 && g.Generation == 1+s.ReloadsOK+s.ReloadsFailed
}

// Two hundred reloads in a row end with one child, no zombie, and the
// same number of open fds in hitless.
func TestManyReloads(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 30
	}
	p := start(t, harness.Options{})
	pid := p.PID()
	p.Reload()
	p.WaitStatus(10*time.Second, func(s harness.Status) bool { return gens(1)(s) && servingChannelled(s) })
	fds := usage(t, pid).FDs
	// Through the control socket, which answers once the new generation
	// serves: one command per reload rather than a poll of the status
	// (the SIGHUP path is the same machine event, and has its own tests).
	for i := range n {
		if res := ctl(t, 30*time.Second, p, "reload"); res.Code != 0 {
			t.Fatalf("reload %d: %s", i, res)
		}
	}
	if st := p.WaitStatus(30*time.Second, func(s harness.Status) bool { return gens(1)(s) && servingChannelled(s) }); st.Generations[0].Generation != n+2 || st.ReloadsOK != n+1 {
		t.Fatalf("after %d reloads: %+v", n, st)
	}
	in := getInfo(t, p.Addr())
	if kids := children(t, pid); len(kids) != 1 || kids[in.PID] == "" {
		t.Fatalf("children of hitless after %d reloads: %v, want only %d", n, kids, in.PID)
	}
	if got := usage(t, pid).FDs; got != fds {
		t.Errorf("hitless has %d fds after %d reloads, %d before", got, n, fds)
	}
}

// Bad input is refused with exit status 2, a message naming the flag and
// value, and no child started.
func TestBadInput(t *testing.T) {
	busy := freeListener(t)
	marker := filepath.Join(t.TempDir(), "started")
	child := []string{"--", "/bin/sh", "-c", "touch " + marker}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"run", "--lisen", "tcp://127.0.0.1:0"}, "--lisen"},
		{"unknown scheme", []string{"run", "--listen", "sctp://127.0.0.1:80"}, `unknown scheme "sctp"`},
		{"bad port", []string{"run", "--listen", "tcp://127.0.0.1:99999"}, `port "99999"`},
		{"no port", []string{"run", "--listen", "tcp://127.0.0.1"}, "tcp://127.0.0.1"},
		{"busy port", []string{"run", "--listen", "tcp://" + busy}, "address already in use"},
		{"bad ready", []string{"run", "--listen", "tcp://127.0.0.1:0", "--ready", "soon"}, "--ready"},
		{"bad signal", []string{"run", "--listen", "tcp://127.0.0.1:0", "--drain-signal", "SIGFOO"}, "--drain-signal"},
		{"duplicate name", []string{"run", "--listen", "a=tcp://127.0.0.1:0", "--listen", "a=tcp://127.0.0.1:0"}, `name "a"`},
		{"no listen", []string{"run"}, "--listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startRaw(t, nil, append(tc.args, child...)...)
			if code := p.Wait(10 * time.Second); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if out := p.Output(); !strings.Contains(out, tc.want) {
				t.Errorf("message %q does not name %q", out, tc.want)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Errorf("a child was started")
			}
		})
	}
}

func freeListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// The first child goes through the same gate: if it fails, hitless exits
// non-zero with the reason.
func TestFirstChildFails(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("exit"), 0o644)
	p := startRaw(t, nil, "run", "--log-format", "json", "--listen", "tcp://127.0.0.1:0", "--", bin.server, "-mode-file", modeFile)
	if code := p.Wait(10 * time.Second); code == 0 {
		t.Fatal("hitless exited 0 although its first child failed")
	}
	if out := p.Output(); !strings.Contains(out, "first child") || !strings.Contains(out, "exit status 1") {
		t.Errorf("the reason is not given: %s", out)
	}
}

// A serving child that dies is restarted; the socket stays open, so
// clients wait in the backlog instead of being refused.
func TestCrashRestart(t *testing.T) {
	p := start(t, harness.Options{})
	in := getInfo(t, p.Addr())
	syscall.Kill(in.PID, syscall.SIGKILL)
	// A connection made while nothing serves is queued, not refused.
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatalf("connect while the child is down: %v", err)
	}
	c.Close()
	st := p.WaitStatus(10*time.Second, func(s harness.Status) bool { g, ok := s.Serving(); return ok && g.PID != in.PID })
	if g, _ := st.Serving(); g.Generation != 2 {
		t.Errorf("generation %d serves after the crash, want 2", g.Generation)
	}
	if in := getInfo(t, p.Addr()); in.Generation != "2" {
		t.Errorf("generation %s answers", in.Generation)
	}
}

// SIGTERM drains the children and hitless exits with the child's status;
// SIGUSR1 is forwarded to the serving child's group.
func TestStopAndForward(t *testing.T) {
	notify, err := exec.LookPath("systemd-notify")
	if err != nil {
		t.Skip("systemd-notify not installed")
	}
	// Ready once the traps are set: a delay was a guess that a loaded
	// machine (a shim built with -race) lost, and the shell died of the
	// very signal it traps.
	p := start(t, harness.Options{
		Command: []string{"/bin/sh", "-c", `trap 'echo got-usr1 >&2' USR1; trap 'exit 7' TERM; "$0" --ready; while :; do sleep 0.05; done`, notify},
	})
	p.Signal(syscall.SIGUSR1)
	// An act, not a state: only the log and the child's output show it.
	p.WaitFor(10*time.Second, harness.Is("forwarding signal"))
	p.WaitOutput(10*time.Second, "got-usr1")
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 7 {
		t.Errorf("exit code %d, want the child's 7", code)
	}
}

// If hitless is killed outright, its children do not linger on the port.
func TestHitlessKilled(t *testing.T) {
	p := start(t, harness.Options{})
	in := getInfo(t, p.Addr())
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
	waitUntil(t, 10*time.Second, fmt.Sprintf("child %d gone", in.PID), func() bool { return !harness.Alive(in.PID) })
}

// hitless reaps orphans that are re-parented to it.
func TestReapsOrphans(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("orphan"), 0o644)
	p := start(t, harness.Options{}, "-mode-file", modeFile)
	in := getInfo(t, p.Addr())
	pid := p.PID()
	waitUntil(t, 10*time.Second, "orphan reaped", func() bool {
		kids := children(t, pid)
		for k, st := range kids {
			if k != in.PID || st == "Z" {
				return false
			}
		}
		return true
	})
}

// A stale unix socket file is replaced; a live one is refused; hitless
// removes the file it created when it exits.
func TestUnixSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// Closing a listener normally unlinks the file; keep it, as a crash would.
	stale.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	stale.Close()
	p := start(t, harness.Options{Args: []string{"--listen", "unix://" + path + "?mode=0600"}})
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file: %v, mode %v", err, fi.Mode())
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the socket: %v", err)
	}
	c.Close()
	// A second hitless on the same live path refuses it.
	q := startRaw(t, nil, "run", "--listen", "unix://"+path, "--", bin.server)
	if code := q.Wait(10 * time.Second); code != 2 || !strings.Contains(q.Output(), "already in use") {
		t.Errorf("second hitless on a live socket: exit %d, %s", code, q.Output())
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	if _, err := os.Lstat(path); err == nil {
		t.Errorf("socket file %s left behind", path)
	}
}

// A second SIGINT kills at once what the first one is draining.
func TestSecondSIGINT(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("ignore-term"), 0o644)
	p := start(t, harness.Options{}, "-mode-file", modeFile)
	in := getInfo(t, p.Addr())
	m := p.Mark()
	p.Signal(syscall.SIGINT)
	p.WaitStatus(10*time.Second, func(s harness.Status) bool {
		g, ok := s.Gen(1)
		return s.Stopping && ok && g.State == harness.StateDraining
	})
	p.Signal(syscall.SIGINT)
	// An act, not a state: only the log tells.
	p.WaitSince(m, 10*time.Second, harness.Is("second SIGINT: killing every child now"))
	if code := p.Wait(10 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit code %d, want %d (the child was killed)", code, 128+int(syscall.SIGKILL))
	}
	if harness.Alive(in.PID) {
		t.Errorf("child %d still alive", in.PID)
	}
}

// --output-prefix marks every line of the child's output with its
// generation and pid.
func TestOutputPrefix(t *testing.T) {
	p := start(t, harness.Options{Args: []string{"--output-prefix"}})
	in := getInfo(t, p.Addr())
	p.WaitOutput(10*time.Second, fmt.Sprintf("[gen 1 pid %d] ", in.PID))
}

// As PID 1 of a container (a new PID namespace), hitless reloads, reaps
// the orphans re-parented to it, and stops on SIGTERM.
func TestPID1(t *testing.T) {
	requireRoot(t) // to create a PID namespace
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("orphan"), 0o644)
	p := start(t, harness.Options{Wrap: []string{unshare, "--pid", "--fork", "--mount-proc"}}, "-mode-file", modeFile)
	if in := getInfo(t, p.Addr()); in.PPID != 1 {
		t.Fatalf("the child's parent is pid %d inside the namespace, want hitless as 1", in.PPID)
	}
	p.ReloadDrained()
	// The orphan each generation leaves is reaped by hitless as PID 1:
	// only the serving child remains, and it is no zombie.
	waitUntil(t, 10*time.Second, "orphans reaped", func() bool {
		kids := children(t, p.PID())
		for _, state := range kids {
			if state == "Z" {
				return false
			}
		}
		return len(kids) == 1
	})
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// A SIGHUP while the first child is still starting is queued: the first
// child serves, then the queued reload replaces it.
func TestReloadDuringStart(t *testing.T) {
	p := start(t, harness.Options{Args: []string{"--ready", "delay:300ms"}, NoWait: true})
	// The log, not the status: the SIGHUP must land within the 300ms the
	// first child takes, and the test is about the order of events.
	p.WaitFor(10*time.Second, harness.IsGen("started", 1))
	p.Signal(syscall.SIGHUP)
	i, _ := p.WaitSince(0, 10*time.Second, harness.IsGen("serving", 1))
	p.WaitSince(i, 10*time.Second, harness.IsGen("serving", 2))
	p.WaitSince(i, 10*time.Second, harness.IsGen("drained", 1))
}

// SIGTERM while a reload is in flight: the starting child is stopped too,
// and hitless exits with the serving child's status.
func TestStopDuringReload(t *testing.T) {
	p := start(t, harness.Options{Args: []string{"--ready", "delay:2s", "--ready-timeout", "30s"}})
	m := p.Mark()
	p.Signal(syscall.SIGHUP)
	p.WaitStatus(10*time.Second, func(s harness.Status) bool { g, ok := s.Gen(2); return ok && g.State == harness.StateStarting })
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d, want the serving child's 0", code)
	}
	// hitless has exited: how each child ended is in its log alone.
	p.WaitSince(m, time.Second, harness.IsGen("stopped before ready", 2))
	p.WaitSince(m, time.Second, harness.IsGen("stopped", 1))
}

// A reload asked for while a crashed child waits out its restart delay
// runs at once: the operator's fix need not wait for the backoff.
func TestReloadDuringBackoff(t *testing.T) {
	p := start(t, harness.Options{Args: []string{"--backoff-min", "20s", "--backoff-max", "40s"}})
	in := getInfo(t, p.Addr())
	syscall.Kill(in.PID, syscall.SIGKILL)
	// The child is reaped and the restart is 20s away: no generation.
	p.WaitStatus(10*time.Second, gens(0))
	p.Signal(syscall.SIGHUP)
	// Well before the 20s delay would have run out.
	st := p.WaitStatus(10*time.Second, func(s harness.Status) bool { _, ok := s.Serving(); return ok })
	if g, _ := st.Serving(); g.Generation != 2 {
		t.Errorf("generation %d serves, want 2", g.Generation)
	}
}
