package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var bin struct{ hitless, server string }

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "hitless-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Every hitless run takes a control socket, by default in
	// $XDG_RUNTIME_DIR: give this run its own, so that concurrent test
	// runs (and a hitless on the machine) do not meet.
	os.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	os.Unsetenv("HITLESS_CONTROL")
	bin.hitless = filepath.Join(dir, "hitless")
	bin.server = filepath.Join(dir, "testserver")
	build := func(out, pkg string, race bool) error {
		args := []string{"build", "-o", out}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Run()
	}
	if err := build(bin.hitless, "github.com/hitless/hitless/cmd/hitless", raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, "build hitless:", err)
		return 1
	}
	if err := build(bin.server, "github.com/hitless/hitless/internal/e2e/testserver", false); err != nil {
		fmt.Fprintln(os.Stderr, "build testserver:", err)
		return 1
	}
	return m.Run()
}

// record is one JSON log line of hitless.
type record map[string]any

func (r record) msg() string { s, _ := r["msg"].(string); return s }
func (r record) int(k string) int {
	f, _ := r[k].(float64)
	return int(f)
}
func (r record) str(k string) string { s, _ := r[k].(string); return s }

// proc is a running hitless.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	addr    string // first socket's bound address
	wrapped int    // hitless's pid when it runs under a wrapper
	exited  chan struct{}
	state   *os.ProcessState

	mu      sync.Mutex
	records []record
	output  bytes.Buffer
	changed chan struct{} // closed and replaced on each new line
}

type opts struct {
	env    []string
	args   []string // extra hitless flags, before --
	srv    []string // extra testserver flags
	cmd    []string // replaces the testserver command entirely
	noWait bool     // do not wait for the first child to serve
	wrap   []string // run hitless under this command (e.g. unshare)
}

// startHitless runs hitless around the test server on an ephemeral
// loopback port and waits for it to listen.
func startHitless(t *testing.T, o opts) *proc {
	t.Helper()
	args := []string{"run", "--log-format", "json"}
	if !hasFlag(o.args, "--listen") {
		args = append(args, "--listen", "http=tcp://127.0.0.1:0")
	}
	args = append(args, o.args...)
	args = append(args, "--")
	if o.cmd != nil {
		args = append(args, o.cmd...)
	} else {
		args = append(args, bin.server)
		args = append(args, o.srv...)
	}
	p := startWrapped(t, o.env, o.wrap, args...)
	rec := p.waitFor(10*time.Second, func(r record) bool { return r.msg() == "listening" })
	p.addr = strings.Fields(rec.str("sockets"))[0]
	if o.wrap != nil {
		kids := children(t, p.cmd.Process.Pid)
		if len(kids) != 1 {
			t.Fatalf("wrapper %v has children %v, want one hitless", o.wrap, kids)
		}
		for pid := range kids {
			p.wrapped = pid
		}
	}
	if !o.noWait {
		p.waitFor(10*time.Second, msgIs("serving"))
	}
	return p
}

func hasFlag(args []string, f string) bool {
	for _, a := range args {
		if a == f || strings.HasPrefix(a, f+"=") {
			return true
		}
	}
	return false
}

// startRaw runs the hitless binary with args and collects its stderr.
func startRaw(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startWrapped(t, env, nil, args...)
}

// startWrapped runs hitless under wrap (a command such as unshare that
// execs its arguments in a child), or directly when wrap is nil.
func startWrapped(t *testing.T, env, wrap []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, exited: make(chan struct{}), changed: make(chan struct{})}
	if wrap != nil {
		p.cmd = exec.Command(wrap[0], append(append(wrap[1:len(wrap):len(wrap)], bin.hitless), args...)...)
	} else {
		p.cmd = exec.Command(bin.hitless, args...)
	}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = io.Discard
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			var r record
			p.mu.Lock()
			p.output.Write(line)
			p.output.WriteByte('\n')
			if json.Unmarshal(line, &r) == nil && r["msg"] != nil {
				p.records = append(p.records, r)
			}
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(15 * time.Second):
				p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("hitless output:\n%s", p.logs())
		}
	})
	return p
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// pid is hitless's pid as seen from the test: the process started, or
// its only child when it runs under a wrapper.
func (p *proc) pid() int {
	if p.wrapped == 0 {
		return p.cmd.Process.Pid
	}
	return p.wrapped
}

// mark returns a cursor into the records, for waitSince.
func (p *proc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.records)
}

func (p *proc) waitFor(d time.Duration, pred func(record) bool) record {
	p.t.Helper()
	_, r := p.waitSince(0, d, pred)
	return r
}

