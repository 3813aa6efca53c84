//go:build linux

package upgrade

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// The test binary doubles as the images of an upgrade: with helperEnv
// set, TestMain plays one step of it instead of running the tests.
const helperEnv = "UPGRADE_TEST_HELPER"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == CheckArg {
		os.Exit(RunCheck("test"))
	}
	if step, ok := os.LookupEnv(helperEnv); ok {
		if err := helper(step); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Under -race the images are race-enabled binaries, which sleep a
	// second as they exit (GORACE's atexit_sleep_ms).
	os.Setenv("GORACE", harness.NoRaceExitSleep())
	os.Exit(m.Run())
}

// helperState is the section the images hand each other.
type helperState struct {
	PID  int    `json:"pid"`
	Note string `json:"note"`
}

// helper plays one image. "old" writes a section and carries fd 3 (a
// pipe to the test), checks its own binary and execs it as "new". "new"
// reports what it inherited on the carried pipe and exits, or, as
// "new-fails", rolls back to the old image, which reports as "rolled".
func helper(step string) error {
	switch step {
	case "old":
		self, err := Open()
		if err != nil {
			return err
		}
		self.Env = withEnv(self.Env, helperEnv+"="+os.Getenv("UPGRADE_TEST_NEXT"))
		path := self.Path
		if p := os.Getenv("UPGRADE_TEST_BINARY"); p != "" {
			path = p // a wrapper
		}
		bin, err := self.Check(context.Background(), path, startAndWait)
		if err != nil {
			return err
		}
		st := NewState(7, "old")
		if err := st.Put("helper", helperState{PID: os.Getpid(), Note: "from the old image"}); err != nil {
			return err
		}
		st.CarryFD("report", 3)
		// Signals caught and not yet read when the exec comes go to the
		// next image, in order.
		sigc := make(chan os.Signal, 8)
		signal.Notify(sigc, Signals...)
		for _, sig := range []syscall.Signal{syscall.SIGUSR2, syscall.SIGHUP} {
			syscall.Kill(os.Getpid(), sig)
		}
		return self.Exec(bin, st, sigc) // returns only on failure
	case "new-wrapped":
		// Run by a wrapper that did not exec it: a child of the image
		// that handed over. It must take nothing.
		st, err := Inherited()
		report := os.NewFile(3, "report")
		defer report.Close()
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		return json.NewEncoder(report).Encode(map[string]any{"step": step, "inherited": st != nil, "err": msg})
	case "new", "new-fails", "rolled":
		st, err := Inherited()
		if err != nil || st == nil {
			return fmt.Errorf("inherited: %v, %v", st, err)
		}
		carried, caught := st.TakeSignals()
		if caught == nil {
			return fmt.Errorf("no signal caught since the start")
		}
		// Caught from the image's first moments: a SIGTERM now is not
		// the end of it.
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		if s := <-caught; s != syscall.SIGTERM {
			return fmt.Errorf("caught %v, want SIGTERM", s)
		}
		if step == "new-fails" {
			syscall.Kill(os.Getpid(), syscall.SIGINT) // back with the rollback
			for len(caught) == 0 {
				runtime.Gosched()
			}
			// Collect twice, so that anything Inherited left to the
			// collector is cleaned up before the rollback, which needs
			// every descriptor open (an *os.File around the state's
			// memory file once closed it here: EBADF).
			runtime.GC()
			runtime.GC()
			return st.Rollback(os.Args, withEnv(os.Environ(), helperEnv+"=rolled"), "injected\nfailure")
		}
		var h helperState
		if err := st.Get("helper", &h); err != nil {
			return err
		}
		report := st.File("report")
		if report == nil {
			return fmt.Errorf("the pipe was not carried")
		}
		st.Commit()
		defer report.Close()
		from, to := st.Uncaught()
		comm, _ := os.ReadFile("/proc/self/comm")
		var upgradeVars []string
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, "HITLESS_UPGRADE_") {
				upgradeVars = append(upgradeVars, kv)
			}
		}
		return json.NewEncoder(report).Encode(map[string]any{
			"comm": strings.TrimSpace(string(comm)), "upgradeVars": upgradeVars,
			"step": step, "id": st.ID, "from": st.From, "samePID": h.PID == os.Getpid(),
			"note": h.Note, "rolledBack": st.RolledBack, "stateVar": os.Getenv(envState),
			"signals": sortedNames(carried), "uncaught": to - from, "fds": openFDs(),
		})
	}
	return fmt.Errorf("unknown step %q", step)
}

