package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeSystemd is a notification socket the test owns, standing in for
// systemd's.
func fakeSystemd(t *testing.T) *Conn {
	t.Helper()
	c, err := Listen(filepath.Join(t.TempDir(), "notify.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *Conn) Message {
	t.Helper()
	m, err := c.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return m
}

func TestFromEnv(t *testing.T) {
	sd := fakeSystemd(t)
	t.Setenv("NOTIFY_SOCKET", sd.Path())
	t.Setenv("WATCHDOG_USEC", "3000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	n, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q still in the environment; children would inherit it", k, v)
		}
	}
	if got := n.WatchdogInterval(); got != 1500*time.Millisecond {
		t.Errorf("WatchdogInterval = %v, want half of WATCHDOG_USEC", got)
	}
	if n.Socket() != sd.Path() {
		t.Errorf("Socket = %q", n.Socket())
	}

	if err := n.Ready("serving 2 sockets"); err != nil {
		t.Fatal(err)
	}
	m := read(t, sd)
	if want := fields("READY=1", "STATUS=serving 2 sockets"); !reflect.DeepEqual(m.Fields, want) {
		t.Errorf("fields = %q, want %q", m.Fields, want)
	}
	if string(m.Raw) != "READY=1\nSTATUS=serving 2 sockets" {
		t.Errorf("raw = %q", m.Raw)
	}
	if m.PID != int32(os.Getpid()) || m.UID != uint32(os.Getuid()) || m.GID != uint32(os.Getgid()) {
		t.Errorf("credentials = %d/%d/%d, want ours", m.PID, m.UID, m.GID)
	}
	if m.Event() != EventReady {
		t.Errorf("event = %v", m.Event())
	}
}

func TestFromEnvUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	t.Setenv("WATCHDOG_USEC", "1000")
	n, err := FromEnv()
	if n != nil || err != nil {
		t.Fatalf("FromEnv = %v, %v; want nil, nil", n, err)
	}
	if _, ok := os.LookupEnv("WATCHDOG_USEC"); ok {
		t.Error("WATCHDOG_USEC not removed")
	}
	// The nil Notifier does nothing, successfully.
	for _, err := range []error{n.Ready("x"), n.Reloading(), n.Stopping(), n.Status("x"),
		n.Watchdog(), n.Send("X=1"),
		n.StoreFD("x", 0), n.RemoveStoredFD("x")} {
		if err != nil {
			t.Errorf("nil Notifier: %v", err)
		}
	}
	if n.WatchdogInterval() != 0 || n.Socket() != "" || n.FDStoreMax() != 0 {
		t.Error("nil Notifier has a watchdog, socket or fd store")
	}
}

func TestFromValues(t *testing.T) {
	const self = 1000
	tests := []struct {
		socket, usec, wpid string
		interval           time.Duration
		err                string
	}{
		{"/run/x", "", "", 0, ""},
		{"@abstract", "", "", 0, ""},
		{"/run/x", "2000000", "", time.Second, ""},
		{"/run/x", "2000000", "1000", time.Second, ""},
		{"/run/x", "2000000", "999", 0, ""}, // meant for another process
		{"/run/x", "18446744073709551615", "", 0, "not a positive number"},
		{"/run/x", "0", "", 0, "not a positive number"},
		{"/run/x", "1s", "", 0, "not a positive number"},
		{"/run/x", "100", "x", 0, "not a pid"},
		{"run/x", "", "", 0, "want an absolute path or an @abstract name"},
		{"vsock:2:1234", "", "", 0, "want an absolute path"},
		{"/" + strings.Repeat("x", 200), "", "", 0, "longer than"},
	}
	for _, tt := range tests {
		n, err := fromValues(tt.socket, tt.usec, tt.wpid, self)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("fromValues(%q, %q, %q) error = %v, want %q", tt.socket, tt.usec, tt.wpid, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("fromValues(%q, %q, %q): %v", tt.socket, tt.usec, tt.wpid, err)
			continue
		}
		if got := n.WatchdogInterval(); got != tt.interval {
			t.Errorf("fromValues(%q, %q, %q) interval = %v, want %v", tt.socket, tt.usec, tt.wpid, got, tt.interval)
		}
	}
}

func TestNotifierMessages(t *testing.T) {
	sd := fakeSystemd(t)
	n, err := New(sd.Path())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		send func() error
		raw  string
	}{
		{func() error { return n.Ready("") }, "READY=1"},
		{n.Stopping, "STOPPING=1"},
		{n.Watchdog, "WATCHDOG=1"},
		// A status must stay one line: a newline would let text from
		// a child's error message inject STOPPING=1.
		{func() error { return n.Status("reload failed:\nSTOPPING=1") }, "STATUS=reload failed: STOPPING=1"},
		{func() error { return n.Status("bad \xff utf8") }, "STATUS=bad \uFFFD utf8"},
		{func() error { return n.Send("A=1", "B=x=y") }, "A=1\nB=x=y"},
		// SendRaw passes a payload on as it is, as sd_notify(3) does.
		{func() error { return n.SendRaw("READY=1\nSTATUS=x\n") }, "READY=1\nSTATUS=x\n"},
		{func() error { return n.SendRaw("garbage") }, "garbage"},
		{func() error { return n.Send("STATUS=" + strings.Repeat("z", MaxMessageSize-len("STATUS="))) }, "STATUS=" + strings.Repeat("z", MaxMessageSize-len("STATUS="))},
	}
	for _, tt := range tests {
		if err := tt.send(); err != nil {
			t.Errorf("send %q: %v", tt.raw, err)
			continue
		}
		if m := read(t, sd); string(m.Raw) != tt.raw {
			t.Errorf("sent %q, want %q", m.Raw, tt.raw)
		}
	}
}