// waitSince waits for the first record at or after index from that
// matches pred, and returns its index and the record.
func (p *proc) waitSince(from int, d time.Duration, pred func(record) bool) (int, record) {
	p.t.Helper()
	deadline := time.After(d)
	for {
		p.mu.Lock()
		for i := from; i < len(p.records); i++ {
			if pred(p.records[i]) {
				r := p.records[i]
				p.mu.Unlock()
				return i, r
			}
		}
		from = len(p.records)
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.exited:
			p.mu.Lock()
			n := len(p.records)
			p.mu.Unlock()
			if n == from {
				p.t.Fatalf("hitless exited (%v) before the awaited log record", p.state)
			}
		case <-deadline:
			p.t.Fatalf("no awaited log record within %v", d)
		}
	}
}

func msgIs(msg string) func(record) bool {
	return func(r record) bool { return r.msg() == msg }
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := syscall.Kill(p.pid(), sig); err != nil {
		p.t.Fatal(err)
	}
}

// reload sends SIGHUP and waits for the generation it starts to serve.
func (p *proc) reload() record {
	p.t.Helper()
	m := p.mark()
	p.signal(syscall.SIGHUP)
	_, r := p.waitSince(m, 30*time.Second, msgIs("serving"))
	return r
}

// reloadDrained reloads and also waits for the previous generation to
// finish draining, so that only the new one answers.
func (p *proc) reloadDrained() record {
	p.t.Helper()
	m := p.mark()
	r := p.reload()
	p.waitSince(m, 40*time.Second, msgIs("drained"))
	return r
}

// wait waits for hitless to exit and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("hitless still running after %v", d)
	}
	return p.state.ExitCode()
}

// info is what the test server reports on GET /info.
type info struct {
	PID        int               `json:"pid"`
	PPID       int               `json:"ppid"`
	PGID       int               `json:"pgid"`
	Generation string            `json:"generation"`
	Env        map[string]string `json:"env"`
	Inode      uint64            `json:"inode"`
	FDs        []string          `json:"fds"`
}

func getInfo(t *testing.T, addr string) info {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/info")
	if err != nil {
		t.Fatalf("GET /info: %v", err)
	}
	defer resp.Body.Close()
	var in info
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
		t.Fatalf("GET /info: %v", err)
	}
	return in
}

// loadResult counts the outcome of a load run.
type loadResult struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       map[string]int
}

func (r *loadResult) fail(err string) {
	r.failed.Add(1)
	r.mu.Lock()
	if r.errs == nil {
		r.errs = map[string]int{}
	}
	r.errs[err]++
	r.mu.Unlock()
}

func (r *loadResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("ok=%d failed=%d errors=%v", r.ok.Load(), r.failed.Load(), r.errs)
}

// load sends POSTs (which no client retries) from workers goroutines until
// ctx ends or max requests were sent. Each request must answer 200.
func load(ctx context.Context, addr string, workers int, keepAlive bool, ms int, max int64) *loadResult {
	res := &loadResult{}
	tr, client, url := workClient(addr, workers, keepAlive, ms)
	defer tr.CloseIdleConnections()
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && sent.Add(1) <= max {
				if fail := postWork(client, url); fail != "" {
					res.fail(fail)
				} else {
					res.ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return res
}

// workClient is an HTTP client for POST /work?ms=MS, with keep-alive on
// or off, and the URL to post to.
func workClient(addr string, workers int, keepAlive bool, ms int) (*http.Transport, *http.Client, string) {
	tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: workers}
	url := "http://" + addr + "/work"
	if ms > 0 {
		url += "?ms=" + strconv.Itoa(ms)
	}
	return tr, &http.Client{Transport: tr, Timeout: 20 * time.Second}, url
}

// postWork sends one POST, which no client retries, and returns "" when
// it was answered 200, or the class of the failure.
func postWork(client *http.Client, url string) string {
	resp, err := client.Post(url, "text/plain", strings.NewReader("payload"))
	if err != nil {
		return classify(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "status " + resp.Status
	}
	return ""
}

func classify(err error) string {
	s := err.Error()
	for _, c := range []string{"connection refused", "connection reset", "EOF", "timeout", "closed"} {
		if strings.Contains(s, c) {
			return c
		}
	}
	return s
}

// fdCount counts the open descriptors of a process.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// children lists the pids whose parent is pid, zombies included, with
// their state letter.
func children(t *testing.T, pid int) map[int]string {
	t.Helper()
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[1] == strconv.Itoa(pid) {
			out[cpid] = f[0]
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// waitUntil polls cond, a check of outside state with no event to wait
// on (the kernel's process table), until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
