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
	"unsafe"
)

func TestMain(m *testing.M) {
	if os.Getenv("HIDDEN_TEST_PDEATHSIG") != "" {
		// The program a shim ran: say what parent-death signal it has.
		var sig int32
		syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_GET_PDEATHSIG, uintptr(unsafe.Pointer(&sig)), 0)
		fmt.Println("pdeathsig", sig)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runShim starts the test binary, which links this package, as the shim,
// and gives it msg on its start pipe (nil: the pipe closes empty).
func runShim(t *testing.T, msg []byte) (stdout, stderr string, report []byte, code int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sr, sw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/proc/self/exe", ShimArg, "3", "4")
	cmd.Env = []string{}
	cmd.ExtraFiles = []*os.File{w, sr}
	// As the supervisor starts it: the shim dies with its parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	sr.Close()
	// The shim reports before it reads: a standby reports at its start.
	var at [8]byte
	if _, err := io.ReadFull(r, at[:]); err != nil {
		t.Fatalf("no report before the start message: %v", err)
	}
	sw.Write(msg)
	sw.Close()
	rest, _ := io.ReadAll(r)
	cmd.Wait()
	return out.String(), errb.String(), append(at[:], rest...), cmd.ProcessState.ExitCode()
}

// The shim reports when it ran, runs the program in the directory, with
// the arguments and environment of its start message, sets LISTEN_PID
// (and WATCHDOG_PID with a watchdog) to its pid, which the program keeps,
// and the program sees neither of the shim's pipes nor a blocked signal.
func TestShim(t *testing.T) {
	before := Monotonic()
	dir := t.TempDir()
	// grep reads its own mask, by exec: the shell's may be all blocked
	// for the instant it forks a command.
	script := `echo "$$ $LISTEN_PID ${WATCHDOG_PID:-none} $KEEP $(pwd) $0 $1"; for fd in 3 4; do [ -e /proc/$$/fd/$fd ] && echo fd $fd open; done; exec grep SigBlk /proc/self/status`
	for _, tc := range []struct {
		env      []string
		watchdog string
	}{
		{[]string{"KEEP=kept"}, "none"},
		{[]string{"KEEP=kept", "WATCHDOG_USEC=1000000"}, "pid"},
	} {
		out, errb, report, code := runShim(t, StartMessage(dir, "/bin/sh", []string{"sh", "-c", script, "zero", ""}, tc.env))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		f := strings.Fields(lines[0])
		if len(f) != 6 || f[0] != f[1] || f[3] != "kept" || f[4] != dir || f[5] != "zero" {
			t.Errorf("pid, LISTEN_PID, WATCHDOG_PID, KEEP, working directory, $0: %q", lines[0])
		}
		if want := map[string]string{"none": "none", "pid": f[0]}[tc.watchdog]; len(f) == 6 && f[2] != want {
			t.Errorf("WATCHDOG_PID %q, want %q", f[2], want)
		}
		if len(lines) != 2 {
			t.Errorf("the program got the shim's pipes: %q", out)
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

// The shim dies with hitless until it has its program, the program does
// not: the watcher drains it when hitless dies in an upgrade's exec.
func TestShimClearsParentDeathSignal(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, errb, _, code := runShim(t, StartMessage("/", self, []string{"program"}, []string{"HIDDEN_TEST_PDEATHSIG=1"}))
	if code != 0 || strings.TrimSpace(out) != "pdeathsig 0" {
		t.Errorf("exit %d, the program says %q (stderr %q), want pdeathsig 0", code, out, errb)
	}
}

// A program that cannot be executed, or a directory that cannot be
// entered: exit status 127 and why, as a shell's; the report pipe closes
// at the exit. A start pipe closed empty (a standby let go of) runs
// nothing and exits 0; a message cut short runs nothing either.
func TestShimFails(t *testing.T) {
	for _, tc := range []struct {
		name, stderr string
		msg          []byte
		code         int
	}{
		{"exec", "exec /nonexistent/prog: no such file or directory", StartMessage("/", "/nonexistent/prog", []string{"prog"}, nil), ExecFailed},
		{"chdir", "chdir /nonexistent: no such file or directory", StartMessage("/nonexistent", "/bin/true", []string{"true"}, nil), ExecFailed},
		{"let go", "", nil, 0},
		{"cut short", "no whole start message", StartMessage("/", "/bin/true", []string{"true"}, []string{"A=1"})[:20], ExecFailed},
	} {
		_, errb, report, code := runShim(t, tc.msg)
		if code != tc.code || !strings.Contains(errb, tc.stderr) || (tc.stderr == "" && errb != "") {
			t.Errorf("%s: exit %d, stderr %q", tc.name, code, errb)
		}
		if len(report) != 8 {
			t.Errorf("%s: report %q", tc.name, report)
		}
	}
}

// A start message reads back whole, empty strings included, and a message
// cut anywhere, or followed by anything, is refused.
func TestStartMessage(t *testing.T) {
	want := start{dir: "/srv/app", prog: "/srv/app/bin/server", argv: []string{"server", "", "-x"}, env: []string{"A=1", "B="}}
	msg := StartMessage(want.dir, want.prog, want.argv, want.env)
	got, ok := parseStart(msg)
	if !ok || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("parseStart = %+v, %v; want %+v", got, ok, want)
	}
	for i := range msg {
		if st, ok := parseStart(msg[:i]); ok {
			t.Errorf("the first %d of %d bytes read as %+v", i, len(msg), st)
		}
	}
	if _, ok := parseStart(append(msg, 'x', 0)); ok {
		t.Error("a message with a field after it was read")
	}
	if _, ok := parseStart(StartMessage("/", "/bin/true", nil, nil)); ok {
		t.Error("a message without argv[0] was read")
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