func TestReloading(t *testing.T) {
	sd := fakeSystemd(t)
	n, err := New(sd.Path())
	if err != nil {
		t.Fatal(err)
	}
	before, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	after, _ := monotonicUsec()
	m := read(t, sd)
	if len(m.Fields) != 2 || m.Fields[0] != (Field{"RELOADING", "1"}) || m.Fields[1].Key != "MONOTONIC_USEC" {
		t.Fatalf("fields = %q, want RELOADING=1 and MONOTONIC_USEC in one datagram", m.Fields)
	}
	usec, err := strconv.ParseUint(m.Fields[1].Value, 10, 64)
	if err != nil || usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%s, want a CLOCK_MONOTONIC reading in [%d, %d]", m.Fields[1].Value, before, after)
	}
	if m.Event() != EventReloading {
		t.Errorf("event = %v", m.Event())
	}
}

func TestAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@hitless-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	sd, err := Listen(name, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	n, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stopping(); err != nil {
		t.Fatal(err)
	}
	if m := read(t, sd); m.Event() != EventStopping {
		t.Errorf("got %q", m.Raw)
	}
}

// TestCredentialsOfOtherProcess checks that the pid comes from the kernel:
// a separate process sends a payload that claims another pid, and Read
// reports the real one.
func TestCredentialsOfOtherProcess(t *testing.T) {
	sd := fakeSystemd(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "SDNOTIFY_HELPER=1", "NOTIFY_SOCKET="+sd.Path())
	out := new(strings.Builder)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		if err != nil {
			sd.Close() // unblock Read: the helper will not send
		}
		done <- err
	}()
	m, err := sd.Read()
	if err != nil {
		t.Fatalf("Read: %v (helper: %v, output: %s)", err, <-done, out)
	}
	if err := <-done; err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if m.PID != int32(cmd.Process.Pid) {
		t.Errorf("PID = %d, want the sender's %d", m.PID, cmd.Process.Pid)
	}
	if v, _ := m.Get("MAINPID"); v != "1" {
		t.Errorf("MAINPID = %q; the payload should be passed on as sent", v)
	}
}

// TestHelperProcess is the sender for TestCredentialsOfOtherProcess.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("SDNOTIFY_HELPER") != "1" {
		t.Skip("helper process only")
	}
	n, err := FromEnv()
	if err != nil || n == nil {
		fmt.Fprintln(os.Stderr, "FromEnv:", n, err)
		os.Exit(2)
	}
	if err := n.Send("READY=1", "MAINPID=1"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	os.Exit(0)
}

func sendRaw(t *testing.T, path string, payload []byte, fds ...int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, payload, oob, &unix.SockaddrUnix{Name: path}, 0); err != nil {
		t.Fatal(err)
	}
}

func TestDatagramSize(t *testing.T) {
	sd := fakeSystemd(t)

	sendRaw(t, sd.Path(), []byte("STATUS="+strings.Repeat("x", MaxMessageSize)))
	m, err := sd.Read()
	var de *DatagramError
	if !errors.As(err, &de) || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Read of an oversized datagram: %v, want a DatagramError with ErrTooLarge", err)
	}
	if de.PID != int32(os.Getpid()) || m.Fields != nil {
		t.Errorf("rejected datagram: pid %d, fields %q", de.PID, m.Fields)
	}

	// The Conn keeps working, and exactly MaxMessageSize is accepted.
	exact := "READY=1\nSTATUS=" + strings.Repeat("y", MaxMessageSize-len("READY=1\nSTATUS="))
	sendRaw(t, sd.Path(), []byte(exact))
	if m := read(t, sd); len(m.Raw) != MaxMessageSize || m.Event() != EventReady {
		t.Errorf("datagram of exactly %d bytes: got %d bytes, event %v", MaxMessageSize, len(m.Raw), m.Event())
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(ents)
}

