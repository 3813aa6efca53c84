//go:build linux

package e2e

// hitless under a fake service manager that owns sockets: one that
// passes a socket unit's sockets, and one that keeps what hitless stores
// in its fd store and passes it back when it starts hitless again, as
// systemd does.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/harness"
	"github.com/hitless/hitless/internal/sdnotify"
)

// manager plays systemd for one service: its notification socket keeps
// what hitless stores (FDSTORE=1) and drops what it removes
// (FDSTOREREMOVE=1); start runs hitless with the sockets of its socket
// units, then those of its store, as systemd passes them.
type manager struct {
	t    *testing.T
	path string
	// units are the socket units' sockets, passed first.
	units []named

	mu      sync.Mutex
	store   []named
	changed chan struct{} // closed and replaced at each change of store
}

type named struct {
	name string
	file *os.File
}

func newManager(t *testing.T) *manager {
	t.Helper()
	m := &manager{t: t, path: filepath.Join(harness.ShortDir(t), "notify"), changed: make(chan struct{})}
	conn, err := sdnotify.Listen(m.path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
		for _, s := range slices.Concat(m.store, m.units) {
			s.file.Close()
		}
	})
	wg.Go(func() {
		for {
			msg, files, err := conn.ReadFDs()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("fake systemd: %v", err)
				continue
			}
			m.receive(msg, files)
		}
	})
	return m
}

func (m *manager) receive(msg sdnotify.Message, files []*os.File) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name, _ := msg.Get("FDNAME")
	if v, _ := msg.Get("FDSTOREREMOVE"); v == "1" {
		m.store = slices.DeleteFunc(m.store, func(s named) bool {
			if s.name == name {
				s.file.Close()
			}
			return s.name == name
		})
	}
	if v, _ := msg.Get("FDSTORE"); v == "1" {
		if name == "" {
			name = "stored"
		}
		for _, f := range files {
			m.store = append(m.store, named{name, f})
		}
		files = nil
	}
	for _, f := range files { // sent without FDSTORE=1: systemd closes them
		f.Close()
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

// waitStore waits until the store holds exactly these names, in order.
func (m *manager) waitStore(d time.Duration, names ...string) {
	m.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		var got []string
		for _, s := range m.store {
			got = append(got, s.name)
		}
		changed := m.changed
		m.mu.Unlock()
		if slices.Equal(got, names) {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			m.t.Fatalf("fd store holds %q, want %q within %v", got, names, d)
		}
	}
}

// passed returns what the manager passes at a start, and the variables
// that say so: the socket units' sockets, then the store's. The files are
// duplicates, for the caller to close once hitless has them, since the
// store may drop its own at any time.
func (m *manager) passed() ([]*os.File, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var files []*os.File
	var names []string
	for _, s := range slices.Concat(m.units, m.store) {
		fd, err := unix.FcntlInt(s.file.Fd(), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			m.t.Fatal(err)
		}
		files = append(files, os.NewFile(uintptr(fd), s.file.Name()))
		names = append(names, s.name)
	}
	env := []string{"NOTIFY_SOCKET=" + m.path}
	if len(files) > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	return files, env
}

