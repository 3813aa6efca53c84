package e2e

import (
	"context"
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
)

// The socket is bound once: every generation sees the same kernel socket,
// with the systemd contract exactly (LISTEN_PID is the child's own pid),
// the compatibility variables, a private NOTIFY_SOCKET, and no other fd.
func TestChildContract(t *testing.T) {
	p := startHitless(t, opts{
		args: []string{"--listen", "http=tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0"},
		env:  []string{"NOTIFY_SOCKET=/nonexistent/systemd.sock", "LISTEN_PIDFDID=1234", "LISTEN_FDS=7"},
	})
	port2 := strings.Fields(p.waitFor(time.Second, msgIs("listening")).str("sockets"))[1]
	var first info
	for gen := 1; gen <= 3; gen++ {
		in := getInfo(t, p.addr)
		if gen == 1 {
			first = in
		} else {
			p.reloadDrained()
			in = getInfo(t, p.addr)
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
			"SERVER_STARTER_PORT":       p.addr + "=3;" + port2 + "=4",
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
		hpid := p.pid()
		for _, fd := range in.FDs {
			n, _, _ := strings.Cut(fd, " -> ")
			num, _ := strconv.Atoi(n)
			if num <= 4 {
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
	p := startHitless(t, opts{})
	in := getInfo(t, p.addr)
	p.reloadDrained()
	p.reloadDrained()
	hpid := p.pid()
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
		ms        int
	}{
		{"keepalive-fast", true, 0},
		{"keepalive-slow", true, 50},
		{"per-request-fast", false, 0},
		{"per-request-slow", false, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startHitless(t, opts{})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			done := make(chan *loadResult)
			go func() { done <- load(ctx, p.addr, 8, tc.keepAlive, tc.ms, 1_000_000) }()
			const reloads = 5
			for range reloads {
				p.reload()
			}
			// Let the last old generation drain under load too.
			p.waitFor(30*time.Second, func(r record) bool { return r.msg() == "drained" && r.int("generation") == reloads })
			cancel()
			res := <-done
			t.Logf("%d reloads: %s", reloads, res)
			if res.failed.Load() != 0 || res.ok.Load() == 0 {
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
			p := startHitless(t, opts{args: []string{"--ready-timeout", "1s"}, srv: []string{"-mode-file", modeFile}})
			before := getInfo(t, p.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan *loadResult)
			go func() { done <- load(ctx, p.addr, 4, true, 0, 1_000_000) }()

			os.WriteFile(modeFile, []byte(tc.mode), 0o644)
			m := p.mark()
			p.signal(syscall.SIGHUP)
			_, r := p.waitSince(m, 20*time.Second, msgIs("reload failed"))
			if r.int("generation") != 2 || !strings.Contains(r.str("reason"), tc.reason) {
				t.Errorf("failure record %v, want generation 2 and reason %q", r, tc.reason)
			}
			failedPID := r.int("pid")
			waitUntil(t, 5*time.Second, "failed child reaped", func() bool { return !alive(failedPID) })
			// The next reload works again.
			os.WriteFile(modeFile, []byte("serve"), 0o644)
			p.reloadDrained()
			cancel()
			res := <-done
			t.Logf("load across the failed reload: %s", res)
			if res.failed.Load() != 0 {
				t.Fatalf("requests failed while a reload failed: %s", res)
			}
			after := getInfo(t, p.addr)
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
	p := startHitless(t, opts{args: []string{"--drain-timeout", "1s"}, srv: []string{"-mode-file", modeFile}})
	old := getInfo(t, p.addr)
	os.WriteFile(modeFile, []byte("serve"), 0o644)
	m := p.mark()
	p.signal(syscall.SIGHUP)
	p.waitSince(m, 10*time.Second, msgIs("serving"))
	_, r := p.waitSince(m, 10*time.Second, msgIs("drain timeout: killing process group"))
	if r.int("pid") != old.PID {
		t.Errorf("killed pid %d, want %d", r.int("pid"), old.PID)
	}
	_, r = p.waitSince(m, 10*time.Second, msgIs("drained"))
	if !strings.Contains(r.str("status"), "SIGKILL") {
		t.Errorf("old child ended with %q, want SIGKILL", r.str("status"))
	}
	if in := getInfo(t, p.addr); in.Generation != "2" {
		t.Errorf("generation %s serves, want 2", in.Generation)
	}
}

// Fifty SIGHUPs in a burst: at most one reload queued behind the one in
// flight; one serving child at the end, no zombie, no leaked fd.
func TestSIGHUPBurst(t *testing.T) {
	p := startHitless(t, opts{})
	getInfo(t, p.addr)
	pid := p.pid()
	p.reload() // warm up: the first reload opens what every reload keeps
	p.waitFor(10*time.Second, msgIs("drained"))
	fds := fdCount(t, pid)
	m := p.mark()
	for range 50 {
		p.signal(syscall.SIGHUP)
	}
	// Signals coalesce, so the burst starts one to fifty reloads; wait
	// for them to settle, then make sure the state machine still reloads.
	p.waitSince(m, 10*time.Second, msgIs("started"))
	waitQuiet(t, p)
	burst := 0
	p.mu.Lock()
	for _, r := range p.records[m:] {
		if r.msg() == "started" {
			burst++
		}
	}
	p.mu.Unlock()
	t.Logf("50 SIGHUPs started %d generations", burst)
	p.reloadDrained()
	waitQuiet(t, p)
	in := getInfo(t, p.addr)
	kids := children(t, pid)
	if len(kids) != 1 || kids[in.PID] == "" {
		t.Fatalf("children of hitless %v, want only the serving pid %d", kids, in.PID)
	}
	if got := fdCount(t, pid); got != fds {
		t.Errorf("hitless has %d fds after the burst, %d before", got, fds)
	}
}

// waitQuiet waits until the newest generation serves and every older one
// has been drained or has failed, by the log.
func waitQuiet(t *testing.T, p *proc) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		started, settled := map[int]bool{}, map[int]bool{}
		last, serving := 0, 0
		p.mu.Lock()
		for _, r := range p.records {
			g := r.int("generation")
			switch r.msg() {
			case "started":
				started[g] = true
				last = max(last, g)
			case "serving":
				serving = g
			case "drained", "reload failed", "restart failed":
				settled[g] = true
			}
		}
		changed := p.changed
		p.mu.Unlock()
		quiet := serving == last
		for g := range started {
			if g != last && !settled[g] {
				quiet = false
			}
		}
		if quiet {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("reloads did not settle: started %v settled %v serving %d", started, settled, serving)
		}
	}
}

// Two hundred reloads in a row end with one child, no zombie, and the
// same number of open fds in hitless.
func TestManyReloads(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 30
	}
	p := startHitless(t, opts{})
	pid := p.pid()
	p.reload()
	p.waitFor(10*time.Second, msgIs("drained"))
	fds := fdCount(t, pid)
	for i := range n {
		if r := p.reload(); r.int("generation") != i+3 {
			t.Fatalf("reload %d: generation %d serves", i, r.int("generation"))
		}
	}
	p.waitFor(30*time.Second, func(r record) bool { return r.msg() == "drained" && r.int("generation") == n+1 })
	in := getInfo(t, p.addr)
	if kids := children(t, pid); len(kids) != 1 || kids[in.PID] == "" {
		t.Fatalf("children of hitless after %d reloads: %v, want only %d", n, kids, in.PID)
	}
	if got := fdCount(t, pid); got != fds {
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
			if code := p.wait(10 * time.Second); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if out := p.logs(); !strings.Contains(out, tc.want) {
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
	if code := p.wait(10 * time.Second); code == 0 {
		t.Fatal("hitless exited 0 although its first child failed")
	}
	if out := p.logs(); !strings.Contains(out, "first child") || !strings.Contains(out, "exit status 1") {
		t.Errorf("the reason is not given: %s", out)
	}
}

// A serving child that dies is restarted; the socket stays open, so
// clients wait in the backlog instead of being refused.
func TestCrashRestart(t *testing.T) {
	p := startHitless(t, opts{})
	in := getInfo(t, p.addr)
	m := p.mark()
	syscall.Kill(in.PID, syscall.SIGKILL)
	// A connection made while nothing serves is queued, not refused.
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatalf("connect while the child is down: %v", err)
	}
	c.Close()
	_, r := p.waitSince(m, 10*time.Second, msgIs("serving"))
	if r.int("generation") != 2 {
		t.Errorf("generation %d serves after the crash, want 2", r.int("generation"))
	}
	if in := getInfo(t, p.addr); in.Generation != "2" {
		t.Errorf("generation %s answers", in.Generation)
	}
}

// SIGTERM drains the children and hitless exits with the child's status;
// SIGUSR1 is forwarded to the serving child's group.
func TestStopAndForward(t *testing.T) {
	p := startHitless(t, opts{cmd: []string{"/bin/sh", "-c", `trap 'echo got-usr1 >&2' USR1; trap 'exit 7' TERM; while :; do sleep 0.05; done`}, args: []string{"--ready", "delay:200ms"}})
	p.waitFor(10*time.Second, msgIs("serving"))
	p.signal(syscall.SIGUSR1)
	p.waitFor(10*time.Second, msgIs("forwarding signal"))
	waitOutput(t, p, "got-usr1")
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 7 {
		t.Errorf("exit code %d, want the child's 7", code)
	}
}

func waitOutput(t *testing.T, p *proc, s string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		p.mu.Lock()
		ok := strings.Contains(p.output.String(), s)
		changed := p.changed
		p.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("output never contained %q", s)
		}
	}
}

// If hitless is killed outright, its children do not linger on the port.
func TestHitlessKilled(t *testing.T) {
	p := startHitless(t, opts{})
	in := getInfo(t, p.addr)
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	waitUntil(t, 10*time.Second, fmt.Sprintf("child %d gone", in.PID), func() bool { return !alive(in.PID) })
}

// hitless reaps orphans that are re-parented to it.
func TestReapsOrphans(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("orphan"), 0o644)
	p := startHitless(t, opts{srv: []string{"-mode-file", modeFile}})
	in := getInfo(t, p.addr)
	pid := p.pid()
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
	p := startHitless(t, opts{args: []string{"--listen", "unix://" + path + "?mode=0600"}})
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
	if code := q.wait(10 * time.Second); code != 2 || !strings.Contains(q.logs(), "already in use") {
		t.Errorf("second hitless on a live socket: exit %d, %s", code, q.logs())
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
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
	p := startHitless(t, opts{srv: []string{"-mode-file", modeFile}})
	in := getInfo(t, p.addr)
	m := p.mark()
	p.signal(syscall.SIGINT)
	p.waitSince(m, 10*time.Second, msgIs("draining"))
	p.signal(syscall.SIGINT)
	p.waitSince(m, 10*time.Second, msgIs("second SIGINT: killing every child now"))
	if code := p.wait(10 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit code %d, want %d (the child was killed)", code, 128+int(syscall.SIGKILL))
	}
	if alive(in.PID) {
		t.Errorf("child %d still alive", in.PID)
	}
}

// --output-prefix marks every line of the child's output with its
// generation and pid.
func TestOutputPrefix(t *testing.T) {
	p := startHitless(t, opts{args: []string{"--output-prefix"}})
	in := getInfo(t, p.addr)
	waitOutput(t, p, fmt.Sprintf("[gen 1 pid %d] ", in.PID))
}

// As PID 1 of a container (a new PID namespace), hitless reloads, reaps
// the orphans re-parented to it, and stops on SIGTERM.
func TestPID1(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to create a PID namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	modeFile := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(modeFile, []byte("orphan"), 0o644)
	p := startHitless(t, opts{wrap: []string{unshare, "--pid", "--fork", "--mount-proc"}, srv: []string{"-mode-file", modeFile}})
	if in := getInfo(t, p.addr); in.PPID != 1 {
		t.Fatalf("the child's parent is pid %d inside the namespace, want hitless as 1", in.PPID)
	}
	p.reloadDrained()
	// The orphan each generation leaves is reaped by hitless as PID 1:
	// only the serving child remains, and it is no zombie.
	waitUntil(t, 10*time.Second, "orphans reaped", func() bool {
		kids := children(t, p.pid())
		for _, state := range kids {
			if state == "Z" {
				return false
			}
		}
		return len(kids) == 1
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// A SIGHUP while the first child is still starting is queued: the first
// child serves, then the queued reload replaces it.
func TestReloadDuringStart(t *testing.T) {
	p := startHitless(t, opts{args: []string{"--ready", "delay:300ms"}, noWait: true})
	p.waitFor(10*time.Second, func(r record) bool { return r.msg() == "started" && r.int("generation") == 1 })
	p.signal(syscall.SIGHUP)
	i, _ := p.waitSince(0, 10*time.Second, func(r record) bool { return r.msg() == "serving" && r.int("generation") == 1 })
	p.waitSince(i, 10*time.Second, func(r record) bool { return r.msg() == "serving" && r.int("generation") == 2 })
	p.waitSince(i, 10*time.Second, func(r record) bool { return r.msg() == "drained" && r.int("generation") == 1 })
}

// SIGTERM while a reload is in flight: the starting child is stopped too,
// and hitless exits with the serving child's status.
func TestStopDuringReload(t *testing.T) {
	p := startHitless(t, opts{args: []string{"--ready", "delay:2s", "--ready-timeout", "30s"}})
	m := p.mark()
	p.signal(syscall.SIGHUP)
	p.waitSince(m, 10*time.Second, func(r record) bool { return r.msg() == "started" && r.int("generation") == 2 })
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d, want the serving child's 0", code)
	}
	p.waitSince(m, time.Second, func(r record) bool { return r.msg() == "stopped before ready" && r.int("generation") == 2 })
	p.waitSince(m, time.Second, func(r record) bool { return r.msg() == "stopped" && r.int("generation") == 1 })
}

// A reload asked for while a crashed child waits out its restart delay
// runs at once: the operator's fix need not wait for the backoff.
func TestReloadDuringBackoff(t *testing.T) {
	p := startHitless(t, opts{args: []string{"--backoff-min", "20s", "--backoff-max", "40s"}})
	in := getInfo(t, p.addr)
	m := p.mark()
	syscall.Kill(in.PID, syscall.SIGKILL)
	p.waitSince(m, 10*time.Second, msgIs("no serving child: restarting"))
	p.signal(syscall.SIGHUP)
	// Well before the 20s delay would have run out.
	_, r := p.waitSince(m, 10*time.Second, msgIs("serving"))
	if r.int("generation") != 2 {
		t.Errorf("generation %d serves, want 2", r.int("generation"))
	}
}