func TestPassedFDsAreClosed(t *testing.T) {
	sd := fakeSystemd(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	sendRaw(t, sd.Path(), []byte("FDSTORE=1\nREADY=1"), int(r.Fd()), int(w.Fd()))
	before := openFDs(t)
	m := read(t, sd)
	after := openFDs(t)
	if after != before {
		t.Errorf("open fds went from %d to %d: received descriptors leaked", before, after)
	}
	if m.Err == nil || !strings.Contains(m.Err.Error(), "2 file descriptors received and closed") {
		t.Errorf("Err = %v, want it to say the descriptors were closed", m.Err)
	}
	if m.Event() != EventReady {
		t.Errorf("the notification itself was lost: %q", m.Fields)
	}
}

func TestMalformedLinesKept(t *testing.T) {
	sd := fakeSystemd(t)
	sendRaw(t, sd.Path(), []byte("garbage\nSTATUS=\xff\xfe\nREADY=1\n"))
	m := read(t, sd)
	if m.Event() != EventReady || m.Skipped != 2 || m.Err == nil {
		t.Errorf("got fields %q, skipped %d, err %v", m.Fields, m.Skipped, m.Err)
	}
	if _, ok := m.Get("STATUS"); ok {
		t.Error("non-UTF-8 STATUS accepted")
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	sd, err := Listen(filepath.Join(t.TempDir(), "n.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := sd.Read()
		errc <- err
	}()
	if err := sd.Close(); err != nil {
		t.Fatal(err)
	}
	// Whether Read was already blocked or not, it must return ErrClosed.
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := os.Stat(sd.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left behind: %v", err)
	}
	if err := sd.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestListenErrors(t *testing.T) {
	sd := fakeSystemd(t)
	if _, err := Listen(sd.Path(), 0o600); err == nil || !strings.Contains(err.Error(), sd.Path()) {
		t.Errorf("Listen on a path in use: %v", err)
	}
	if _, err := os.Stat(sd.Path()); err != nil {
		t.Errorf("failed Listen removed the other socket: %v", err)
	}
	for _, p := range []string{"", "@", "/nonexistent/dir/n.sock"} {
		if c, err := Listen(p, 0o600); err == nil {
			c.Close()
			t.Errorf("Listen(%q) succeeded", p)
		}
	}
}

// The mode asked for is the mode the file gets, whatever the umask: a
// child of another user must be able to send.
func TestListenMode(t *testing.T) {
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	for _, mode := range []os.FileMode{0o600, 0o666} {
		path := filepath.Join(t.TempDir(), "n.sock")
		c, err := Listen(path, mode)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("Listen(%v): file mode %v, %v", mode, fi.Mode(), err)
		}
		c.Close()
	}
}

// The fd store: StoreFD sends the descriptor with FDSTORE=1 and its name
// in one datagram, RemoveStoredFD names what to drop, and a receiver that
// keeps descriptors (ReadFDs) gets the same open file.
func TestStoreFD(t *testing.T) {
	sd := fakeSystemd(t)
	t.Setenv("NOTIFY_SOCKET", sd.Path())
	t.Setenv("FDSTORE", "16")
	n, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv("FDSTORE"); ok || n.FDStoreMax() != 16 {
		t.Errorf("FDSTORE: left in the environment %v, FDStoreMax %d; want removed, 16", ok, n.FDStoreMax())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })

	if err := n.StoreFD("web", fd); err != nil {
		t.Fatal(err)
	}
	m, files, err := sd.ReadFDs()
	if err != nil {
		t.Fatal(err)
	}
	if want := fields("FDSTORE=1", "FDNAME=web"); !reflect.DeepEqual(m.Fields, want) || m.Err != nil {
		t.Errorf("fields %q (%v), want %q", m.Fields, m.Err, want)
	}
	if len(files) != 1 {
		t.Fatalf("%d descriptors received, want 1", len(files))
	}
	defer files[0].Close()
	var a, b unix.Stat_t
	unix.Fstat(fd, &a)
	unix.Fstat(int(files[0].Fd()), &b)
	if a.Ino != b.Ino || a.Dev != b.Dev {
		t.Errorf("received inode %d, sent %d: not the same socket", b.Ino, a.Ino)
	}

	if err := n.RemoveStoredFD("web"); err != nil {
		t.Fatal(err)
	}
	if m, files, err := sd.ReadFDs(); err != nil || len(files) != 0 || !reflect.DeepEqual(m.Fields, fields("FDSTOREREMOVE=1", "FDNAME=web")) {
		t.Errorf("remove: %q, %d descriptors, %v", m.Fields, len(files), err)
	}
	for _, name := range []string{"", "a:b", "tab\there"} {
		if err := n.StoreFD(name, fd); err == nil || !strings.Contains(err.Error(), "FDNAME") {
			t.Errorf("StoreFD(%q) = %v, want it refused before sending", name, err)
		}
	}
	if err := n.SendFDs(nil, "FDSTORE=1"); err == nil {
		t.Error("SendFDs without descriptors was sent")
	}
	t.Setenv("NOTIFY_SOCKET", sd.Path())
	t.Setenv("FDSTORE", "many")
	if _, err := FromEnv(); err == nil || !strings.Contains(err.Error(), "FDSTORE") {
		t.Errorf("FromEnv with FDSTORE=many: %v", err)
	}
}