// sortedNames names sigs, sorted: each one counts, not their order,
// which the runtime gives in signal-number order within what it caught
// at once.
func sortedNames(sigs []syscall.Signal) string {
	names := signalNames(sigs)
	slices.Sort(names)
	return strings.Join(names, " ")
}

// openFDs lists the descriptors open in this process.
func openFDs() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var fds []string
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fds = append(fds, e.Name()+"="+target)
	}
	return fds
}

// withEnv sets kv in env, replacing the variable's earlier value.
func withEnv(env []string, kv string) []string {
	name, _, _ := strings.Cut(kv, "=")
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return append(out, kv)
}

// startAndWait is a Starter for a process with no other children.
func startAndWait(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	pid, err := syscall.ForkExec(argv0, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	exited := make(chan syscall.WaitStatus, 1)
	go func() {
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
		exited <- ws
	}()
	return pid, exited, nil
}

// runUpgrade runs the old image with next as the step of the image it
// execs, and returns what the last image reported on the carried pipe;
// env is added to the old image's environment.
func runUpgrade(t *testing.T, next string, env ...string) map[string]any {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), helperEnv+"=old", "UPGRADE_TEST_NEXT="+next), env...)
	cmd.ExtraFiles = []*os.File{w}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the images: %v\n%s", err, stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("report %q: %v\n%s", line, err, stderr.String())
	}
	return got
}

// An upgrade end to end, in a process of its own: the new image has the
// same pid, the old image's section and the carried descriptor, and the
// state's variable is gone from its environment. The signals the old
// image caught and had not handled come with it, in order; the new one
// catches them from its first moments, and says how long nothing caught
// them. Of the new binary's descriptor, opened for the exec, nothing is
// left, and the process keeps its name (the exec through /proc/self/fd/N
// would name it "N", out of reach of pgrep -x, pkill and killall).
func TestExecHandsOver(t *testing.T) {
	got := runUpgrade(t, "new")
	want := map[string]any{"step": "new", "id": 7.0, "from": "old", "samePID": true, "note": "from the old image", "rolledBack": "", "stateVar": "",
		"signals": "SIGHUP SIGUSR2", "comm": testComm()}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (report %v)", k, got[k], v, got)
		}
	}
	if u, _ := got["uncaught"].(float64); u <= 0 || u > float64(10*time.Second) {
		t.Errorf("uncaught for %v", time.Duration(u))
	}
	if got["upgradeVars"] != nil {
		t.Errorf("the new image's environment keeps %v", got["upgradeVars"])
	}
	self, _ := os.Executable()
	for _, fd := range got["fds"].([]any) {
		if _, target, _ := strings.Cut(fd.(string), "="); target == self {
			t.Errorf("the new image holds its binary open: fd %s", fd)
		}
	}
	t.Logf("signals uncaught across the exec for %v", time.Duration(got["uncaught"].(float64)))
}

// A new image that gives up executes the old one again, which inherits
// the same state and learns why, on one line. The signals it was carried,
// and those it caught itself, go back with it.
func TestRollback(t *testing.T) {
	got := runUpgrade(t, "new-fails")
	if got["step"] != "rolled" || got["samePID"] != true || got["note"] != "from the old image" || got["rolledBack"] != "injected failure" {
		t.Errorf("after the rollback: %v", got)
	}
	if got["signals"] != "SIGHUP SIGINT SIGUSR2" {
		t.Errorf("signals carried back: %v", got["signals"])
	}
	if got["comm"] != testComm() {
		t.Errorf("the process is named %q after the upgrade and the rollback, %q before", got["comm"], testComm())
	}
}

// testComm is the name of a process started from this test binary (the
// kernel keeps 15 bytes of the file's name).
func testComm() string {
	name := filepath.Base(os.Args[0])
	return name[:min(len(name), 15)]
}

// A #! script that executes hitless passes the check and is executed the
// same way: the interpreter opens the script through the descriptor the
// check and the exec both use.
func TestExecScript(t *testing.T) {
	wrapper := filepath.Join(t.TempDir(), "wrapper")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec \""+os.Args[0]+"\" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got := runUpgrade(t, "new", "UPGRADE_TEST_BINARY="+wrapper)
	if got["step"] != "new" || got["samePID"] != true {
		t.Errorf("through a wrapper: %v", got)
	}
}

