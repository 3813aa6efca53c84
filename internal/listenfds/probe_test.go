//go:build unix

package listenfds

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fdOf returns the descriptor of a socket for Probe to look at, owned by
// the test.
func fdOf(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func TestProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	file, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()

	for _, tc := range []struct {
		fd        int
		listening bool
		datagram  bool
		addr      string
		says      string
	}{
		{fdOf(t, ln.(*net.TCPListener)), true, false, "tcp " + ln.Addr().String(), "(listening)"},
		{fdOf(t, pc.(*net.UDPConn)), false, true, "udp " + pc.LocalAddr().String(), "(datagram)"},
		{fdOf(t, conn.(*net.TCPConn)), false, false, "tcp " + conn.LocalAddr().String(), "not listening"},
		{fdOf(t, ul.(*net.UnixListener)), true, false, "unix " + ul.Addr().String(), "(listening)"},
		{int(file.Fd()), false, false, "", "not a socket"},
	} {
		s, err := Probe(tc.fd)
		if err != nil {
			t.Errorf("Probe(%d): %v", tc.fd, err)
			continue
		}
		addr := ""
		if s.Addr != nil {
			addr = s.Addr.Network() + " " + s.Addr.String()
		}
		if s.Listening != tc.listening || s.Datagram() != tc.datagram || addr != tc.addr || !strings.Contains(s.String(), tc.says) {
			t.Errorf("Probe(%d) = %+v (%s), want listening %v, datagram %v, %q, saying %q", tc.fd, s, s, tc.listening, tc.datagram, tc.addr, tc.says)
		}
	}
	if _, err := Probe(1 << 20); err == nil || !strings.Contains(err.Error(), "not open") {
		t.Errorf("Probe of a closed descriptor: %v", err)
	}
}
