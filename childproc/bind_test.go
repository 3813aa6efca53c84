package childproc

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNotSupervisedLiveUnixSocket: a unix socket file with a live server
// behind it is left alone, and the error says who holds it.
func TestNotSupervisedLiveUnixSocket(t *testing.T) {
	clearInheritEnv(t)
	s, err := Inherit()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "live.sock")
	live, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	ln, err := s.Listen("unix", path)
	if err == nil {
		ln.Close()
		t.Fatal("bound over a live unix socket")
	}
	if want := "in use by pid " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the live server's socket file is gone: %v", err)
	}
}