// execListenPID runs hitless in the shell's own process with LISTEN_PID
// set to it, as systemd sets it.
var execListenPID = []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`}

// start runs hitless as systemd would (see harness.Start).
func (m *manager) start(o harness.Options, srv ...string) *harness.Hitless {
	m.t.Helper()
	files, env := m.passed()
	defer closeAll(files)
	o.Files, o.Exec, o.Env = files, execListenPID, append(env, o.Env...)
	return start(m.t, o, srv...)
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// launch runs hitless with exactly args as systemd would, and waits for
// nothing.
func (m *manager) launch(args ...string) *harness.Hitless {
	m.t.Helper()
	files, env := m.passed()
	defer closeAll(files)
	return harness.Launch(m.t, harness.Options{Hitless: bin.hitless, Env: env, Files: files, Exec: execListenPID}, args...)
}

// unitSocket binds a TCP socket on 127.0.0.1 as a socket unit does:
// blocking (unless NonBlocking=yes), listening; the manager passes it
// under name.
func (m *manager) unitSocket(name string, nonblock bool) (*os.File, string) {
	m.t.Helper()
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(unix.AF_INET, typ, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "unit socket "+name)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		f.Close()
		m.t.Fatal(err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		f.Close()
		m.t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	m.units = append(m.units, named{name, f})
	return f, fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}

func fileInode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func nonblocking(t *testing.T, f *os.File) bool {
	t.Helper()
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fl&unix.O_NONBLOCK != 0
}

// A socket unit's socket, taken by name (--listen systemd://web): every
// generation serves on that very socket, LISTEN_* in the child as ever;
// the listener's source is systemd; the passed socket's blocking mode is
// left as systemd set it, either way; a passed socket nobody asks for is
// closed, and said so.
func TestSystemdSocketUnit(t *testing.T) {
	m := newManager(t)
	web, addr := m.unitSocket("web", false)
	fast, _ := m.unitSocket("fast", true) // NonBlocking=yes
	m.unitSocket("spare", false)
	p := m.start(harness.Options{Args: []string{"--listen", "systemd://web", "--listen", "f=systemd://fast"}})
	if p.Addr() != addr {
		t.Errorf("hitless listens on %s, the socket unit's is %s", p.Addr(), addr)
	}
	waitClosedUnasked(t, p, "spare")
	st := p.Status()
	var got []string
	for _, l := range st.Listeners {
		got = append(got, l.Name+"="+l.Source+" "+l.Address)
	}
	if want := []string{"web=systemd " + addr}; len(got) != 2 || got[0] != want[0] || !strings.HasPrefix(got[1], "f=systemd ") {
		t.Errorf("listeners %q, want %q and f=systemd", got, want)
	}
	// Go children (childproc) set O_NONBLOCK when they take a socket;
	// fast had it, and hitless cleared nothing.
	if !nonblocking(t, fast) {
		t.Error("the NonBlocking=yes socket lost O_NONBLOCK")
	}
	want := fileInode(t, web)
	for gen := 1; gen <= 3; gen++ {
		if gen > 1 {
			p.ReloadDrained()
		}
		in := getInfo(t, addr)
		if in.Inode != want {
			t.Errorf("generation %d serves on inode %d, the socket unit's is %d", gen, in.Inode, want)
		}
		for k, v := range map[string]string{"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:f", "LISTEN_PID": strconv.Itoa(in.PID)} {
			if in.Env[k] != v {
				t.Errorf("generation %d: %s=%q, want %q", gen, k, in.Env[k], v)
			}
		}
	}
	p.Stop()
	// The socket is systemd's: it still queues connections once hitless
	// is gone.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("after hitless stopped, the socket unit's socket refuses: %v", err)
	}
	c.Close()
}

// hitless leaves the blocking mode of a passed socket as systemd set it:
// a blocking one (the default) reaches a child that never touches the
// flag blocking, and a NonBlocking=yes one non-blocking. Without --listen,
// hitless takes every passed socket, in order, under its name.
func TestSystemdSocketUnitBlocking(t *testing.T) {
	m := newManager(t)
	web, _ := m.unitSocket("web", false)
	fast, _ := m.unitSocket("fast", true)
	p := m.start(harness.Options{NoListen: true, Args: []string{"--ready", "delay:100ms"}, Command: []string{"/bin/sleep", "600"}})
	var got []string
	for _, l := range p.Status().Listeners {
		got = append(got, fmt.Sprintf("%s=%s fd %d", l.Name, l.Source, l.FD))
	}
	if want := "web=systemd fd 3, fast=systemd fd 4"; strings.Join(got, ", ") != want {
		t.Errorf("listeners %q, want %q", got, want)
	}
	if nonblocking(t, web) || !nonblocking(t, fast) {
		t.Errorf("O_NONBLOCK: web %v (want false), fast %v (want true)", nonblocking(t, web), nonblocking(t, fast))
	}
}

// A name systemd did not pass is refused before anything starts, with the
// names it did pass; so is a socket that is not a listening one.
func TestSystemdSocketUnitWrongName(t *testing.T) {
	m := newManager(t)
	m.unitSocket("web", false)
	m.unitSocket("admin", false)
	marker := filepath.Join(t.TempDir(), "started")
	p := m.launch("run", "--listen", "systemd://nope", "--", "/bin/sh", "-c", "touch "+marker)
	if code := p.Wait(10 * time.Second); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	mustContain(t, "message", p.Output(), `systemd passed no socket named "nope"`, `it passed "web", "admin"`)
	if _, err := os.Stat(marker); err == nil {
		t.Error("a child was started")
	}
}

// A crash of hitless under systemd refuses nothing: hitless stores the
// socket it bound in the fd store; SIGKILL under POST load (keep-alive
// and connection-per-request) kills it and, through the watcher, its
// children; the manager starts it again a second later with the stored
// socket, and it takes it back by name. Connections made meanwhile wait in
// the socket's queue, which the store holds: none is refused, and only
// the requests in flight on the killed children's connections fail.
func TestSystemdFDStoreCrash(t *testing.T) {
	m := newManager(t)
	opts := harness.Options{Env: []string{"FDSTORE=16"}} // systemd 254 says the store is on
	p1 := m.start(opts)
	m.waitStore(10*time.Second, "http")
	addr := p1.Addr()
	child := getInfo(t, addr)

	const workers = 4
	ka := work(addr, workers, true, 0)
	defer ka.Stop()
	pr := work(addr, workers, false, 0)
	defer pr.Stop()
	waitOK(t, ka, 50)
	waitOK(t, pr, 50)

	p1.Signal(syscall.SIGKILL)
	p1.Wait(10 * time.Second)
	waitUntil(t, 10*time.Second, fmt.Sprintf("child %d gone", child.PID), func() bool { return !harness.Alive(child.PID) })
	// RestartSec=1s: the downtime to survive, not a wait for something.
	time.Sleep(time.Second)

	p2 := m.start(opts)
	if p2.Addr() != addr {
		t.Fatalf("after the restart hitless listens on %s, before on %s", p2.Addr(), addr)
	}
	r := p2.WaitFor(5*time.Second, harness.Is("sockets"))
	if r.Int("store") != 1 || r.Int("bound") != 0 {
		t.Errorf("after the restart: %s, want the stored socket taken back and nothing bound", r)
	}
	if l := p2.Status().Listeners; len(l) != 1 || l[0].Source != "store" || l[0].Name != "http" {
		t.Errorf("listeners %+v, want http from the store", l)
	}
	waitOK(t, ka, 50)
	waitOK(t, pr, 50)
	m.waitStore(time.Second, "http") // stored once, never again
	// What fails is what the killed children held: a request each worker
	// had in flight, and, for a keep-alive worker, the next one it sent on
	// another pooled connection the child had taken; none timed out.
	loads := map[string]*harness.Tally{"keep-alive": ka.Stop(), "per-request": pr.Stop()}
	heldOnly(t, "across a crash of hitless", workers, loads)
	for name, res := range loads {
		if n := res.Count(harness.Timeout); n > 0 {
			t.Errorf("%s: %d requests timed out, want none", name, n)
		}
	}
}

// The store holds what the configuration says: --fdstore (systemd older
// than 254 does not say $FDSTORE) stores every socket hitless binds; a
// socket removed from the configuration is dropped from the store at the
// next start (FDSTOREREMOVE=1), and its descriptor closed.
func TestSystemdFDStoreRemove(t *testing.T) {
	m := newManager(t)
	p := m.start(harness.Options{Args: []string{"--fdstore", "--listen", "a=tcp://127.0.0.1:0", "--listen", "b=tcp://127.0.0.1:0"}})
	m.waitStore(10*time.Second, "a", "b")
	addrA := p.Addrs()[0]
	p.Stop()

	p = m.start(harness.Options{Args: []string{"--fdstore", "--listen", "a=tcp://127.0.0.1:0"}})
	m.waitStore(10*time.Second, "a")
	if p.Addr() != addrA {
		t.Errorf("socket a on %s, stored on %s", p.Addr(), addrA)
	}
	waitClosedUnasked(t, p, "b")
}

// waitClosedUnasked waits for p to log that it closed the socket systemd
// passed under name, which no --listen asks for.
func waitClosedUnasked(t *testing.T, p *harness.Hitless, name string) {
	t.Helper()
	p.WaitFor(5*time.Second, func(r harness.Record) bool {
		return r.Msg() == "closing a socket systemd passed that no --listen asks for" && r.Str("name") == name
	})
}
