package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TB is the part of testing.TB the harness uses: *testing.T satisfies it,
// and a command can supply its own. Fatalf must not return: testing's
// ends the goroutine with runtime.Goexit, and a command's should do the
// same once it has recorded the failure, so call the harness's failing
// methods only from the goroutine that owns the TB.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	Failed() bool
}

// Options says how to run `hitless run`.
type Options struct {
	// Hitless is the hitless binary.
	Hitless string
	// Client is the binary that answers `hitless status`; empty means
	// Hitless. Status is polled often: a suite that builds Hitless with
	// the race detector saves time with a plain build here.
	Client string
	// Args are flags of `hitless run`, before "--". Without a --listen
	// the harness adds http=tcp://127.0.0.1:0 (unless NoListen); without
	// a --control or --name, a --control socket of the instance's own
	// (see DefaultControl). --log-format json is always given.
	Args []string
	// Command is the child: a program and its arguments.
	Command []string
	// Env is added to the environment hitless gets.
	Env []string
	// Wrap runs hitless under this command, which must run it as its
	// only child (e.g. unshare --pid --fork); nil runs hitless directly.
	Wrap []string
	// Exec runs hitless through this command, which must exec it in its
	// own process, as a service manager does: e.g. sh -c 'LISTEN_PID=$$
	// exec "$0" "$@"', so that LISTEN_PID is hitless's pid.
	Exec []string
	// Files are passed to hitless as descriptors 3, 4, ..., as systemd
	// passes sockets (with LISTEN_FDS in Env).
	Files []*os.File
	// NoListen adds no --listen: hitless takes the sockets in Files.
	NoListen bool
	// NoWait makes Start return once hitless listens, before the first
	// child serves.
	NoWait bool
	// DefaultControl leaves the control socket where hitless puts it by
	// default (NAME.sock in the default directory), instead of a socket
	// in a directory of the instance's own.
	DefaultControl bool
}

// Hitless is one hitless process. It reads every line hitless writes to
// stderr (its JSON log, and the children's stderr passed through) as it
// comes; the JSON lines with a "msg" are its records.
type Hitless struct {
	t       TB
	cmd     *exec.Cmd
	client  string   // binary for `hitless status`
	control string   // control socket, once known
	addrs   []string // the sockets' addresses, in --listen order
	wrapped int      // hitless's pid when it runs under a wrapper
	exited  chan struct{}
	state   *os.ProcessState // set before exited is closed

	mu      sync.Mutex
	records []Record
	output  bytes.Buffer
	changed chan struct{} // closed and replaced at each line
}

// Record is one JSON log record of hitless.
type Record struct {
	At     time.Time // when the harness read it
	Fields map[string]any
}

// Msg is the record's message.
func (r Record) Msg() string { return r.Str("msg") }

// Str is the string field k, or "".
func (r Record) Str(k string) string { s, _ := r.Fields[k].(string); return s }

// Int is the numeric field k, or 0. Durations are logged in nanoseconds.
func (r Record) Int(k string) int {
	f, _ := r.Fields[k].(float64)
	return int(f)
}

func (r Record) String() string {
	b, _ := json.Marshal(r.Fields)
	return string(b)
}

// Is matches records whose message is msg.
func Is(msg string) func(Record) bool {
	return func(r Record) bool { return r.Msg() == msg }
}

// IsGen matches records whose message is msg about generation gen.
func IsGen(msg string, gen int) func(Record) bool {
	return func(r Record) bool { return r.Msg() == msg && r.Int("generation") == gen }
}

