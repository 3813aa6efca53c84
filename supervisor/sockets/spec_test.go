//go:build linux

package sockets

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseListen(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ListenSpec
		err  string
	}{
		{in: "tcp://127.0.0.1:8080", want: ListenSpec{Name: "tcp-8080", Network: "tcp", Address: "127.0.0.1:8080"}},
		{in: "http=tcp://127.0.0.1:8080?backlog=1024", want: ListenSpec{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Backlog: 1024}},
		{in: "tcp4://0.0.0.0:80", want: ListenSpec{Name: "tcp-80", Network: "tcp4", Address: "0.0.0.0:80"}},
		{in: "tcp6://[::1]:8443", want: ListenSpec{Name: "tcp-8443", Network: "tcp6", Address: "[::1]:8443"}},
		{in: "tcp://:8080", want: ListenSpec{Name: "tcp-8080", Network: "tcp", Address: ":8080"}},
		{in: "tcp://localhost:8080", want: ListenSpec{Name: "tcp-8080", Network: "tcp", Address: "localhost:8080"}},
		{in: "udp://127.0.0.1:5353", want: ListenSpec{Name: "udp-5353", Network: "udp", Address: "127.0.0.1:5353"}},
		{in: "unix:///run/app.sock", want: ListenSpec{Name: "unix-app.sock", Network: "unix", Address: "/run/app.sock"}},
		{in: "api=unix:///run/app.sock?mode=0660&owner=0&group=0", want: ListenSpec{Name: "api", Network: "unix", Address: "/run/app.sock", Mode: 0o660, UID: 0, GID: 0}},
		{in: "sctp://127.0.0.1:80", err: `unknown scheme "sctp"`},
		{in: "127.0.0.1:8080", err: "not a URL"},
		{in: "tcp://127.0.0.1", err: "HOST:PORT"},
		{in: "tcp://127.0.0.1:65536", err: `port "65536"`},
		{in: "tcp://127.0.0.1:http", err: "not a URL"},
		{in: "tcp://bad_host!:80", err: "neither an IP address"},
		{in: "tcp://127.0.0.1:80/path", err: "no path"},
		{in: "unix://run/app.sock", err: "three slashes"},
		{in: "tcp://127.0.0.1:80?backlog=0", err: "backlog"},
		{in: "tcp://127.0.0.1:80?mode=0600", err: `unknown option "mode"`},
		{in: "udp://127.0.0.1:80?backlog=5", err: `unknown option "backlog"`},
		{in: "unix:///a.sock?mode=999", err: "mode="},
		{in: "unix:///a.sock?owner=no-such-user-hopefully", err: "no such user"},
		{in: "a:b=tcp://127.0.0.1:80", err: "printable ASCII"},
		{in: "a b=tcp://127.0.0.1:80", err: "printable ASCII"},
		{in: "=tcp://127.0.0.1:80", err: "1 to 255"},
	} {
		got, err := ParseListen(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseListen(%q) error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseListen(%q): %v", tc.in, err)
			continue
		}
		tc.want.Spec = tc.in
		if tc.want.UID == 0 && !strings.Contains(tc.in, "owner") {
			tc.want.UID = -1
		}
		if tc.want.GID == 0 && !strings.Contains(tc.in, "group") {
			tc.want.GID = -1
		}
		if got != tc.want {
			t.Errorf("ParseListen(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func FuzzParseListen(f *testing.F) {
	for _, s := range []string{"tcp://127.0.0.1:8080", "http=tcp://[::1]:80?backlog=5", "unix:///run/a.sock?mode=0600", "udp://:53", "x=", "=://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseListen(s)
		if err != nil {
			return
		}
		if CheckName(spec.Name) != nil {
			t.Fatalf("ParseListen(%q) accepted name %q that LISTEN_FDNAMES cannot carry", s, spec.Name)
		}
		switch spec.Network {
		case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
			if _, _, err := net.SplitHostPort(spec.Address); err != nil {
				t.Fatalf("ParseListen(%q) accepted address %q: %v", s, spec.Address, err)
			}
		case "unix":
			if !filepath.IsAbs(spec.Address) {
				t.Fatalf("ParseListen(%q) accepted relative path %q", s, spec.Address)
			}
		default:
			t.Fatalf("ParseListen(%q) accepted network %q", s, spec.Network)
		}
	})
}

func TestBindBacklogAndStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	// A stale socket file: bound, then closed without unlinking.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	spec, err := ParseListen("unix://" + path + "?backlog=7&mode=0640")
	if err != nil {
		t.Fatal(err)
	}
	s, err := bind(spec)
	if err != nil {
		t.Fatalf("bind over a stale socket: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("socket file mode: %v %v", fi, err)
	}
	// The same path while it is live is refused.
	if _, err := bind(spec); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("bind over a live socket: %v", err)
	}
	s.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after close: %v", err)
	}
	// A regular file is never removed.
	os.WriteFile(path, []byte("data"), 0o600)
	if _, err := bind(spec); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("bind over a regular file: %v", err)
	}
}

func TestBindBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	spec, _ := ParseListen("tcp://" + ln.Addr().String())
	if _, err := bind(spec); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("bind on a busy port: %v", err)
	}
}
