package childproc

import (
	"encoding/json"
	"errors"
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

	"github.com/hitless/hitless/internal/listenfds"
)

// dupFD returns a new descriptor for the socket behind c, owned by the
// test, as a supervisor would hold it.
func dupFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.Dup(int(s)) }); err != nil {
		t.Fatal(err)
	}
	if derr != nil {
		t.Fatal(derr)
	}
	return fd
}

func clearInheritEnv(t *testing.T) {
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_PIDFDID", "SERVER_STARTER_PORT", "EINHORN_FD_COUNT", "EINHORN_FD_0", "EINHORN_FD_1", "EINHORN_FDS"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func TestInheritServerStarter(t *testing.T) {
	clearInheritEnv(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	sockPath := filepath.Join(t.TempDir(), "app.sock")
	ux, err := net.Listen("unix", sockPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ux.Close()
	tcpFD, uxFD := dupFD(t, tcp.(*net.TCPListener)), dupFD(t, ux.(*net.UnixListener))
	port := tcp.Addr().(*net.TCPAddr).Port
	t.Setenv("SERVER_STARTER_PORT", "127.0.0.1:"+strconv.Itoa(port)+"="+strconv.Itoa(tcpFD)+";"+sockPath+"="+strconv.Itoa(uxFD))

	s, err := Inherit()
	if err != nil {
		t.Fatal(err)
	}
	if !s.Supervised() || s.Source() != SourceServerStarter || s.Len() != 2 {
		t.Fatalf("Inherit = %s, want 2 server-starter sockets", s)
	}
	if _, set := os.LookupEnv("SERVER_STARTER_PORT"); set {
		t.Error("SERVER_STARTER_PORT still set after Inherit")
	}
	// ":port" matches the socket bound to 127.0.0.1:port (only one with
	// that port).
	ln, err := s.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fdOpen(tcpFD) {
		t.Error("original descriptor still open after the listener was taken")
	}
	if _, err := s.Listen("tcp", ":"+strconv.Itoa(port)); err == nil {
		t.Error("second Listen of the same socket succeeded")
	}
	uln, err := s.Listener(sockPath) // the SERVER_STARTER_PORT key is its name
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()

	// The inherited listener accepts what is queued on the shared socket.
	c, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ac.Close()

	// Closing the child's copy of a unix listener must not unlink the
	// path: the supervisor and the next generation still use it.
	uln.Close()
	if _, err := os.Stat(sockPath); err != nil {
		t.Errorf("closing the inherited unix listener removed its path: %v", err)
	}
}

func TestInheritEinhornUDP(t *testing.T) {
	clearInheritEnv(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcpFD, udpFD := dupFD(t, tcp.(*net.TCPListener)), dupFD(t, udp.(*net.UDPConn))
	t.Setenv("EINHORN_FD_COUNT", "2")
	t.Setenv("EINHORN_FD_0", strconv.Itoa(tcpFD))
	t.Setenv("EINHORN_FD_1", strconv.Itoa(udpFD))

	s, err := Inherit()
	if err != nil {
		t.Fatal(err)
	}
	if s.Source() != SourceEinhorn {
		t.Fatalf("source %q, want einhorn", s.Source())
	}
	for _, k := range []string{"EINHORN_FD_COUNT", "EINHORN_FD_0", "EINHORN_FD_1"} {
		if _, set := os.LookupEnv(k); set {
			t.Errorf("%s still set", k)
		}
	}
	if flags, _ := unix.FcntlInt(uintptr(tcpFD), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
		t.Error("inherited fd not marked close-on-exec")
	}
	if _, err := s.ListenerAt(1); err == nil || !strings.Contains(err.Error(), "datagram") {
		t.Errorf("ListenerAt(1) on a UDP socket: %v, want a datagram error", err)
	}
	pc, err := s.ListenPacket("udp", udp.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if pc.LocalAddr().String() != udp.LocalAddr().String() {
		t.Errorf("packet conn on %s, want %s", pc.LocalAddr(), udp.LocalAddr())
	}
	ln, err := s.ListenerAt(0)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestInheritCloseReleasesUntaken(t *testing.T) {
	clearInheritEnv(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	fd := dupFD(t, tcp.(*net.TCPListener))
	t.Setenv("EINHORN_FDS", strconv.Itoa(fd))
	s, err := Inherit()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fdOpen(fd) {
		t.Error("Close left an untaken descriptor open")
	}
}

func TestInheritBadDescriptor(t *testing.T) {
	clearInheritEnv(t)
	t.Setenv("EINHORN_FDS", "987")
	if _, err := Inherit(); err == nil || !strings.Contains(err.Error(), "not open") {
		t.Errorf("Inherit with a closed fd: %v, want a 'not open' error", err)
	}
	t.Setenv("EINHORN_FDS", "1")
	if _, err := Inherit(); err == nil || !strings.Contains(err.Error(), "stdout") {
		t.Errorf("Inherit with fd 1: %v, want a stdio error", err)
	}
}

func TestNotSupervisedBindsItself(t *testing.T) {
	clearInheritEnv(t)
	s, err := Inherit()
	if err != nil {
		t.Fatal(err)
	}
	if s.Supervised() {
		t.Fatal("supervised without any variable")
	}
	ln, err := s.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = s.Listen("tcp", ln.Addr().String())
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "not supervised") {
		t.Errorf("binding a taken port: %v; want EADDRINUSE explained", err)
	}
	pc, err := s.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()

	// A stale unix socket file (its server died) does not block a rebind.
	path := filepath.Join(t.TempDir(), "s.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ux, err := s.Listen("unix", path)
	if err != nil {
		t.Fatalf("rebinding over a stale socket: %v", err)
	}
	ux.Close()
}

func TestListenMatching(t *testing.T) {
	tcp := func(ip string, port int) *socket {
		return &socket{Socket: listenfds.Socket{Type: unix.SOCK_STREAM, Listening: true, Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: port}}}
	}
	for _, tc := range []struct {
		name   string
		socks  []*socket
		net    string
		addr   string
		want   int // index, or -1 for an error
		errHas string
	}{
		{"wildcard v4", []*socket{tcp("0.0.0.0", 8080)}, "tcp", ":8080", 0, ""},
		{"wildcard v6", []*socket{tcp("::", 8080)}, "tcp", ":8080", 0, ""},
		{"any host single", []*socket{tcp("127.0.0.1", 8080)}, "tcp", ":8080", 0, ""},
		{"exact among several", []*socket{tcp("127.0.0.1", 8080), tcp("10.0.0.1", 8080)}, "tcp", "10.0.0.1:8080", 1, ""},
		{"ambiguous", []*socket{tcp("127.0.0.1", 8080), tcp("10.0.0.1", 8080)}, "tcp", ":8080", -1, "ambiguous"},
		{"specific covered by wildcard", []*socket{tcp("0.0.0.0", 8080)}, "tcp", "127.0.0.1:8080", 0, ""},
		{"specific not inherited", []*socket{tcp("10.0.0.1", 8080)}, "tcp", "127.0.0.1:8080", -1, "no inherited socket"},
		{"localhost", []*socket{tcp("10.0.0.1", 8080), tcp("127.0.0.1", 8080)}, "tcp", "localhost:8080", 1, ""},
		{"localhost is not another address", []*socket{tcp("10.0.0.1", 8080)}, "tcp", "localhost:8080", -1, "no inherited socket"},
		{"wildcard before a single address", []*socket{tcp("127.0.0.1", 8080), tcp("0.0.0.0", 8080)}, "tcp", ":8080", 1, ""},
		{"wildcard as spelt", []*socket{tcp("::", 8080), tcp("0.0.0.0", 8080)}, "tcp", "0.0.0.0:8080", 1, ""},
		{"two wildcards", []*socket{tcp("::", 8080), tcp("0.0.0.0", 8080)}, "tcp", ":8080", -1, "ambiguous"},
		{"other port", []*socket{tcp("0.0.0.0", 8080)}, "tcp", ":9090", -1, "0.0.0.0:8080"},
		{"tcp6 skips v4", []*socket{tcp("0.0.0.0", 8080), tcp("::", 8080)}, "tcp6", ":8080", 1, ""},
		{"service name", []*socket{tcp("0.0.0.0", 80)}, "tcp", ":http", 0, ""},
		{"unix", []*socket{tcp("0.0.0.0", 80), {Socket: listenfds.Socket{Type: unix.SOCK_STREAM, Listening: true, Addr: &net.UnixAddr{Name: "/run/a.sock", Net: "unix"}}}}, "unix", "/run/../run/a.sock", 1, ""},
		{"udp is not tcp", []*socket{{Socket: listenfds.Socket{Type: unix.SOCK_DGRAM, Addr: &net.UDPAddr{IP: net.IPv4zero, Port: 53}}}}, "tcp", ":53", -1, "no inherited socket"},
		{"udp", []*socket{{Socket: listenfds.Socket{Type: unix.SOCK_DGRAM, Addr: &net.UDPAddr{IP: net.IPv4zero, Port: 53}}}}, "udp", ":53", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Sockets{source: "test", socks: tc.socks}
			target, err := s.target(tc.net, tc.addr)
			var got *socket
			if err == nil {
				got, err = s.matchLocked(target)
			}
			if tc.want < 0 {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("match(%s %s) = %v, %v; want error containing %q", tc.net, tc.addr, got, err, tc.errHas)
				}
				return
			}
			if err != nil || got != tc.socks[tc.want] {
				t.Fatalf("match(%s %s) = %v, %v; want %v", tc.net, tc.addr, got, err, tc.socks[tc.want])
			}
		})
	}
}

// runInheritHelper starts the test binary as a child holding files at fds
// 3.. and returns its report.
func runInheritHelper(t *testing.T, files []*os.File, env ...string) inheritReport {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), append([]string{helperEnv + "=inherit"}, env...)...)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("inherit helper: %v", err)
	}
	var r inheritReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("inherit helper output %q: %v", out, err)
	}
	return r
}