// Start runs `hitless run` around o.Command, and waits until it listens
// and, unless o.NoWait, until a generation serves. A cleanup stops it and,
// if the test failed, logs what it wrote.
func Start(t TB, o Options) *Hitless {
	t.Helper()
	args := []string{"run", "--log-format", "json"}
	if !o.NoListen && !hasFlag(o.Args, "--listen") {
		args = append(args, "--listen", "http=tcp://127.0.0.1:0")
	}
	if !o.DefaultControl && !hasFlag(o.Args, "--control") && !hasFlag(o.Args, "--name") {
		args = append(args, "--control", filepath.Join(ShortDir(t), "c.sock"))
	}
	args = append(append(append(args, o.Args...), "--"), o.Command...)
	h := Launch(t, o, args...)
	h.client = o.Client
	if h.client == "" {
		h.client = o.Hitless
	}
	// Both facts are logged once, at start, before any child runs; the
	// records are the first sign of life, and cost no client run.
	h.control = h.WaitFor(10*time.Second, Is("control socket")).Str("path")
	h.addrs = strings.Fields(h.WaitFor(10*time.Second, Is("listening")).Str("sockets"))
	if o.Wrap != nil {
		kids, err := Children(h.cmd.Process.Pid)
		if err != nil || len(kids) != 1 {
			t.Fatalf("wrapper %v has children %v (%v), want one hitless", o.Wrap, kids, err)
		}
		for pid := range kids {
			h.wrapped = pid
		}
	}
	if !o.NoWait {
		h.WaitStatus(10*time.Second, func(s Status) bool { _, ok := s.Serving(); return ok })
	}
	return h
}

// ShortDir returns a new directory, removed at cleanup, whose path is
// short enough for unix sockets in it: a socket's path holds at most 107
// bytes, which a test's TempDir can exceed.
func ShortDir(t TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hl")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func hasFlag(args []string, f string) bool {
	for _, a := range args {
		if a == f || strings.HasPrefix(a, f+"=") {
			return true
		}
	}
	return false
}

// Launch runs o.Hitless with exactly args, under o.Wrap or through
// o.Exec, with o.Env and o.Files (the rest of o is not used), and collects
// what it writes to stderr; it waits for nothing. A cleanup stops it. A
// hitless built with the race detector is told not to sleep as it exits
// (see environ), nor are the hitless binaries it execs.
func Launch(t TB, o Options, args ...string) *Hitless {
	t.Helper()
	h := &Hitless{t: t, exited: make(chan struct{}), changed: make(chan struct{})}
	argv := append(append(append(append([]string{}, o.Wrap...), o.Exec...), o.Hitless), args...)
	h.cmd = exec.Command(argv[0], argv[1:]...)
	h.cmd.Env = environ(o.Env...)
	h.cmd.ExtraFiles = o.Files
	h.cmd.Stdout = io.Discard
	stderr, err := h.cmd.StderrPipe()
	if err != nil {
		t.Fatalf("hitless: %v", err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("hitless: %v", err)
	}
	go h.read(stderr)
	t.Cleanup(func() {
		h.Stop()
		if t.Failed() {
			t.Logf("hitless output:\n%s", h.Output())
		}
	})
	return h
}

// read collects stderr until hitless closes it, then reaps hitless. It
// is owned by h and ends with the process.
func (h *Hitless) read(stderr io.Reader) {
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		r := Record{At: time.Now()}
		h.mu.Lock()
		h.output.Write(line)
		h.output.WriteByte('\n')
		if json.Unmarshal(line, &r.Fields) == nil && r.Fields["msg"] != nil {
			h.records = append(h.records, r)
		}
		close(h.changed)
		h.changed = make(chan struct{})
		h.mu.Unlock()
	}
	h.cmd.Wait()
	h.state = h.cmd.ProcessState
	close(h.exited)
}

// PID is hitless's pid: the process started, or its only child when it
// runs under a wrapper.
func (h *Hitless) PID() int {
	if h.wrapped != 0 {
		return h.wrapped
	}
	return h.cmd.Process.Pid
}

// Addr is the address of the first socket hitless listens on.
func (h *Hitless) Addr() string {
	if len(h.addrs) == 0 {
		return ""
	}
	return h.addrs[0]
}

// Addrs are the addresses of every socket, in --listen order.
func (h *Hitless) Addrs() []string { return h.addrs }

// Control is the path of the control socket.
func (h *Hitless) Control() string { return h.control }

// Output is everything hitless wrote to stderr so far.
func (h *Hitless) Output() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.output.String()
}

// Mark returns a cursor into the records: the index of the next one.
func (h *Hitless) Mark() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.records)
}

// Records returns the records from index from on.
func (h *Hitless) Records(from int) []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Record(nil), h.records[from:]...)
}

// WaitFor waits for the first record, from the start, that matches pred.
func (h *Hitless) WaitFor(d time.Duration, pred func(Record) bool) Record {
	h.t.Helper()
	_, r := h.WaitSince(0, d, pred)
	return r
}

