//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// These tests run children nobody here wrote the way childproc would: a
// blocking Python server, a shell wrapper without exec, a pre-fork
// master, a child that drops privileges itself, and readiness from a
// one-shot sender.

const python = "/usr/bin/python3"

// notifyReady is a shell command that sends READY=1 to $NOTIFY_SOCKET
// from a one-shot Python process, which exits at once.
const notifyReady = python + ` -c 'import os, socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])'`

// pyServer returns the command that runs testdata/pyserver.py with args,
// from a copy that any user can read.
func pyServer(t *testing.T, args ...string) []string {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Skipf("%s: %v", python, err)
	}
	dir := worldReadableDir(t)
	src, err := os.ReadFile("testdata/pyserver.py")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pyserver.py")
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	return append([]string{python, path}, args...)
}

// worldReadableDir is a directory that a child running as another user
// can read.
func worldReadableDir(t *testing.T) string {
	dir := harness.ShortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// py is what pyserver.py answered.
type py struct {
	Role           string
	PID, PPID, UID int
	Gen            string
	NonBlock       bool
}

func askPy(t *testing.T, addr string) py {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r py
	for _, f := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(f, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "role":
			r.Role = v
		case "pid":
			r.PID = n
		case "ppid":
			r.PPID = n
		case "uid":
			r.UID = n
		case "gen":
			r.Gen = v
		case "nonblock":
			r.NonBlock = v == "1"
		}
	}
	if r.PID == 0 {
		t.Fatalf("pyserver answered %q", b)
	}
	return r
}

// A blocking accept() server gets the socket as systemd hands it: in
// blocking mode. Before, it got O_NONBLOCK, died of BlockingIOError at its
// first idle accept, and was restarted forever.
func TestBlockingPythonServer(t *testing.T) {
	p := start(t, harness.Options{Command: pyServer(t, "serve")})
	first := askPy(t, p.Addr())
	if first.NonBlock {
		t.Error("the socket reached the child with O_NONBLOCK set")
	}
	for range 20 {
		if r := askPy(t, p.Addr()); r.PID != first.PID {
			t.Fatalf("answered by pid %d, then %d: the server was restarted", first.PID, r.PID)
		}
	}
	g := p.Reload()
	if r := askPy(t, p.Addr()); r.PID != g.PID || r.Gen != "2" {
		t.Errorf("after a reload: %+v, want generation 2 (pid %d)", r, g.PID)
	}
	if st := p.Status(); st.Restarts != 0 || st.ReloadsFailed != 0 {
		t.Errorf("restarts %d, failed starts %d", st.Restarts, st.ReloadsFailed)
	}
	// ?nonblock=1 keeps the flag, as systemd's NonBlocking=yes does.
	q := start(t, harness.Options{Command: pyServer(t, "serve"), Args: []string{"--listen", "tcp://127.0.0.1:0?nonblock=1"}, NoWait: true})
	q.WaitStatus(10*time.Second, func(s harness.Status) bool { return s.Restarts > 0 || s.ReloadsFailed > 0 })
}

