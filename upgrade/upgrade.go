//go:build linux

package upgrade

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/upgrade/internal/earlysig"
)

// StateVersion is the version of the state this build writes, and the
// newest it reads. A build reads versions MinStateVersion to StateVersion.
//
// Version 1 is what 14f122a, the last release, wrote; the builds after it
// added, under version 1, the carried signals, the settings ("run"), the
// metrics listener and histograms, the new binary's descriptor and the
// reload callers. Version 2 (development builds only): the supervisor's
// machine writes the kinds of its generations and timers by name, no
// longer as numbers (see package supervisor's golden_test.go), and the
// supervisor's section carries the connection hand-over's Relay.
// Version 3: the writer's pid (the next image refuses a state another
// process wrote), the watcher's protocol (a watcher that speaks an older
// one is replaced), the verdicts given during the hand-over, and the
// control socket's names for its carried reloads. A build reads no
// version newer than its own, so a downgrade to an older build is
// refused at that build's check, before anything is handed over. This
// build reads every version from 1 on, the fields a state predates
// keeping their zero values (the Relay starts empty, a watcher of
// protocol 0 is replaced).
const (
	StateVersion    = 3
	MinStateVersion = 1
)

// CheckArg is the hidden first argument of the check mode: a binary run
// with it prints its Info as JSON and exits 0. The program's main must
// call RunCheck when it sees it.
const CheckArg = "__hitless_upgrade_check"

const (
	envState    = earlysig.StateVar          // the memory file's descriptor
	envComm     = earlysig.CommVar           // the process's name before the exec
	envRollback = "HITLESS_UPGRADE_ROLLBACK" // why the new image gave up
	// envHeld is when the exec'ing image stopped catching signals
	// (CLOCK_MONOTONIC, nanoseconds): the new image says how long none
	// was caught (State.Uncaught).
	envHeld = "HITLESS_UPGRADE_HELD"
)

// Info is what a binary says of itself in the check mode.
type Info struct {
	Hitless bool   `json:"hitless"`
	Version string `json:"version"`
	// States is the range of state versions it reads.
	States [2]int `json:"states"`
	// PID is the process that answered: the one the check started, if
	// it was exec'd in place (a wrapper script that runs hitless without
	// exec answers from a child of its own, and would supervise nothing).
	PID int `json:"pid"`
}

// Self is the running image: where it was started from, and a descriptor
// of its binary, opened at start, to roll back to.
type Self struct {
	// Path is the binary as hitless was started, made absolute but not
	// resolved: an upgrade resolves it afresh, so that a deploy that moves
	// a new file over it, or switches a symlink, is picked up.
	Path string
	// Args and Env are what the next image is started with.
	Args []string
	Env  []string

	image *os.File // this image's binary
}

// Open records the running image. Call it early in main, before anything
// changes the environment, and from the directory hitless was started in.
func Open() (*Self, error) {
	path, err := startPath(os.Args[0])
	if err != nil {
		return nil, fmt.Errorf("upgrade: the path hitless was started from: %w", err)
	}
	image, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("upgrade: open this image: %w", err)
	}
	// What systemd passed (LISTEN_*) was taken by this image; the next
	// one finds its descriptors in the state instead.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "LISTEN_") })
	return &Self{Path: path, Args: slices.Clone(os.Args), Env: env, image: image}, nil
}

// startPath is argv0 as the shell would have run it, absolute.
func startPath(argv0 string) (string, error) {
	if !strings.Contains(argv0, "/") {
		p, err := exec.LookPath(argv0)
		if err != nil {
			return "", err
		}
		argv0 = p
	}
	return filepath.Abs(argv0)
}

// Close releases the descriptor of the image.
func (s *Self) Close() error { return s.image.Close() }

// Binary is a new binary, opened and checked: the file that was checked
// is the file that is executed, whatever a deploy does to the path in
// between.
type Binary struct {
	Path string // as resolved, through symbolic links
	Info Info
	file *os.File
}

// Close releases the binary, for an upgrade that will not happen.
func (b *Binary) Close() error { return b.file.Close() }

// A Starter starts a process and reports its exit status. A program
// whose children are reaped by one loop (hitless's supervisor is a
// subreaper, and owns every wait) must start the check through that loop:
// os/exec would race it for the status.
type Starter func(argv0 string, argv []string, attr *syscall.ProcAttr) (pid int, exited <-chan syscall.WaitStatus, err error)