// A binary that execs hitless in the check mode, and runs it as a child
// of its own otherwise, passes the check, but the process that the exec
// starts is not the one that handed over: Inherited refuses the state,
// which nothing there could supervise with.
func TestExecWrapperWithoutExec(t *testing.T) {
	wrapper := filepath.Join(t.TempDir(), "wrapper")
	body := "#!/bin/sh\nif [ \"$1\" = " + CheckArg + " ]; then exec \"" + os.Args[0] + "\" \"$@\"; fi\n\"" + os.Args[0] + "\" \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	got := runUpgrade(t, "new-wrapped", "UPGRADE_TEST_BINARY="+wrapper)
	if got["inherited"] != false || !strings.Contains(got["err"].(string), "the new binary did not exec hitless") {
		t.Errorf("a new image that is a child of the old one: %v", got)
	}
}

// Check runs the binary in the check mode and refuses, with the reason,
// anything that is not a hitless reading this build's state.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// What a hitless prints in the check mode, from the shell's pid.
	info := func(lo, hi int) string {
		b, _ := json.Marshal(Info{Hitless: true, Version: "v9", States: [2]int{lo, hi}, PID: 123456789})
		return "echo '" + strings.Replace(string(b), "123456789", "'$$'", 1) + "'"
	}
	good := script("good", info(MinStateVersion, StateVersion), 0o755)
	link := filepath.Join(dir, "current")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"hitless", good, ""},
		{"through a symlink", link, ""},
		{"this test binary", os.Args[0], ""},
		{"exits 3", script("exit3", "echo boom >&2; exit 3", 0o755), "the new binary failed its check: exit status 3: boom"},
		{"not hitless", script("true", "echo hello", 0o755), `the new binary is not hitless: its check printed "hello"`},
		{"version 1 only (14f122a)", script("v1", info(1, 1), 0o755), "the new binary (v9) reads state versions 1 to 1, not this one's 3"},
		{"newer state", script("newer", info(StateVersion+1, StateVersion+1), 0o755), "the new binary (v9) reads state versions " + strconv.Itoa(StateVersion+1)},
		{"not executable", script("plain", info(1, 1), 0o644), "is not an executable file"},
		{"a directory", dir, "is not an executable file"},
		{"missing", filepath.Join(dir, "nothing"), "no such file or directory"},
		{"killed", script("killed", "kill -9 $$", 0o755), "killed by signal killed"},
		{"a wrapper without exec", script("noexec", `"`+os.Args[0]+`" "$@"`, 0o755), "did not exec hitless (its check ran as pid"},
		{"a wrapper with exec", script("exec", `exec "`+os.Args[0]+`" "$@"`, 0o755), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, err := (&Self{}).Check(context.Background(), tc.path, startAndWait)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer bin.Close()
				if real, _ := filepath.EvalSymlinks(tc.path); bin.Path != real {
					t.Errorf("Path = %s, want %s", bin.Path, real)
				}
				return
			}
			if err == nil {
				bin.Close()
				t.Fatalf("accepted; want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
		})
	}
}

// A check that does not answer is killed at the context's deadline.
func TestCheckTimeout(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hang")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := (&Self{}).Check(ctx, p, startAndWait); err == nil || !strings.Contains(err.Error(), "did not answer its check in time") {
		t.Errorf("Check of a binary that hangs = %v", err)
	}
}

// Loopback gives what the next image would inherit: the sections, and a
// duplicate of each carried descriptor.
func TestLoopback(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	st := NewState(3, "v1")
	if err := st.Put("s", map[string]int{"n": 42}); err != nil {
		t.Fatal(err)
	}
	if err := st.CarryConn("pipe", w); err != nil {
		t.Fatal(err)
	}
	next, err := Loopback(st)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]int
	if err := next.Get("s", &got); err != nil || got["n"] != 42 || next.ID != 3 || next.From != "v1" {
		t.Errorf("section %v (%v), id %d, from %q", got, err, next.ID, next.From)
	}
	if err := next.Get("missing", &got); err == nil {
		t.Error("a missing section was read")
	}
	f := next.File("pipe")
	if f == nil || next.File("pipe") != nil || next.File("other") != nil {
		t.Fatal("File: each carried descriptor is taken back once, by its name")
	}
	io.WriteString(f, "x")
	f.Close()
	b := make([]byte, 1)
	if _, err := r.Read(b); err != nil || b[0] != 'x' {
		t.Errorf("the duplicate does not write to the pipe: %q %v", b, err)
	}
}
