package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	if err := RemoveStale(path); err != nil {
		t.Fatalf("missing file: %v", err)
	}

	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	err = RemoveStale(path)
	if err == nil || !strings.Contains(err.Error(), "already in use by pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("live socket: %v", err)
	}
	// Closed without unlinking, as a crashed process leaves it.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := RemoveStale(path); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("stale socket file still there: %v", err)
	}

	os.WriteFile(path, []byte("data"), 0o600)
	if err := RemoveStale(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("a regular file was removed: %v", err)
	}
}

func TestPeerCred(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cred, err := PeerCred(s)
	if err != nil {
		t.Fatal(err)
	}
	if int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Getuid() {
		t.Errorf("PeerCred = pid %d uid %d, want %d %d", cred.Pid, cred.Uid, os.Getpid(), os.Getuid())
	}
}