// Check opens the binary at path (resolved afresh, through symbolic
// links) and runs it in the check mode with start, within ctx, the way
// Exec will run it: through the same descriptor number, open across the
// exec, with s.Env. It refuses, with the reason, anything but a hitless
// that reads this build's StateVersion: a file that is not executable, a
// program that is not hitless (exits otherwise, prints something else), a
// truncated binary, a crash, a state version it does not read. A #!
// script that runs hitless passes, and Exec runs it the same way.
func (s *Self) Check(ctx context.Context, path string, start Starter) (*Binary, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("binary: %w", err)
	}
	f, err := os.Open(real)
	if err != nil {
		return nil, fmt.Errorf("binary: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && (!fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0) {
		err = fmt.Errorf("%s is not an executable file", real)
	}
	var info Info
	if err == nil {
		info, err = runCheck(ctx, real, f, withoutUpgradeVars(s.Env), start)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Binary{Path: real, Info: info, file: f}, nil
}

// runCheck executes the opened binary (at path) in the check mode as
// Exec will: through /proc/self/fd/N, N being its descriptor here too,
// open in the child at that number (an interpreter that runs a #! script
// opens the script by that path, once the kernel has exec'd it), with
// env. The process that answers must be the one it started: Exec keeps
// the pid, and a hitless that is not the process the children's parent
// is cannot supervise them.
func runCheck(ctx context.Context, path string, f *os.File, env []string, start Starter) (Info, error) {
	var info Info
	null, err := os.Open(os.DevNull)
	if err != nil {
		return info, err
	}
	defer null.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return info, err
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return info, err
	}
	defer errR.Close()
	bin := int(f.Fd())
	files := []uintptr{null.Fd(), outW.Fd(), errW.Fd()}
	for len(files) < bin {
		files = append(files, ^uintptr(0)) // closed in the child
	}
	files = append(files, uintptr(bin))
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	pid, exited, err := start(binaryPath(bin), []string{"hitless", CheckArg}, attr)
	outW.Close()
	errW.Close()
	if err != nil {
		return info, fmt.Errorf("the new binary cannot be started: %w", err)
	}
	var stdout, stderr bytes.Buffer
	copied := make(chan struct{}, 2)
	go func() { io.Copy(&limitedWriter{w: &stdout, n: 4096}, outR); copied <- struct{}{} }()
	go func() { io.Copy(&limitedWriter{w: &stderr, n: 4096}, errR); copied <- struct{}{} }()
	var ws syscall.WaitStatus
	select {
	case ws = <-exited:
	case <-ctx.Done():
		syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
		return info, fmt.Errorf("the new binary did not answer its check in time: %w", context.Cause(ctx))
	}
	// Output left by something the check started is not waited for.
	for range 2 {
		select {
		case <-copied:
		case <-time.After(time.Second):
		}
	}
	return checkVerdict(ws, stdout.String(), stderr.String(), path, pid)
}

// checkVerdict reads the outcome of a check of the binary at path that
// ran as pid and ended with ws, having printed stdout and stderr: what
// the new binary says it is, or why it is refused.
func checkVerdict(ws syscall.WaitStatus, stdout, stderr, path string, pid int) (Info, error) {
	var info Info
	switch {
	case ws.Signaled():
		return info, fmt.Errorf("the new binary failed its check: killed by signal %v%s", ws.Signal(), lastLine(stderr))
	case ws.ExitStatus() != 0:
		return info, fmt.Errorf("the new binary failed its check: exit status %d%s", ws.ExitStatus(), lastLine(stderr))
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &info); err != nil || !info.Hitless {
		return info, fmt.Errorf("the new binary is not hitless: its check printed %q", firstLine(stdout))
	}
	if info.States[0] > StateVersion || info.States[1] < StateVersion {
		return info, fmt.Errorf("the new binary (%s) reads state versions %d to %d, not this one's %d", info.Version, info.States[0], info.States[1], StateVersion)
	}
	if info.PID != pid {
		return info, fmt.Errorf("the new binary %s did not exec hitless (its check ran as pid %d and answered from pid %d): a wrapper script must `exec` it", path, pid, info.PID)
	}
	return info, nil
}

// RunCheck is the check mode's main: it prints what this binary is and
// returns the exit status.
func RunCheck(version string) int {
	b, _ := json.Marshal(Info{Hitless: true, Version: version, States: [2]int{MinStateVersion, StateVersion}, PID: os.Getpid()})
	fmt.Println(string(b))
	return 0
}

