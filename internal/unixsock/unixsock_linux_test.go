package unixsock

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMaxPath binds sockets at exactly MaxPath bytes, and one byte more.
func TestMaxPath(t *testing.T) {
	if MaxPath != 107 {
		t.Errorf("MaxPath = %d, want Linux's 107", MaxPath)
	}
	dir := t.TempDir()
	pad := func(n int) string {
		p := dir + "/s"
		return p + strings.Repeat("x", n-len(p))
	}
	if len(dir)+3 > MaxPath {
		t.Skipf("temporary directory %s is too long to test with", dir)
	}
	ln, err := net.Listen("unix", pad(MaxPath))
	if err != nil {
		t.Fatalf("bind at MaxPath (%d bytes): %v", MaxPath, err)
	}
	ln.Close()
	if ln, err := net.Listen("unix", pad(MaxPath+1)); err == nil {
		ln.Close()
		t.Fatalf("bind at MaxPath+1 (%d bytes) succeeded", MaxPath+1)
	}
}

// TestRemoveStaleOtherType: a live socket of another type is in use too,
// and an abstract name has no file to remove.
func TestRemoveStaleOtherType(t *testing.T) {
	for _, network := range []string{"unixgram", "unixpacket"} {
		path := filepath.Join(t.TempDir(), network+".sock")
		var closer interface{ Close() error }
		var err error
		if network == "unixgram" {
			closer, err = net.ListenUnixgram(network, &net.UnixAddr{Name: path, Net: network})
		} else {
			closer, err = net.Listen(network, path)
		}
		if err != nil {
			t.Fatal(err)
		}
		err = RemoveStale(path)
		closer.Close()
		if err == nil || !strings.Contains(err.Error(), "in use by a socket of another type") {
			t.Errorf("live %s socket: %v", network, err)
		}
	}

	// "@name" is an abstract name, not the file of that name in the
	// working directory, even when such a file is there and stale.
	t.Chdir(t.TempDir())
	name := fmt.Sprintf("@unixsock-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	stale, err := net.Listen("unix", "./"+name)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if err := RemoveStale(name); err != nil {
		t.Errorf("abstract name: %v", err)
	}
	if _, err := os.Lstat(name); err != nil {
		t.Errorf("abstract name: the file %s was removed: %v", name, err)
	}
}

// Chmod never follows a symbolic link planted where the socket was.
func TestChmodNoFollow(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, nil, 0o600)
	link := filepath.Join(dir, "s.sock")
	os.Symlink(target, link)
	if err := Chmod(link, 0o666); err == nil {
		t.Error("Chmod followed a symbolic link")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("target mode changed to %v", fi.Mode())
	}
	if err := Chmod(target, 0o666); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Chmod of a regular file: %v", err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "real.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := Chmod(filepath.Join(dir, "real.sock"), 0o660); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "real.sock")); fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v", fi.Mode())
	}
}