func TestInheritSystemd(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	sockPath := filepath.Join(t.TempDir(), "admin.sock")
	ux, err := net.Listen("unix", sockPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ux.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	var files []*os.File
	for _, c := range []interface{ File() (*os.File, error) }{tcp.(*net.TCPListener), ux.(*net.UnixListener), udp.(*net.UDPConn)} {
		f, err := c.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	base := []string{"LISTEN_FDS=3", "LISTEN_FDNAMES=http:admin:dns", "LISTEN_PIDFDID=", "SERVER_STARTER_PORT=", "EINHORN_FDS="}

	t.Run("pid matches", func(t *testing.T) {
		r := runInheritHelper(t, files, append(base, "CHILDPROC_TEST_SETPID=1",
			"CHILDPROC_TEST_TAKE=listener:http listener:admin packet:dns listen:tcp,:9999 listener:nope")...)
		if r.Source != SourceSystemd || r.Errors["inherit"] != "" {
			t.Fatalf("report %+v", r)
		}
		if len(r.Env) != 0 {
			t.Errorf("variables left in the environment: %v", r.Env)
		}
		for fd := 3; fd <= 5; fd++ {
			if !r.CloseOnExec[fd] {
				t.Errorf("fd %d not close-on-exec", fd)
			}
		}
		if got, want := r.Taken["listener:http"], "tcp "+tcp.Addr().String(); got != want {
			t.Errorf("http = %q, want %q", got, want)
		}
		if got, want := r.Taken["listener:admin"], "unix "+sockPath; got != want {
			t.Errorf("admin = %q, want %q", got, want)
		}
		if got, want := r.Taken["packet:dns"], "udp "+udp.LocalAddr().String(); got != want {
			t.Errorf("dns = %q, want %q", got, want)
		}
		// The classic trap: asking for an address the supervisor did not
		// pass is an error that lists what it did pass.
		if e := r.Errors["listen:tcp,:9999"]; !strings.Contains(e, "http=tcp "+tcp.Addr().String()) {
			t.Errorf("Listen(:9999) error %q does not list the inherited sockets", e)
		}
		if e := r.Errors["listener:nope"]; !strings.Contains(e, `no inherited socket named "nope"`) {
			t.Errorf("Listener(nope) error %q", e)
		}
	})

	t.Run("pid of another process", func(t *testing.T) {
		r := runInheritHelper(t, files, append(base, "LISTEN_PID=1", "CHILDPROC_TEST_TAKE=listen:tcp,127.0.0.1:0")...)
		if r.Supervised || r.Errors["inherit"] != "" {
			t.Fatalf("LISTEN_PID=1 was not ignored: %+v", r)
		}
		if !strings.Contains(r.Sockets, "LISTEN_PID") {
			t.Errorf("String() %q does not say why LISTEN_FDS was ignored", r.Sockets)
		}
		if r.Taken["listen:tcp,127.0.0.1:0"] == "" {
			t.Errorf("not supervised, but Listen did not bind: %v", r.Errors)
		}
		if len(r.Env) != 0 {
			t.Errorf("variables left in the environment: %v", r.Env)
		}
	})

	t.Run("pid mismatch falls back to SERVER_STARTER_PORT", func(t *testing.T) {
		env := append(base, "LISTEN_PID=1", "SERVER_STARTER_PORT="+tcp.Addr().String()+"=3", "CHILDPROC_TEST_TAKE=listen:tcp,"+tcp.Addr().String())
		r := runInheritHelper(t, files, env...)
		if r.Source != SourceServerStarter || r.Taken["listen:tcp,"+tcp.Addr().String()] == "" {
			t.Fatalf("report %+v", r)
		}
	})

	t.Run("names and count disagree", func(t *testing.T) {
		r := runInheritHelper(t, files, "LISTEN_FDS=3", "LISTEN_FDNAMES=http:admin", "CHILDPROC_TEST_SETPID=1")
		if !strings.Contains(r.Errors["inherit"], "LISTEN_FDNAMES") {
			t.Fatalf("mismatched LISTEN_FDNAMES accepted: %+v", r)
		}
	})
}

func TestNotify(t *testing.T) {
	n := newNotifyListener(t)
	t.Setenv("NOTIFY_SOCKET", n.path)
	if err := Ready("serving\nline two"); err != nil {
		t.Fatal(err)
	}
	if got := n.expect(t, "READY=1", testWait); got != "READY=1\nSTATUS=serving line two" {
		t.Errorf("payload %q", got)
	}
	if err := Notify("WATCHDOG=1"); err != nil {
		t.Fatal(err)
	}
	n.expect(t, "WATCHDOG=1", testWait)

	// Abstract namespace.
	name := "@childproc-test-" + strconv.Itoa(os.Getpid())
	ac, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	if err := Ready(""); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	k, err := ac.Read(buf)
	if err != nil || string(buf[:k]) != "READY=1" {
		t.Errorf("abstract socket got %q, %v", buf[:k], err)
	}

	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if err := Ready(""); err == nil {
		t.Error("relative NOTIFY_SOCKET accepted")
	}
	os.Unsetenv("NOTIFY_SOCKET")
	if err := Ready(""); err != nil {
		t.Errorf("Ready without NOTIFY_SOCKET: %v", err)
	}
}

const testWait = 10 * time.Second