// State is what one image hands the next across the exec.
type State struct {
	Version  int                        `json:"version"`
	ID       int                        `json:"id"`   // the upgrade's number
	From     string                     `json:"from"` // version of the image that wrote it
	Binary   string                     `json:"binary"`
	Sections map[string]json.RawMessage `json:"sections"`
	FDs      map[string]int             `json:"fds"` // name -> descriptor number
	Image    int                        `json:"image"`
	// PID is the process that wrote the state: the next image must be
	// the same one (version 3 on; 0 before).
	PID int `json:"pid,omitempty"`
	// Signals are the signals (of Signals, by name) the image that wrote
	// the state received and had not handled when it executed the next
	// one, oldest first (added after 14f122a).
	Signals []string `json:"signals,omitempty"`

	// RolledBack is set in the old image after a rollback: why the new
	// image gave up.
	RolledBack string `json:"-"`

	memfd    int
	late     map[string]func() (any, error) // see PutAtExec
	carry    map[string]int                 // to hand over
	files    map[string]*os.File            // handed over, to be taken back by File
	later    []*os.File                     // closed by Commit
	caught   chan os.Signal                 // Signals caught by this image since it started (earlysig)
	uncaught [2]int64                       // see Uncaught
}

// NewState starts the state of upgrade id.
func NewState(id int, from string) *State {
	return &State{Version: StateVersion, ID: id, From: from, PID: os.Getpid(), Sections: map[string]json.RawMessage{}, FDs: map[string]int{}, carry: map[string]int{}}
}

// Put stores v (JSON) as the section name.
func (st *State) Put(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("upgrade: state %s: %w", name, err)
	}
	st.Sections[name] = b
	return nil
}

// PutAtExec stores what v returns as the section name, at the exec (or in
// Loopback): for state that changes until the very end, such as what the
// supervisor observes while it quiesces, after the carriers handed over.
func (st *State) PutAtExec(name string, v func() (any, error)) {
	if st.late == nil {
		st.late = map[string]func() (any, error){}
	}
	st.late[name] = v
}

// putLate stores the sections PutAtExec named.
func (st *State) putLate() error {
	for name, v := range st.late {
		x, err := v()
		if err == nil {
			err = st.Put(name, x)
		}
		if err != nil {
			return fmt.Errorf("upgrade: state %s: %w", name, err)
		}
	}
	return nil
}

// Get reads the section name into v; a missing section is an error.
func (st *State) Get(name string, v any) error {
	b, ok := st.Sections[name]
	if !ok {
		return fmt.Errorf("upgrade: the state has no section %q", name)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("upgrade: state %s: %w", name, err)
	}
	return nil
}

// CarryFD names a descriptor to hand over. It stays open and owned by
// the caller until the exec; Exec clears its close-on-exec flag. A raw
// number, not an *os.File, since os.File.Fd puts a socket in blocking
// mode, and that flag belongs to every process that shares the socket.
func (st *State) CarryFD(name string, fd int) {
	st.carry[name] = fd
}

// CarryConn is CarryFD for a file or a connection: its descriptor is
// named as it is, without os.File.Fd and the blocking mode that comes
// with it.
func (st *State) CarryConn(name string, c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { st.CarryFD(name, int(fd)) })
	}
	if err != nil {
		return fmt.Errorf("upgrade: carry %s: %w", name, err)
	}
	return nil
}

// File takes back the descriptor carried under name; nil if none. The
// caller owns it from then on, but must not close it before Commit: a
// rollback hands the same numbers back.
func (st *State) File(name string) *os.File {
	f := st.files[name]
	delete(st.files, name)
	return f
}

// CloseLater closes f at Commit: a descriptor the caller duplicated into
// something of its own, whose number a rollback would still need.
func (st *State) CloseLater(f *os.File) {
	st.later = append(st.later, f)
}

// Commit ends the restore: it closes what only a rollback would have
// needed (the previous image, the state's memory file, and what was given
// to CloseLater). The carried signals are the caller's from then on.
func (st *State) Commit() {
	st.Signals = nil
	for _, f := range st.later {
		f.Close()
	}
	st.later = nil
	if st.Image >= 0 {
		unix.Close(st.Image)
	}
	if st.memfd >= 0 {
		unix.Close(st.memfd)
	}
}