// killHitless sends hitless SIGKILL and checks that within a second its
// port refuses connections and none of pids is left.
func killHitless(t *testing.T, p *harness.Hitless, pids ...int) {
	t.Helper()
	addr := p.Addr()
	p.Signal(syscall.SIGKILL)
	killed := time.Now()
	// Both within a second of the kill: waitUntil's bound is what is left.
	// hitless's exit is waited for only after: it is seen when its
	// stderr closes, which the watcher shares, so it would time the
	// watcher too.
	waitUntil(t, time.Until(killed.Add(time.Second)), fmt.Sprintf("%s refusing within a second of the SIGKILL", addr), func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	waitUntil(t, time.Until(killed.Add(time.Second)), fmt.Sprintf("pids %v gone within a second of the SIGKILL", pids), func() bool {
		for _, pid := range pids {
			if harness.Alive(pid) {
				return false
			}
		}
		return true
	})
	t.Logf("port refused and the tree gone %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
	p.Wait(10 * time.Second)
}

// A wrapper script that does not exec: the server is hitless's
// grandchild, which only a signal to the whole process group reaches.
// When hitless is killed, the watcher kills the group.
func TestShellWrapperWithoutExec(t *testing.T) {
	cmd := pyServer(t, "serve")
	wrapper := []string{"/bin/sh", "-c", `"$@"; echo "server exited: $?"`, "sh"}
	p := start(t, harness.Options{Command: append(wrapper, cmd...)})
	r := askPy(t, p.Addr())
	g, _ := p.Status().Serving()
	if r.PID == g.PID {
		t.Fatal("the shell exec'ed the server: not the case under test")
	}
	// Readiness came from the grandchild, and a reload drains both.
	g2 := p.Reload()
	if r2 := askPy(t, p.Addr()); r2.PPID != g2.PID {
		t.Errorf("after a reload answered by %+v, want the child of %d", r2, g2.PID)
	}
	r2 := askPy(t, p.Addr())
	killHitless(t, p, g2.PID, r2.PID)
}

// A pre-fork master with two workers: killing hitless leaves none of
// them on the port.
func TestPreforkMaster(t *testing.T) {
	p := start(t, harness.Options{Command: pyServer(t, "prefork", "2")})
	g, _ := p.Status().Serving()
	workers := map[int]bool{}
	for range 30 {
		r := askPy(t, p.Addr())
		if r.Role != "worker" || r.PPID != g.PID {
			t.Fatalf("answered by %+v, want a worker of %d", r, g.PID)
		}
		workers[r.PID] = true
	}
	g2 := p.ReloadDrained()
	pids := []int{g2.PID}
	for range 30 {
		pids = append(pids, askPy(t, p.Addr()).PID)
	}
	killHitless(t, p, pids...)
}

// A child that drops privileges itself (setpriv) can still say READY=1:
// its notify socket is reachable by any user, the sender checked by its
// credentials.
func TestChildDropsPrivileges(t *testing.T) {
	requireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv:", err)
	}
	cmd := append([]string{setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"}, pyServer(t, "serve")...)
	p := start(t, harness.Options{Command: cmd})
	if r := askPy(t, p.Addr()); r.UID != 65534 {
		t.Errorf("served as uid %d, want nobody", r.UID)
	}
	p.Reload()
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// hitless run --user nobody: hitless keeps root, the children run as
// nobody, and reloads under load fail no request.
func TestRunAsUser(t *testing.T) {
	requireRoot(t)
	p := start(t, harness.Options{Args: []string{"--user", "nobody"}})
	in := getInfo(t, p.Addr())
	if uids := procField(t, in.PID, "Uid:"); uids != "65534\t65534\t65534\t65534" {
		t.Errorf("child uids %q, want nobody's", uids)
	}
	if groups := procField(t, in.PID, "Groups:"); groups != "" && groups != "65534" {
		t.Errorf("child groups %q, want none of root's", groups)
	}
	if home, user := childEnv(t, in.PID, "HOME"), childEnv(t, in.PID, "USER"); home != "/nonexistent" || user != "nobody" {
		t.Errorf("child HOME %q USER %q", home, user)
	}
	for _, keepAlive := range []bool{true, false} {
		load := harness.StartLoad(t.Context(), harness.LoadOptions{URL: harness.WorkURL(p.Addr(), 0), Workers: 4, KeepAlive: keepAlive, Duration: time.Minute})
		waitOK(t, load, 50)
		for range 3 {
			p.Reload()
			waitOK(t, load, 50)
		}
		if tally := load.Stop(); tally.Failed() != 0 {
			t.Errorf("keep-alive %v: %s", keepAlive, tally)
		} else {
			t.Logf("keep-alive %v: %s", keepAlive, tally)
		}
	}
}

func procField(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// READY=1 from a helper that sends it and exits at once: the sender is
// gone before hitless reads the datagram, so its ancestry cannot be
// looked up. About one start in ten failed; every one must succeed.
func TestReadyFromOneShotSender(t *testing.T) {
	senders := map[string]string{"python": notifyReady}
	if path, err := exec.LookPath("systemd-notify"); err == nil {
		senders["systemd-notify"] = path + " --ready"
	}
	for name, send := range senders {
		t.Run(name, func(t *testing.T) {
			starts := 100
			if name != "python" {
				starts = 30
			}
			p := start(t, harness.Options{Command: []string{"/bin/sh", "-c", send + "; exec sleep 1000"}})
			for i := range starts {
				if res := ctl(t, 30*time.Second, p, "reload"); res.Code != 0 {
					t.Fatalf("start %d of %d: %s", i+2, starts+1, res)
				}
			}
			if st := p.Status(); st.ReloadsOK != starts || st.ReloadsFailed != 0 {
				t.Errorf("reloads ok %d, failed %d", st.ReloadsOK, st.ReloadsFailed)
			}
			if n := strings.Count(p.Output(), "outside the child's tree"); n != 0 {
				t.Errorf("%d notifications refused", n)
			}
		})
	}
}

// A SIGKILL of hitless leaves its notify directory behind; the next
// hitless removes it.
func TestStaleNotifyDirectorySwept(t *testing.T) {
	// A $TMPDIR of the test's own: any other hitless on the machine (the
	// supervisor package's tests, run beside these) sweeps the killed
	// one's directory too, and may come first.
	opts := harness.Options{Env: []string{"TMPDIR=" + worldReadableDir(t)}}
	p := start(t, opts)
	dir := filepath.Dir(getInfo(t, p.Addr()).Env["NOTIFY_SOCKET"])
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o711 {
		t.Fatalf("notify directory %s: %v %v", dir, fi, err)
	}
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the directory of the killed hitless: %v", err)
	}
	start(t, opts)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed hitless's directory %s is still there: %v", dir, err)
	}
}
