package pidfile

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.pid")
	if err := Write(path, 1234); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "1234\n" {
		t.Fatalf("content = %q, %v", b, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", fi.Mode().Perm())
	}
	// Replacing works and leaves nothing else in the directory.
	if err := Write(path, 99); err != nil {
		t.Fatal(err)
	}
	if pid, err := Read(path); pid != 99 || err != nil {
		t.Errorf("Read = %d, %v", pid, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the PID file", len(ents))
	}
}

func TestWriteRelative(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := Write("rel.pid", 7); err != nil {
		t.Fatal(err)
	}
	if pid, err := Read("rel.pid"); pid != 7 || err != nil {
		t.Errorf("Read = %d, %v", pid, err)
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	if err := Write(filepath.Join(dir, "x.pid"), 0); err == nil {
		t.Error("Write of pid 0 succeeded")
	}
	missing := filepath.Join(dir, "no", "such", "dir", "x.pid")
	if err := Write(missing, 1); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Write into a missing directory: %v, want an error naming the path", err)
	}
	// A directory in the way: the rename fails and the temporary file
	// is cleaned up.
	blocked := filepath.Join(dir, "blocked.pid")
	if err := os.MkdirAll(filepath.Join(blocked, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(blocked, 1); err == nil {
		t.Error("Write over a non-empty directory succeeded")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// TestConcurrentReaders checks the atomicity: a reader never sees a
// missing, empty or partial file while writers replace it.
func TestConcurrentReaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.pid")
	if err := Write(path, 1); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := 1; i <= 500; i++ {
			if err := Write(path, 100000+i); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			wg.Wait()
			return
		default:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
		s := string(b)
		if n, err := strconv.Atoi(strings.TrimSuffix(s, "\n")); err != nil || n <= 0 || !strings.HasSuffix(s, "\n") {
			t.Fatalf("reader saw %q", s)
		}
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]int{"42\n": 42, " 42 ": 42, "42": 42, "": 0, "abc": 0, "-1\n": 0, "0": 0} {
		path := filepath.Join(dir, "p")
		os.WriteFile(path, []byte(content), 0o644)
		pid, err := Read(path)
		if pid != want || (err != nil) != (want == 0) {
			t.Errorf("Read(%q) = %d, %v; want %d", content, pid, err, want)
		}
	}
	if _, err := Read(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read of a missing file: %v", err)
	}
}

func TestRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.pid")
	if err := Write(path, 5); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file still there: %v", err)
	}
	if err := Remove(path); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}