// Exec replaces this process with bin, handing st over. It must be called
// from the main thread (see the package doc). sigc is the channel the
// program catches Signals on (signal.Notify), nil if it catches none: what
// waits there, and what the kernel holds pending, goes to the next image
// (State.Signals). It returns only on failure, having put everything back
// as it was; st.Signals then holds the signals it took, for the caller to
// handle.
func (s *Self) Exec(bin *Binary, st *State, sigc chan os.Signal) error {
	st.Binary = bin.Path
	var kept []int
	undo := func() {
		for _, fd := range kept {
			unix.CloseOnExec(fd)
		}
	}
	keep := func(name string, fd int) error {
		if err := keepOnExec(fd); err != nil {
			return fmt.Errorf("upgrade: carry %s: %w", name, err)
		}
		kept = append(kept, fd)
		return nil
	}
	for name, fd := range st.carry {
		if err := keep(name, fd); err != nil {
			undo()
			return err
		}
		st.FDs[name] = fd
	}
	if err := st.putLate(); err != nil {
		undo()
		return err
	}
	st.Image = int(s.image.Fd())
	if err := keep("image", st.Image); err != nil {
		undo()
		return err
	}
	// Open across the exec, as in the check: an interpreter that runs a
	// #! script opens it by this path. The next image closes it.
	binfd := int(bin.file.Fd())
	if err := keep(binaryFD, binfd); err != nil {
		undo()
		return err
	}
	st.FDs[binaryFD] = binfd
	err := execHeld(binaryPath(binfd), s.Args, withoutUpgradeVars(s.Env), st, sigc)
	delete(st.FDs, binaryFD)
	undo()
	return fmt.Errorf("upgrade: exec %s: %w", bin.Path, err)
}

// binaryFD names the new binary's descriptor in the state.
const binaryFD = "upgrade/binary"

func binaryPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// execHeld holds the signals (see signals.go), writes st with the ones it
// took, and executes path with env and the state's variable. It returns
// only on failure, with the signals released and st.Signals holding what
// was taken.
func execHeld(path string, argv, env []string, st *State, sigc chan os.Signal) error {
	// The state is written before the signals are held, and again only
	// if some were taken: what the window between the two costs is paid
	// only then.
	mem, err := memfd()
	if err == nil {
		err = writeState(mem, st)
	}
	if err != nil {
		return err
	}
	defer unix.Close(mem)
	env = append(env, envState+"="+strconv.Itoa(mem))
	// The exec through /proc/self/fd/N names the process "N": the next
	// image takes this name back (see package earlysig).
	if comm, err := os.ReadFile("/proc/self/comm"); err == nil {
		env = append(env, envComm+"="+strings.TrimSpace(string(comm)))
	}
	h, err := holdSignals(sigc)
	if err != nil {
		return fmt.Errorf("upgrade: hold signals: %w", err)
	}
	env = append(env, envHeld+"="+strconv.FormatInt(h.at, 10))
	if len(h.caught) > 0 {
		st.Signals = append(st.Signals, signalNames(h.caught)...)
		err = writeState(mem, st)
	}
	if err == nil {
		err = unix.Exec(path, argv, env)
	}
	h.release()
	return err
}

// keepOnExec clears fd's close-on-exec flag: it is for the next image.
func keepOnExec(fd int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
	return err
}

// memfd creates the state's memory file, not close-on-exec: it is for
// the next image.
func memfd() (int, error) {
	fd, err := unix.MemfdCreate("hitless-upgrade-state", 0)
	if err != nil {
		return -1, fmt.Errorf("upgrade: memfd_create: %w", err)
	}
	return fd, nil
}

// writeState writes st to the memory file mem, in place of what it held.
func writeState(mem int, st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("upgrade: state: %w", err)
	}
	if err := unix.Ftruncate(mem, int64(len(b))); err != nil {
		return fmt.Errorf("upgrade: write state: %w", err)
	}
	// Raw writes: an *os.File would close mem when collected.
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(mem, b[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("upgrade: write state: %w", err)
		}
		off += n
	}
	return nil
}

// readMemfd reads the state's memory file from its start, by raw reads:
// an *os.File would close mem when collected, and mem must stay open
// for a rollback until Commit.
func readMemfd(mem int) ([]byte, error) {
	var b []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Pread(mem, buf, int64(len(b)))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return b, nil
		}
		b = append(b, buf[:n]...)
	}
}

func withoutUpgradeVars(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, envState+"=") || strings.HasPrefix(kv, envRollback+"=") || strings.HasPrefix(kv, envHeld+"=") ||
			strings.HasPrefix(kv, envComm+"=")
	})
}

