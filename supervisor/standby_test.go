//go:build linux

package supervisor

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/supervisor/internal/hidden"
)

// waitStandby waits for a standby other than not, and returns its pid.
func (r *running) waitStandby(not int) int {
	r.t.Helper()
	r.waitFor("a standby", func(st Status) bool { return st.StandbyPID != 0 && st.StandbyPID != not })
	return r.status().StandbyPID
}

// A reload takes the standby: the new generation runs in the process
// forked ahead, with its own generation's environment (LISTEN_PID is
// checked by the child), and a new standby is forked once it serves.
func TestStandbyTakenByReload(t *testing.T) {
	r := start(t, Config{})
	sb := r.waitStandby(0)
	if err := r.reload(); err != nil {
		t.Fatal("reload:", err)
	}
	gen, pid := servingGen(r.status())
	if gen != 2 || pid != sb {
		t.Fatalf("generation %d serves in pid %d, want generation 2 in the standby, pid %d", gen, pid, sb)
	}
	r.waitStandby(sb)
	r.waitFor("generation 1 gone", func(st Status) bool { return len(st.Generations) == 1 })
	if got, want := r.ask(), fmt.Sprintf("gen 2 pid %d", sb); got != want {
		t.Errorf("the socket answered %q, want %q", got, want)
	}
	if !strings.Contains(r.logs.String(), "standby=true") {
		t.Error("the start did not log that it took the standby")
	}
}

// A standby forked before a deploy switched the "current" symlink starts
// the new release, in the new release's directory: what a start runs is
// decided when it starts.
func TestStandbyStartsTheCurrentRelease(t *testing.T) {
	root := t.TempDir()
	for _, rel := range []string{"one", "two"} {
		os.Mkdir(filepath.Join(root, rel), 0o755)
		script := fmt.Sprintf("#!/bin/sh\nTEST_CHILD=\"status:%s-$(basename \"$(pwd -P)\")\" exec %q\n", rel, os.Args[0])
		if err := os.WriteFile(filepath.Join(root, rel, "server"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	current := filepath.Join(root, "current")
	if err := os.Symlink("one", current); err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{Dir: current, Command: []string{"./server"}})
	r.waitStandby(0)
	if got := r.status().Generations[0].Status; got != "one-one" {
		t.Fatalf("generation 1 says %q, want one-one", got)
	}
	// Switch the symlink as a deploy does: a new link renamed over it.
	if err := os.Symlink("two", current+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(current+".new", current); err != nil {
		t.Fatal(err)
	}
	if err := r.reload(); err != nil {
		t.Fatal("reload:", err)
	}
	for _, g := range r.status().Generations {
		if g.State == Serving && g.Status != "two-two" {
			t.Errorf("the new generation says %q, want two-two (release two's program, in its directory)", g.Status)
		}
	}
}

// A standby that dies is no failure: the next reload forks its own
// process, and a new standby follows.
func TestStandbyDies(t *testing.T) {
	r := start(t, Config{})
	sb := r.waitStandby(0)
	if err := syscall.Kill(sb, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.waitFor("the standby reaped", func(st Status) bool { return st.StandbyPID == 0 })
	if err := r.reload(); err != nil {
		t.Fatal("reload after the standby died:", err)
	}
	if gen, _ := servingGen(r.status()); gen != 2 {
		t.Fatalf("generation %d serves, want 2", gen)
	}
	r.waitStandby(sb)
	if !strings.Contains(r.logs.String(), "standby exited") {
		t.Error("the standby's death was not logged")
	}
}

// A stop lets go of the standby before the sockets close: once Run has
// returned, nothing holds them (see TestRunReloadStop) and the standby
// is gone.
func TestStandbyGoneAfterStop(t *testing.T) {
	r := start(t, Config{})
	sb := r.waitStandby(0)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(sb, 0); err == nil && !zombie(sb) {
		t.Errorf("the standby, pid %d, runs after the stop: %s", sb, cmdline(sb))
	}
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(after, "Z")
}

// NoStandby forks nothing ahead: each start forks its process.
func TestNoStandby(t *testing.T) {
	r := start(t, Config{NoStandby: true})
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	// The loop answers the status after the step that promoted
	// generation 2, which would have forked a standby.
	if st := r.status(); st.StandbyPID != 0 {
		t.Errorf("standby %d with NoStandby", st.StandbyPID)
	}
	if strings.Contains(r.logs.String(), "standby=true") {
		t.Error("a start took a standby")
	}
}

// A standby that cannot be forked is tried again at the next start, not
// at every step of the loop: a status request (a monitor's, a metrics
// scrape's) neither forks nor warns.
func TestStandbyForkFailsOnce(t *testing.T) {
	shim := filepath.Join(t.TempDir(), "hitless")
	if err := os.Symlink(os.Args[0], shim); err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{ShimPath: shim})
	sb := r.waitStandby(0)
	if err := os.Remove(shim); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(sb, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.waitFor("the standby reaped", func(st Status) bool { return st.StandbyPID == 0 })
	for range 5 {
		r.status()
	}
	if n := strings.Count(r.logs.String(), "standby not forked"); n != 1 {
		t.Errorf("%d warnings that the standby was not forked, want 1", n)
	}
	// The next start tries again.
	if err := os.Symlink(os.Args[0], shim); err != nil {
		t.Fatal(err)
	}
	if err := r.reload(); err != nil {
		t.Fatal("reload:", err)
	}
	r.waitStandby(sb)
}

// smallPipe is a pipe that holds one page, as a new pipe of a user past
// its pipe budget does (pipe-user-pages-soft, see pipe(7)).
func smallPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	rc, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { _, err = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 4096) })
	if err != nil {
		t.Fatal("F_SETPIPE_SZ:", err)
	}
	return r, w
}

// beginBig begins a shim whose start pipe holds one page with a message
// of 20 KB, and returns the pipe's read end, the message, and what
// counts the write of its rest.
func beginBig(t *testing.T) (r *os.File, msg []byte, bg *sync.WaitGroup) {
	t.Helper()
	r, w := smallPipe(t)
	msg = hidden.StartMessage("/", "/bin/true", []string{"true"}, []string{"BIG=" + strings.Repeat("x", 20000)})
	bg = &sync.WaitGroup{}
	if err := (&shimProc{start: w}).begin(msg, bg); err != nil {
		t.Fatal("begin:", err)
	}
	return r, msg, bg
}

// A start message larger than its pipe holds reaches the shim whole, and
// begin does not wait for the shim to read it: a standby may be stopped.
func TestBeginMessageLargerThanPipe(t *testing.T) {
	r, msg, bg := beginBig(t)
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Errorf("the shim read %d bytes, want the message's %d", len(got), len(msg))
	}
	bg.Wait()
}

// A shim that exits before it has read its message ends the write of
// what its pipe could not hold.
func TestBeginShimExitsMidMessage(t *testing.T) {
	r, _, bg := beginBig(t)
	r.Close()
	bg.Wait()
}
