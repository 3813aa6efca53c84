//go:build linux

package supervisor

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/sdnotify"
)

// child is what the driver holds for one generation while it runs: its
// notify socket, its output and what it said. The machine holds its state.
type child struct {
	id, pid int

	notify *sdnotify.Conn
	stderr *tail
	outs   []outPipe      // its stdout and stderr, those that are pipes (see Output)
	outw   sync.WaitGroup // output copiers
	copied bool           // the output copiers finished before the exit was reported
	report *os.File       // the shim's report pipe, until read to its end
	steps  steps          // when it passed each step of its start

	mu       sync.Mutex // status and stopping, written by the notify reader
	status   string     // last STATUS=
	stopping bool       // sent STOPPING=1
}

func (c *child) lastStatus() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status, c.stopping
}

// setReadDeadline sets the read deadline of c's notify socket and output
// pipes: a past one stops their readers without closing them (see
// quiesce), the zero time lifts it.
func (c *child) setReadDeadline(t time.Time) {
	c.notify.SetReadDeadline(t)
	for _, p := range c.outs {
		p.r.SetReadDeadline(t)
	}
}

// forget closes the notify socket of a child that exited.
func (c *child) forget() {
	if c.notify != nil {
		c.notify.Close()
	}
	if c.report != nil {
		c.report.Close() // ends its reader, if the shim never got to exec
	}
}

// closeOutput closes the output pipes that an escaped descendant still
// holds open, and waits for their copiers.
func (c *child) closeOutput() {
	for _, p := range c.outs {
		p.r.Close()
	}
	c.outw.Wait()
}

// outPipe is the read end of a pipe a child writes its output to.
type outPipe struct {
	r      *os.File
	stderr bool
	// partial is the prefixed line in progress when the copier stopped
	// for an upgrade's hand-over: written whole once the rest comes.
	partial []byte
}

// resolve finds the program and working directory afresh, so that a deploy
// that switched a "current" symlink starts the new release. The path is
// resolved through symlinks once here and executed as is, so the release
// that was checked is the release that runs.
func resolve(dir string, argv []string, env []string) (string, string, error) {
	if dir == "" {
		dir = "."
	}
	rdir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", "", fmt.Errorf("working directory: %w", err)
	}
	rdir, err = filepath.Abs(rdir)
	if err != nil {
		return "", "", fmt.Errorf("working directory: %w", err)
	}
	prog := argv[0]
	if !strings.Contains(prog, "/") {
		p, err := lookPath(prog, env)
		if err != nil {
			return "", "", err
		}
		prog = p
	} else if !filepath.IsAbs(prog) {
		prog = filepath.Join(rdir, prog)
	}
	rprog, err := filepath.EvalSymlinks(prog)
	if err != nil {
		return "", "", fmt.Errorf("program: %w", err)
	}
	fi, err := os.Stat(rprog)
	if err != nil {
		return "", "", fmt.Errorf("program: %w", err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("program %s is not an executable file", rprog)
	}
	return rdir, rprog, nil
}

// lookPath searches the child's PATH, not hitless's.
func lookPath(prog string, env []string) (string, error) {
	path := os.Getenv("PATH")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, prog)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("program %q: %w in PATH", prog, exec.ErrNotFound)
}

// stderrKept is how much of the end of a child's stderr its tail keeps.
const stderrKept = 8 << 10

// tail keeps the last bytes a child wrote to stderr, to explain a failure.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
	cut bool // the start of buf is the middle of a line
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	return len(p), nil
}

// bytes returns a copy of what it holds.
func (t *tail) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}

// Lines returns up to n complete last lines.
func (t *tail) Lines(n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimRight(string(t.buf), "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	if t.cut && len(lines) > 1 {
		lines = lines[1:]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// prefixWriter writes whole lines to w, each behind prefix.
type prefixWriter struct {
	w      io.Writer
	prefix []byte
	part   []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.part = append(p.part, b...)
			if len(p.part) > 64<<10 { // a line without end must not grow forever
				p.flush()
			}
			break
		}
		p.part = append(p.part, b[:i+1]...)
		b = b[i+1:]
		p.flush()
	}
	return n, nil
}

func (p *prefixWriter) flush() {
	if len(p.part) == 0 {
		return
	}
	line := append(append([]byte{}, p.prefix...), p.part...)
	if line[len(line)-1] != '\n' {
		line = append(line, '\n')
	}
	p.w.Write(line)
	p.part = p.part[:0]
}

// exitReason says in words how a process ended.
func exitReason(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		s := "killed by signal " + unix.SignalName(ws.Signal())
		if ws.CoreDump() {
			s += " (core dumped)"
		}
		return s
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// exitCode maps a wait status to a shell-style exit code.
func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
