//go:build linux

package hidden

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary links this package: started with ShimArg, its init is
// the shim.
func runShim(t *testing.T, env []string, args ...string) (stdout, stderr string, report []byte, code int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", append([]string{ShimArg, "3"}, args...)...)
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{w}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	report, _ = io.ReadAll(r)
	cmd.Wait()
	return out.String(), errb.String(), report, cmd.ProcessState.ExitCode()
}

// The shim reports when it ran, sets LISTEN_PID (and WATCHDOG_PID with a
// watchdog) to its pid, which the program keeps, and the program sees
// neither the report pipe nor a blocked signal.
func TestShim(t *testing.T) {
	before := Monotonic()
	// grep reads its own mask, by exec: the shell's may be all blocked
	// for the instant it forks a command.
	script := `echo "$$ $LISTEN_PID ${WATCHDOG_PID:-none} $KEEP"; [ -e /proc/$$/fd/3 ] && echo fd 3 open; exec grep SigBlk /proc/self/status`
	for _, tc := range []struct {
		env      []string
		watchdog string
	}{
		{[]string{"KEEP=kept"}, "none"},
		{[]string{"KEEP=kept", "WATCHDOG_USEC=1000000"}, "pid"},
	} {
		out, errb, report, code := runShim(t, tc.env, "/bin/sh", "sh", "-c", script)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		f := strings.Fields(lines[0])
		if len(f) != 4 || f[0] != f[1] || f[3] != "kept" {
			t.Errorf("pid, LISTEN_PID, WATCHDOG_PID, KEEP: %q", lines[0])
		}
		if want := map[string]string{"none": "none", "pid": f[0]}[tc.watchdog]; len(f) == 4 && f[2] != want {
			t.Errorf("WATCHDOG_PID %q, want %q", f[2], want)
		}
		if len(lines) != 2 {
			t.Errorf("the program got the report pipe, fd 3: %q", out)
		}
		if blk := strings.Fields(lines[len(lines)-1]); len(blk) != 2 || strings.Trim(blk[1], "0") != "" {
			t.Errorf("blocked signals: %q", lines[len(lines)-1])
		}
		if len(report) != 8 {
			t.Fatalf("report %q, want 8 bytes", report)
		}
		if at := int64(binary.LittleEndian.Uint64(report)); at < before || at > Monotonic() {
			t.Errorf("reported %d, not between %d and now", at, before)
		}
	}
}

// A program that cannot be executed: exit status 127 and why, as a
// shell's; the report pipe closes at the exit.
func TestShimExecFails(t *testing.T) {
	_, errb, report, code := runShim(t, nil, "/nonexistent/prog", "prog")
	if code != ExecFailed || !strings.Contains(errb, "exec /nonexistent/prog: no such file or directory") {
		t.Errorf("exit %d, stderr %q", code, errb)
	}
	if len(report) != 8 {
		t.Errorf("report %q", report)
	}
	_, errb, _, code = runShim(t, nil)
	if code != ExecFailed || !strings.Contains(errb, "without a program") {
		t.Errorf("no program: exit %d, stderr %q", code, errb)
	}
}

// The watcher kills every process group it knows of, and only those, when
// the pipe closes; lines it cannot read are reported and skipped.
func TestWatcherKillsGroups(t *testing.T) {
	spawn := func() int {
		pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "60"}, &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Setpgid: true}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); syscall.Wait4(pid, nil, 0, nil) })
		return pid
	}
	a, b, c := spawn(), spawn(), spawn()
	r, w, _ := os.Pipe()
	go func() {
		// One line across two writes, as a pipe may deliver it.
		fmt.Fprintf(w, "%s%s+%d\n-%d\ngarbage\n+1\n+%d", Add(a), Add(b), c, c, b)
		time.Sleep(10 * time.Millisecond)
		fmt.Fprint(w, "\n")
		w.Close()
	}()
	if code := Watch(r); code != 0 {
		t.Errorf("watcher exit %d", code)
	}
	for pid, want := range map[int]bool{a: true, b: true, c: false} {
		var ws syscall.WaitStatus
		if want {
			syscall.Wait4(pid, &ws, 0, nil)
			if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("pid %d: %v, want killed", pid, ws)
			}
		} else if got, _ := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); got != 0 {
			t.Errorf("pid %d, removed from the watcher, was killed", pid)
		}
	}
}

func TestItoaAtoi(t *testing.T) {
	for _, n := range []int{0, 7, 10, 4194304, 1 << 50} {
		s := itoa(n)
		if s != strconv.Itoa(n) {
			t.Errorf("itoa(%d) = %q", n, s)
		}
		if got, ok := atoi(s); !ok || got != n {
			t.Errorf("atoi(%q) = %d, %v", s, got, ok)
		}
	}
	for _, s := range []string{"", "-1", "1x", "+3", "1234567890123456789"} {
		if _, ok := atoi(s); ok {
			t.Errorf("atoi(%q) ok", s)
		}
	}
}
