package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// record is one JSON log line of hitless, with the time it was read.
type record struct {
	at time.Time
	m  map[string]any
}

func (r record) msg() string         { s, _ := r.m["msg"].(string); return s }
func (r record) str(k string) string { s, _ := r.m[k].(string); return s }
func (r record) int(k string) int64 {
	f, _ := r.m[k].(float64)
	return int64(f)
}

// Hitless is a running hitless whose JSON log is read as it comes.
type Hitless struct {
	cmd    *exec.Cmd
	Addr   string
	exited chan struct{}

	mu      sync.Mutex
	records []record
	changed chan struct{}
}

// startHitless runs hitless around the test server on an ephemeral
// loopback port and waits until the first child serves.
func startHitless(b *bins, flags []string, serverArgs ...string) (*Hitless, error) {
	args := []string{"run", "--log-format", "json", "--listen", "http=tcp://127.0.0.1:0"}
	args = append(args, flags...)
	args = append(args, "--", b.server)
	args = append(args, serverArgs...)
	h := &Hitless{cmd: exec.Command(b.hitless, args...), exited: make(chan struct{}), changed: make(chan struct{})}
	h.cmd.Stdout = io.Discard
	stderr, err := h.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if len(line) == 0 || line[0] != '{' {
				continue // the children's own output
			}
			r := record{at: time.Now()}
			if json.Unmarshal(line, &r.m) != nil {
				continue
			}
			h.mu.Lock()
			h.records = append(h.records, r)
			close(h.changed)
			h.changed = make(chan struct{})
			h.mu.Unlock()
		}
		h.cmd.Wait()
		close(h.exited)
	}()
	_, r, err := h.waitFor(0, 10*time.Second, func(r record) bool { return r.msg() == "listening" })
	if err != nil {
		h.Stop()
		return nil, err
	}
	h.Addr = strings.Fields(r.str("sockets"))[0]
	if _, _, err := h.waitFor(0, 10*time.Second, is("serving")); err != nil {
		h.Stop()
		return nil, err
	}
	return h, nil
}

func is(msg string) func(record) bool { return func(r record) bool { return r.msg() == msg } }

func (h *Hitless) PID() int { return h.cmd.Process.Pid }

func (h *Hitless) mark() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.records)
}

// waitFor waits for the first record at index from or later that matches.
func (h *Hitless) waitFor(from int, d time.Duration, pred func(record) bool) (int, record, error) {
	deadline := time.After(d)
	for {
		h.mu.Lock()
		for i := from; i < len(h.records); i++ {
			if pred(h.records[i]) {
				r := h.records[i]
				h.mu.Unlock()
				return i, r, nil
			}
		}
		from = len(h.records)
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-h.exited:
			return 0, record{}, fmt.Errorf("hitless exited before the awaited record")
		case <-deadline:
			return 0, record{}, fmt.Errorf("no awaited hitless record within %v", d)
		}
	}
}

// since returns the records from index from on.
func (h *Hitless) since(from int) []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]record(nil), h.records[from:]...)
}

func (h *Hitless) signal(sig syscall.Signal) error { return h.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits for hitless to exit.
func (h *Hitless) Stop() {
	h.signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(40 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
	}
}

// Direct is the test server run on its own, bound to a fixed address:
// the baseline, and the naive stop-then-start restart.
type Direct struct {
	b    *bins
	Addr string
	args []string

	cmd    *exec.Cmd
	ready  chan struct{}
	exited chan struct{}
}

func startDirect(b *bins, addr string, args ...string) (*Direct, error) {
	d := &Direct{b: b, Addr: addr, args: args}
	return d, d.start()
}

func (d *Direct) start() error {
	d.cmd = exec.Command(d.b.server, append([]string{"-addr", d.Addr}, d.args...)...)
	d.cmd.Env = cleanEnv()
	d.cmd.Stdout = io.Discard
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := d.cmd.Start(); err != nil {
		return err
	}
	ready, exited := make(chan struct{}), make(chan struct{})
	d.ready, d.exited = ready, exited
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.OnceFunc(func() { close(ready) })
		for sc.Scan() {
			if strings.Contains(sc.Text(), `msg="childproc: serving"`) {
				once()
			}
		}
		d.cmd.Wait()
		close(exited)
	}()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("test server exited at start")
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		return fmt.Errorf("test server not serving within 10s")
	}
}

// restart is the naive restart: SIGTERM, wait for the exit, start again.
func (d *Direct) restart() error {
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited
	return d.start()
}

func (d *Direct) Stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited
}

// cleanEnv is the environment without any socket-passing variables, so
// that the test server binds its own address.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "SERVER_STARTER_") || strings.HasPrefix(k, "EINHORN_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// procUsage reads a process's resident memory (bytes), CPU time (user +
// system) and open descriptors from /proc.
type procUsage struct {
	RSS int64
	CPU time.Duration
	FDs int
}

func usage(pid int) (procUsage, error) {
	var u procUsage
	p := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(p + "/status")
	if err != nil {
		return u, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			u.RSS = kb << 10
		}
	}
	stat, err := os.ReadFile(p + "/stat")
	if err != nil {
		return u, err
	}
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat[i+1:]))
	// Fields after the command: state(0) ppid(1) ... utime(11) stime(12), in clock ticks.
	if len(f) > 12 {
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		u.CPU = time.Duration(ut+st) * time.Second / clockTicks
	}
	ents, err := os.ReadDir(p + "/fd")
	if err == nil {
		u.FDs = len(ents)
	}
	return u, nil
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc.
const clockTicks = 100

// directStarts starts the test server n times the way a bare supervisor
// would (fork+exec with an inherited socket and a notify socket of the
// bench's own) and returns, for each, the time from the start to its
// READY=1: the floor any supervisor pays for the same child.
func directStarts(b *bins, n int, tmp string) ([]time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	path := tmp + "/direct-notify"
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	env := append(cleanEnv(), "SERVER_STARTER_PORT="+ln.Addr().String()+"=3", "NOTIFY_SOCKET="+path)
	var out []time.Duration
	buf := make([]byte, 4096)
	for range n {
		cmd := exec.Command(b.server)
		cmd.Env, cmd.ExtraFiles = env, []*os.File{lf}
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		nc.SetReadDeadline(t0.Add(10 * time.Second))
		for {
			k, err := nc.Read(buf)
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				return nil, fmt.Errorf("direct start: no READY=1: %w", err)
			}
			if strings.Contains("\n"+string(buf[:k])+"\n", "\nREADY=1\n") {
				break
			}
		}
		out = append(out, time.Since(t0))
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	return out, nil
}
