//go:build linux

package supervisor

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recordStore records what the supervisor tells the fd store.
type recordStore struct{ calls []string }

func (r *recordStore) StoreFD(name string, fd int) error {
	r.calls = append(r.calls, "store "+name)
	return nil
}

func (r *recordStore) RemoveStoredFD(name string) error {
	r.calls = append(r.calls, "remove "+name)
	return nil
}

// A socket hitless bound and stored is the store's as much as hitless's:
// its unix socket file stays when hitless exits, for the next hitless.
func TestStoredUnixSocketFileStays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	spec, _ := ParseListen("unix://" + path)
	store := &recordStore{}
	s, err := New(Config{Listen: []ListenSpec{spec}, Command: []string{"/bin/true"}, FDStore: store,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.storeSockets()
	s.Close()
	if _, err := os.Stat(path); err != nil || strings.Join(store.calls, ",") != "store unix-s.sock" {
		t.Errorf("after a stored socket's close: %v; store %q", err, store.calls)
	}
}

func TestValidateListen(t *testing.T) {
	if err := (Config{Command: []string{"x"}, Passed: Passed{FDs: []PassedFD{{Name: "web", FD: 3}}}}).Validate(); err != nil {
		t.Errorf("no --listen, but sockets passed: %v", err)
	}
	var ce *ConfigError
	if err := (Config{Command: []string{"x"}}).Validate(); !errors.As(err, &ce) || ce.Field != "Listen" {
		t.Errorf("no sockets: %v, want a ConfigError for Listen", err)
	}
}