// WaitSince waits for the first record at index from or later that
// matches pred, and returns its index and the record. It fails if d
// passes first, or if hitless exits without writing one.
func (h *Hitless) WaitSince(from int, d time.Duration, pred func(Record) bool) (int, Record) {
	h.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		for i := from; i < len(h.records); i++ {
			if pred(h.records[i]) {
				r := h.records[i]
				h.mu.Unlock()
				return i, r
			}
		}
		from = len(h.records)
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-h.exited:
			if h.Mark() == from {
				h.t.Fatalf("hitless exited (%v) before the awaited log record", h.state)
			}
		case <-deadline.C:
			h.t.Fatalf("no awaited log record within %v", d)
		}
	}
}

// WaitOutput waits until what hitless wrote to stderr contains s: the
// children's own lines pass through there.
func (h *Hitless) WaitOutput(d time.Duration, s string) {
	h.t.Helper()
	if !h.OutputWithin(d, s) {
		h.t.Fatalf("output never contained %q within %v", s, d)
	}
}

// OutputWithin reports whether what hitless wrote to stderr contains s
// within d, for a test that expects it may not.
func (h *Hitless) OutputWithin(d time.Duration, s string) bool {
	return h.OutputCount(d, s, 1)
}

// OutputCount reports whether what hitless wrote to stderr contains s at
// least n times within d.
func (h *Hitless) OutputCount(d time.Duration, s string, n int) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		ok := bytes.Count(h.output.Bytes(), []byte(s)) >= n
		changed := h.changed
		h.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// Signal sends sig to hitless.
func (h *Hitless) Signal(sig syscall.Signal) {
	h.t.Helper()
	if err := syscall.Kill(h.PID(), sig); err != nil {
		h.t.Fatalf("signal %v to hitless: %v", sig, err)
	}
}

// Reload sends SIGHUP and waits, on the status, until a generation newer
// than every one there before serves; it returns that generation.
func (h *Hitless) Reload() Generation {
	h.t.Helper()
	newest := 0
	for _, g := range h.Status().Generations {
		newest = max(newest, g.Generation)
	}
	h.Signal(syscall.SIGHUP)
	g, _ := h.WaitStatus(30*time.Second, func(s Status) bool {
		g, ok := s.Serving()
		return ok && g.Generation > newest
	}).Serving()
	return g
}

// ReloadDrained reloads and also waits until the generations before are
// gone, so that only the new one answers.
func (h *Hitless) ReloadDrained() Generation {
	h.t.Helper()
	g := h.Reload()
	h.WaitStatus(40*time.Second, func(s Status) bool { return len(s.Generations) == 1 })
	return g
}

// Wait waits for hitless to exit, for at most d, and returns its exit
// status (-1 if a signal ended it).
func (h *Hitless) Wait(d time.Duration) int {
	h.t.Helper()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-h.exited:
	case <-t.C:
		h.t.Fatalf("hitless still running after %v", d)
	}
	return h.state.ExitCode()
}

// WaitExit reports whether hitless exits within d, for a test that
// expects it may not.
func (h *Hitless) WaitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-h.exited:
		return true
	case <-t.C:
		return false
	}
}

// ExitCode is the exit status of hitless once it exited (-1 if a signal
// ended it); ExitSignal the signal that ended it, if one did.
func (h *Hitless) ExitCode() int { <-h.exited; return h.state.ExitCode() }

func (h *Hitless) ExitSignal() syscall.Signal {
	<-h.exited
	if ws, ok := h.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

// Stop sends SIGTERM, unless hitless has exited, and waits for the exit;
// after 40 s it kills hitless.
func (h *Hitless) Stop() {
	select {
	case <-h.exited:
		return
	default:
	}
	syscall.Kill(h.PID(), syscall.SIGTERM)
	t := time.NewTimer(40 * time.Second)
	defer t.Stop()
	select {
	case <-h.exited:
	case <-t.C:
		h.cmd.Process.Kill()
		if h.wrapped != 0 {
			syscall.Kill(h.wrapped, syscall.SIGKILL)
		}
		<-h.exited
	}
}