// Inherited returns the state an old image handed over, or nil when this
// process was not started by an upgrade. It takes the carried descriptors
// back (close-on-exec again, until someone carries them anew) and removes
// the upgrade's variables from the environment.
func Inherited() (*State, error) {
	v, ok := os.LookupEnv(envState)
	if !ok {
		return nil, nil
	}
	rolledBack, _ := os.LookupEnv(envRollback)
	held, _ := strconv.ParseInt(os.Getenv(envHeld), 10, 64)
	os.Unsetenv(envState)
	os.Unsetenv(envRollback)
	os.Unsetenv(envHeld)
	os.Unsetenv(envComm)
	mem, err := strconv.Atoi(v)
	if err != nil || mem < 3 {
		return nil, fmt.Errorf("upgrade: %s=%q is not a descriptor", envState, v)
	}
	unix.CloseOnExec(mem)
	b, err := readMemfd(mem)
	if err != nil {
		return nil, fmt.Errorf("upgrade: read the state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("upgrade: the state: %w", err)
	}
	if st.Version < MinStateVersion || st.Version > StateVersion {
		return nil, fmt.Errorf("upgrade: state version %d, this build reads %d to %d", st.Version, MinStateVersion, StateVersion)
	}
	if st.PID != 0 && st.PID != os.Getpid() {
		// Started by a wrapper that did not exec hitless (one that does
		// so only in the check mode): this process is not the parent of
		// the children, nor the pid the service manager knows. Nothing
		// is taken, for nothing here can supervise them.
		return nil, fmt.Errorf("upgrade: the state was handed over by pid %d, and this is pid %d: the new binary did not exec hitless (a wrapper script must `exec` it)", st.PID, os.Getpid())
	}
	st.memfd, st.RolledBack, st.caught = mem, rolledBack, earlysig.Take()
	if at := earlysig.At(); held > 0 && at > held {
		st.uncaught = [2]int64{held, at}
	}
	if fd, ok := st.FDs[binaryFD]; ok {
		unix.Close(fd) // the binary this image runs: nothing to carry
		delete(st.FDs, binaryFD)
	}
	st.files = make(map[string]*os.File, len(st.FDs))
	for name, fd := range st.FDs {
		unix.CloseOnExec(fd)
		st.files[name] = os.NewFile(uintptr(fd), name)
	}
	unix.CloseOnExec(st.Image)
	return &st, nil
}

// Uncaught is when SIGHUP, SIGINT and SIGTERM went uncaught across the
// exec that started this image, as CLOCK_MONOTONIC readings in
// nanoseconds: from the moment the previous image ignored them to the
// moment this one caught them again. A signal sent then was lost (and a
// SIGTERM in the last part of it, once the new runtime had set up its
// handlers, ended the process). Both are zero when unknown.
func (st *State) Uncaught() (from, to int64) { return st.uncaught[0], st.uncaught[1] }

// TakeSignals returns what the previous image carried (its Signals, as
// numbers, oldest first) and the channel on which this image has caught
// Signals since it started (package earlysig's; nil for a state that did
// not come through an exec, such as Loopback's). The caller handles the
// carried ones first, then reads the channel, and gives it to Exec for
// the next upgrade. The carried ones stay in st, for a rollback, until
// Commit.
func (st *State) TakeSignals() ([]syscall.Signal, chan os.Signal) {
	return parseSignals(st.Signals), st.caught
}

// Rollback executes the previous image again with the same state, and
// tells it why. It must be called from the main thread, with every
// carried descriptor still open; it returns only if the exec failed. The
// signals this image caught (TakeSignals's channel, whether or not it was
// taken) go back with the ones it was carried, and the state's memory
// file is written afresh.
func (st *State) Rollback(args, env []string, reason string) error {
	for name, fd := range st.FDs {
		if err := keepOnExec(fd); err != nil {
			return fmt.Errorf("upgrade: rollback: carry %s: %w", name, err)
		}
	}
	if err := keepOnExec(st.Image); err != nil {
		return fmt.Errorf("upgrade: rollback: %w", err)
	}
	env = append(withoutUpgradeVars(env), envRollback+"="+oneLine(reason))
	err := execHeld(binaryPath(st.Image), args, env, st, st.caught)
	return fmt.Errorf("upgrade: rollback: exec the previous image: %w", err)
}

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	return ": " + lines[len(lines)-1]
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Loopback returns the state as the next image would inherit it, in this
// process: the sections through JSON, and each carried descriptor as a
// duplicate. It is for tests of what hands over and what takes back.
func Loopback(st *State) (*State, error) {
	if err := st.putLate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	var next State
	if err := json.Unmarshal(b, &next); err != nil {
		return nil, err
	}
	next.files, next.memfd, next.Image = map[string]*os.File{}, -1, -1
	next.FDs = map[string]int{}
	for name, fd := range st.carry {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return nil, fmt.Errorf("upgrade: dup %s: %w", name, err)
		}
		next.FDs[name] = dup
		next.files[name] = os.NewFile(uintptr(dup), name)
	}
	return &next, nil
}
