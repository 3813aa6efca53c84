//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/harness"
)

// Review of issue 16, finding 8: a child's stdout and stderr are what a
// shell would give it where hitless's own cannot go away (a terminal, a
// regular file): the child sees its terminal (Python's line buffering,
// colours), as it did before issue 16 made every stream a pipe. Where the
// reader can go away (a pipe), or with --output-prefix, the child writes
// to a pipe of its own, which hitless copies. Either way the lines reach
// hitless's stream.
func TestChildOutputStreams(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream func(t *testing.T) (w *os.File, read func() string)
		args   []string
		want   string // what the child finds on its fds 1 and 2
	}{
		{"terminal", ptyStream, nil, "tty tty"},
		{"regular file", fileStream, nil, "file file"},
		{"pipe", pipeStream, nil, "pipe pipe"},
		{"terminal with --output-prefix", ptyStream, []string{"--output-prefix"}, "pipe pipe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := harness.ShortDir(t)
			report := filepath.Join(dir, "report")
			// What each of fds 1 and 2 is, as the child sees it.
			script := `for fd in 1 2; do
				if [ -t $fd ]; then k=tty; elif [ -f /proc/self/fd/$fd ]; then k=file; elif [ -p /proc/self/fd/$fd ]; then k=pipe; else k=other; fi
				printf '%s ' $k >> ` + report + `
			done
			echo >> ` + report + `
			echo "out-line from the child"; echo "err-line from the child" >&2
			` + notifyReady + `; exec sleep 1000`
			w, read := tc.stream(t)
			sock := filepath.Join(dir, "c.sock")
			cmd := exec.Command(bin.hitless, append(append([]string{"run", "--control", sock, "--listen", "tcp://127.0.0.1:0"}, tc.args...),
				"--", "/bin/sh", "-c", script)...)
			cmd.Env = append(os.Environ(), "GORACE="+harness.NoRaceExitSleep())
			cmd.Stdout, cmd.Stderr = w, w
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() {
				cmd.Process.Signal(syscall.SIGTERM)
				<-exited
			}()
			waitUntil(t, 20*time.Second, "the child's report", func() bool {
				b, _ := os.ReadFile(report)
				return bytes.HasSuffix(b, []byte("\n"))
			})
			if b, _ := os.ReadFile(report); strings.TrimSpace(string(b)) != tc.want {
				t.Errorf("the child's stdout and stderr are %q, want %q", strings.TrimSpace(string(b)), tc.want)
			}
			waitUntil(t, 20*time.Second, "the child's lines in hitless's stream", func() bool {
				out := read()
				return strings.Contains(out, "out-line from the child") && strings.Contains(out, "err-line from the child")
			})
		})
	}
}

// ptyStream is the terminal side of a new pseudo-terminal, as a shell
// gives it to hitless; read returns what reached the terminal.
func ptyStream(t *testing.T) (*os.File, func() string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			got.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return tty, func() string { mu.Lock(); defer mu.Unlock(); return got.String() }
}

// fileStream is a regular file, as "hitless run ... >> app.log 2>&1".
func fileStream(t *testing.T) (*os.File, func() string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return f, func() string { b, _ := os.ReadFile(path); return string(b) }
}

// pipeStream is a pipe, as "hitless run ... | tee".
func pipeStream(t *testing.T) (*os.File, func() string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	var mu sync.Mutex
	var got bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			mu.Lock()
			got.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return w, func() string { mu.Lock(); defer mu.Unlock(); return got.String() }
}
