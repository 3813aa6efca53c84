//go:build linux

package sockets

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sysSocket makes a socket as a socket unit does, with plain system calls:
// blocking unless nonblock, bound to addr (127.0.0.1, port chosen by the
// kernel, or a unix path), listening if a stream. The test owns it.
func sysSocket(t *testing.T, typ int, unixPath string, nonblock bool) int {
	t.Helper()
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if unixPath != "" {
		family, sa = unix.AF_UNIX, &unix.SockaddrUnix{Name: unixPath}
	}
	if nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	if typ&unix.SOCK_STREAM != 0 {
		if err := unix.Listen(fd, 16); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

func port(t *testing.T, fd int) int {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*unix.SockaddrInet4).Port
}

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// fakeStore records what the supervisor tells the fd store.
type fakeStore struct{ calls []string }

func (f *fakeStore) StoreFD(name string, fd int) error {
	f.calls = append(f.calls, "store "+name)
	return nil
}

func (f *fakeStore) RemoveStoredFD(name string) error {
	f.calls = append(f.calls, "remove "+name)
	return nil
}

// Open takes what systemd passed: systemd://NAME by name, a URL by its
// name and address (what hitless stored) or by its address alone (a
// socket unit's), every passed socket when no --listen is given; it
// refuses a missing name with the names that were passed, and what is
// not a listening or datagram socket with what it is; it closes what it
// does not use, everything on error; and it never changes a passed
// socket's O_NONBLOCK. With an fd store, its plan stores what Open bound
// and drops the names nobody asked for.
func TestPassedSockets(t *testing.T) {
	web := sysSocket(t, unix.SOCK_STREAM, "", false)
	fast := sysSocket(t, unix.SOCK_STREAM, "", true) // NonBlocking=yes
	dns := sysSocket(t, unix.SOCK_DGRAM, "", false)
	usock := filepath.Join(t.TempDir(), "app.sock")
	app := sysSocket(t, unix.SOCK_STREAM, usock, false)
	conn, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(conn)
	if err := unix.Connect(conn, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port(t, web)}); err != nil {
		t.Fatal(err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	orig := map[string]int{"web": web, "fast": fast, "dns": dns, "app": app, "conn": conn, "file": int(null.Fd())}
	webURL := fmt.Sprintf("tcp://127.0.0.1:%d", port(t, web))

	type want struct {
		name, source, passedAs string // passedAs: the passed socket it is, "" if bound
	}
	for _, tc := range []struct {
		name    string
		passed  []string // names of orig, or NAME=orig, passed in this order
		listen  []string
		store   bool
		want    []want
		calls   string // to the fd store
		err     string
		ignored string
	}{
		{name: "by name", passed: []string{"web", "dns"}, listen: []string{"systemd://web", "u=systemd://dns"},
			want: []want{{"web", SourceSystemd, "web"}, {"u", SourceSystemd, "dns"}}},
		{name: "nonblocking, unix", passed: []string{"fast", "app"}, listen: []string{"systemd://app", "systemd://fast"},
			want: []want{{"app", SourceSystemd, "app"}, {"fast", SourceSystemd, "fast"}}},
		{name: "every passed socket", passed: []string{"dns", "web"},
			want: []want{{"dns", SourceSystemd, "dns"}, {"web", SourceSystemd, "web"}}},
		{name: "a URL of a passed address", passed: []string{"dns", "web"}, listen: []string{"http=" + webURL, "unix://" + filepath.Join(t.TempDir(), "other.sock")},
			want: []want{{"http", SourceSystemd, "web"}, {"unix-other.sock", SourceBound, ""}}},
		{name: "stored by name, port 0", passed: []string{"web", "app", "dns"}, listen: []string{"web=tcp://127.0.0.1:0", "app=unix://" + usock, "tcp://127.0.0.1:0"}, store: true,
			want:  []want{{"web", SourceStore, "web"}, {"app", SourceStore, "app"}, {"tcp-0", SourceBound, ""}},
			calls: "remove dns, store tcp-0"},
		{name: "stored, both kinds", passed: []string{"dns", "web"}, listen: []string{"dns=udp://127.0.0.1:0", "web=tcp://127.0.0.1:0"}, store: true,
			want:  []want{{"dns", SourceStore, "dns"}, {"web", SourceStore, "web"}},
			calls: ""},
		{name: "a stored name now bound elsewhere", passed: []string{"web"}, listen: []string{"web=udp://127.0.0.1:0"}, store: true,
			want:  []want{{"web", SourceBound, ""}},
			calls: "remove web, store web"},
		{name: "a stored name twice", passed: []string{"web", "web=dns"}, listen: []string{"web=tcp://127.0.0.1:0"}, store: true,
			want:  []want{{"web", SourceStore, "web"}},
			calls: "remove web, store web"},
		{name: "missing", passed: []string{"web", "dns"}, listen: []string{"systemd://admin"},
			err: `systemd passed no socket named "admin" (a socket unit's FileDescriptorName=, or FDNAME= in the fd store); it passed "web", "dns"`},
		{name: "nothing passed", listen: []string{"systemd://admin"}, err: "systemd passed no sockets (LISTEN_FDS is not set)"},
		{name: "meant for another", listen: []string{"systemd://admin"}, ignored: "LISTEN_FDS=1 ignored: LISTEN_PID=1",
			err: "no sockets to this process: LISTEN_FDS=1 ignored: LISTEN_PID=1"},
		{name: "taken twice", passed: []string{"web"}, listen: []string{"a=systemd://web", "b=systemd://web"}, err: `passed as "web" is taken by another --listen already`},
		{name: "a connection", passed: []string{"conn"}, listen: []string{"systemd://conn"}, err: "not listening: a connection"},
		{name: "a file", passed: []string{"file"}, err: "not a socket"},
		{name: "a busy port", passed: []string{"dns"}, listen: []string{"systemd://dns", "tcp://127.0.0.1:" + fmt.Sprint(port(t, web)) + "?backlog=5"},
			err: "address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flags := map[string]int{}
			for name, fd := range orig {
				flags[name], _ = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
			}
			cfg := Config{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
			cfg.Passed.Ignored = tc.ignored
			for _, name := range tc.passed {
				name, which, ok := strings.Cut(name, "=")
				if !ok {
					which = name
				}
				fd, err := unix.FcntlInt(uintptr(orig[which]), unix.F_DUPFD_CLOEXEC, 3)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Passed.FDs = append(cfg.Passed.FDs, PassedFD{Name: name, FD: fd})
			}
			for _, l := range tc.listen {
				spec, err := ParseListen(l)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Listen = append(cfg.Listen, spec)
			}
			store := &fakeStore{}
			if tc.store {
				cfg.FDStore = store
			}
			socks, plan, err := Open(cfg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Open: %v, want an error containing %q", err, tc.err)
				}
				for _, p := range cfg.Passed.FDs {
					if isOpen(p.FD) {
						t.Errorf("passed fd %d (%s) still open after Open failed", p.FD, p.Name)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			passedAs := map[int]string{}
			for _, p := range cfg.Passed.FDs {
				passedAs[p.FD] = p.Name
			}
			used := map[int]bool{}
			if len(socks) != len(tc.want) {
				t.Fatalf("sockets %+v, want %+v", socks, tc.want)
			}
			for i, w := range tc.want {
				sock := socks[i]
				got := want{sock.Spec.Name, sock.Source, passedAs[sock.FD]}
				if got != w {
					t.Errorf("socket %d: %+v, want %+v", i, got, w)
				}
				if w.passedAs != "" {
					used[sock.FD] = true
					if inode(t, sock.FD) != inode(t, orig[w.passedAs]) {
						t.Errorf("socket %d is not the passed %s", i, w.passedAs)
					}
					if sock.Spec.Network == "" || sock.Addr == "" {
						t.Errorf("socket %d: network %q, address %q, spec %s", i, sock.Spec.Network, sock.Addr, sock.Spec)
					}
				}
			}
			for _, p := range cfg.Passed.FDs {
				if !used[p.FD] && isOpen(p.FD) {
					t.Errorf("passed fd %d (%s), not used, still open", p.FD, p.Name)
				}
			}
			plan.Apply(cfg.Logger)
			if got := strings.Join(store.calls, ", "); got != tc.calls {
				t.Errorf("fd store: %q, want %q", got, tc.calls)
			}
			for _, s := range socks {
				s.Close()
			}
			for _, p := range cfg.Passed.FDs {
				if isOpen(p.FD) {
					t.Errorf("passed fd %d (%s) still open after Close", p.FD, p.Name)
				}
			}
			for name, fd := range orig {
				if f, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); f != flags[name] {
					t.Errorf("%s: flags %#o, were %#o: hitless changed a passed socket", name, f, flags[name])
				}
			}
			if _, err := os.Stat(usock); err != nil {
				t.Errorf("the unit's socket file: %v", err)
			}
		})
	}
}

// A socket hitless bound and stored is the store's as much as hitless's:
// its unix socket file stays when hitless exits, for the next hitless.
func TestStoredUnixSocketFileStays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	spec, _ := ParseListen("unix://" + path)
	store := &fakeStore{}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	socks, plan, err := Open(Config{Listen: []ListenSpec{spec}, FDStore: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	plan.Apply(log)
	for _, s := range socks {
		s.Close()
	}
	if _, err := os.Stat(path); err != nil || strings.Join(store.calls, ",") != "store unix-s.sock" {
		t.Errorf("after a stored socket's close: %v; store %q", err, store.calls)
	}
}

func TestPassedFromEnv(t *testing.T) {
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDNAMES", "web")
	t.Setenv("LISTEN_PIDFDID", "7")
	p, err := PassedFromEnv()
	if err != nil || len(p.FDs) != 0 || !strings.Contains(p.Ignored, "LISTEN_PID=1") {
		t.Errorf("meant for pid 1: %+v, %v", p, err)
	}
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_PIDFDID"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%s left in the environment", k, v)
		}
	}
	t.Setenv("LISTEN_FDS", "x")
	if _, err := PassedFromEnv(); err == nil || !strings.Contains(err.Error(), "LISTEN_FDS") {
		t.Errorf("LISTEN_FDS=x: %v", err)
	}
	if p, err := PassedFromEnv(); err != nil || len(p.FDs) != 0 || p.Ignored != "" {
		t.Errorf("nothing passed: %+v, %v", p, err)
	}
}

func TestParseSystemdListen(t *testing.T) {
	for in, want := range map[string]string{
		"systemd://web":            "web web",
		"http=systemd://web":       "http web",
		"systemd://hitless.socket": "hitless.socket hitless.socket",
	} {
		spec, err := ParseListen(in)
		if got := spec.Name + " " + spec.Systemd; err != nil || got != want || spec.String() != in {
			t.Errorf("ParseListen(%q) = %q (%s), %v; want %q", in, got, spec, err, want)
		}
	}
	for in, want := range map[string]string{
		"systemd://":             "1 to 255",
		"systemd://a:b":          "without ':'",
		"systemd://a b":          "default name",
		"x=systemd://web?mode=1": "no options",
	} {
		if _, err := ParseListen(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseListen(%q) = %v, want an error containing %q", in, err, want)
		}
	}
	spec, _ := ParseListen("systemd://web")
	if err := spec.SetOption("backlog", "5"); err == nil || !strings.Contains(err.Error(), "socket unit") {
		t.Errorf("an option on systemd://: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
