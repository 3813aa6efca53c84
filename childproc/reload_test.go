package childproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeSupervisor does what hitless does, minimally: it holds the listening
// socket, starts generations of the test server on it (fd 3, LISTEN_FDS),
// waits for READY=1 on a private NOTIFY_SOCKET, then SIGTERMs the previous
// generation and waits for it to exit.
type fakeSupervisor struct {
	t     *testing.T
	ln    *net.TCPListener
	fd    uintptr // the listener's own descriptor, for ForkExec
	env   []string
	dir   string
	count int
}

type generation struct {
	n      int
	proc   *os.Process
	log    string
	exited chan error
}

func newFakeSupervisor(t *testing.T, env ...string) *fakeSupervisor {
	ln := listenLocal(t).(*net.TCPListener)
	t.Cleanup(func() { ln.Close() })
	s := &fakeSupervisor{t: t, ln: ln, dir: t.TempDir()}
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// The raw descriptor, not ln.File(): (*os.File).Fd would put the
	// shared socket into blocking mode for every generation (see
	// go-process-gotchas.md), and a running Go child would then hang in
	// accept during its drain.
	rc.Control(func(fd uintptr) { s.fd = fd })
	s.env = append(os.Environ(), helperEnv+"=server", "CHILDPROC_TEST_SETPID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=http",
		"CHILDPROC_TEST_ADDR="+ln.Addr().String())
	s.env = append(s.env, env...)
	return s
}

func (s *fakeSupervisor) addr() string { return s.ln.Addr().String() }

func (s *fakeSupervisor) start() *generation {
	t := s.t
	s.count++
	notify := newNotifyListener(t)
	logPath := filepath.Join(s.dir, fmt.Sprintf("gen%d.log", s.count))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	pid, err := syscall.ForkExec(os.Args[0], []string{os.Args[0]}, &syscall.ProcAttr{
		Env:   append(s.env, "NOTIFY_SOCKET="+notify.path),
		Files: []uintptr{null.Fd(), logf.Fd(), logf.Fd(), s.fd},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	proc, _ := os.FindProcess(pid)
	g := &generation{n: s.count, proc: proc, log: logPath, exited: make(chan error, 1)}
	go func() {
		st, err := proc.Wait()
		if err == nil && !st.Success() {
			err = errors.New(st.String())
		}
		g.exited <- err
	}()
	t.Cleanup(func() { proc.Kill() })
	select {
	case m := <-notify.msgs:
		if !strings.Contains(m, "READY=1") {
			t.Fatalf("generation %d: first notification %q", g.n, m)
		}
	case err := <-g.exited:
		t.Fatalf("generation %d exited before READY=1: %v\n%s", g.n, err, g.output())
	case <-time.After(testWait):
		t.Fatalf("generation %d not ready\n%s", g.n, g.output())
	}
	return g
}

func (g *generation) output() string {
	b, _ := os.ReadFile(g.log)
	return string(b)
}

// stop sends SIGTERM and waits for a clean exit.
func (g *generation) stop(t *testing.T) {
	t.Helper()
	g.proc.Signal(syscall.SIGTERM)
	select {
	case err := <-g.exited:
		if err != nil {
			t.Fatalf("generation %d: %v\n%s", g.n, err, g.output())
		}
	case <-time.After(testWait):
		t.Fatalf("generation %d did not exit after SIGTERM\n%s", g.n, g.output())
	}
}

// loadResult counts what a load run saw.
type loadResult struct {
	mu       sync.Mutex
	ok       int
	failures map[string]int
	acked    map[string]bool
}

func (r *loadResult) failed() int {
	n := 0
	for _, k := range r.failures {
		n += k
	}
	return n
}

// runLoad POSTs orders from workers until ctx is done. progress counts
// acknowledged orders, so the caller can wait for traffic, not for time.
func runLoad(ctx context.Context, addr string, workers int, keepAlive, slow bool, progress *atomic.Int64) *loadResult {
	res := &loadResult{failures: map[string]int{}, acked: map[string]bool{}}
	tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: workers}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				url := "http://" + addr + "/orders?id=" + id
				if slow {
					url += "&slow=1"
				}
				req, _ := http.NewRequest("POST", url, strings.NewReader(`{"item":"x"}`))
				resp, err := client.Do(req)
				res.mu.Lock()
				switch {
				case err != nil:
					res.failures[classify(err)]++
				case resp.StatusCode != http.StatusAccepted:
					res.failures["status "+strconv.Itoa(resp.StatusCode)]++
				default:
					res.ok++
					res.acked[id] = true
					progress.Add(1)
				}
				res.mu.Unlock()
				if resp != nil {
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	return res
}

func classify(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case strings.Contains(err.Error(), "server closed idle connection"):
		return "server closed idle connection"
	case strings.Contains(err.Error(), "EOF"):
		return "EOF (closed without response)"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(err.Error(), "Timeout"):
		return "timeout"
	}
	return err.Error()
}

func waitProgress(t *testing.T, p *atomic.Int64, n int64) {
	t.Helper()
	target := p.Load() + n
	deadline := time.Now().Add(testWait)
	for p.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("load made no progress (%d of %d)", p.Load(), target)
		}
		// The counter has no channel to wait on; yielding in a tight loop
		// would steal a core from the server on a small machine.
		time.Sleep(time.Millisecond)
	}
}

func readStored(t *testing.T, path string) map[string]bool {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stored := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		stored[sc.Text()] = true
	}
	return stored
}

type reloadOutcome struct {
	requests, failed, lost int
	failures               map[string]int
}

func runReloads(t *testing.T, keepAlive, slow, lameDuck bool, reloads int) reloadOutcome {
	store := filepath.Join(t.TempDir(), "orders.txt")
	env := []string{"CHILDPROC_TEST_STORE=" + store}
	if !lameDuck {
		env = append(env, "CHILDPROC_TEST_LAMEDUCK=-1ns")
	}
	sup := newFakeSupervisor(t, env...)
	cur := sup.start()

	ctx, cancel := context.WithCancel(context.Background())
	// Traffic between reloads, in acknowledged orders: enough that every
	// drain starts with requests in flight on every connection.
	between := int64(150)
	if slow {
		between = 30
	}
	var progress atomic.Int64
	done := make(chan *loadResult)
	go func() { done <- runLoad(ctx, sup.addr(), 6, keepAlive, slow, &progress) }()
	waitProgress(t, &progress, between)
	for range reloads {
		next := sup.start()
		cur.stop(t)
		cur = next
		waitProgress(t, &progress, between)
	}
	cancel()
	res := <-done
	cur.stop(t)

	stored := readStored(t, store)
	lost := 0
	for id := range res.acked {
		if !stored[id] {
			lost++
		}
	}
	return reloadOutcome{requests: res.ok + res.failed(), failed: res.failed(), lost: lost, failures: res.failures}
}

// TestReloadUnderLoad is the integration proof for the library: a server
// built on childproc, reloaded under POST load by a supervisor that does
// what hitless does, loses no request and no acknowledged order; the same
// run without the lame duck shows what it buys.
func TestReloadUnderLoad(t *testing.T) {
	reloads := 5
	if raceEnabled {
		reloads = 2
	}
	type row struct {
		name    string
		on, off reloadOutcome
	}
	var rows []row
	for _, keepAlive := range []bool{true, false} {
		for _, slow := range []bool{false, true} {
			name := fmt.Sprintf("keepalive=%v/handler=%s", keepAlive, map[bool]string{false: "fast", true: "slow"}[slow])
			var r row
			r.name = name
			t.Run(name+"/lameduck=on", func(t *testing.T) {
				r.on = runReloads(t, keepAlive, slow, true, reloads)
				if r.on.failed != 0 || r.on.lost != 0 {
					t.Errorf("%d of %d requests failed (%v), %d acknowledged orders lost", r.on.failed, r.on.requests, r.on.failures, r.on.lost)
				}
			})
			if !testing.Short() && !raceEnabled {
				t.Run(name+"/lameduck=off", func(t *testing.T) {
					r.off = runReloads(t, keepAlive, slow, false, reloads)
					if r.off.lost != 0 {
						t.Errorf("%d acknowledged orders lost", r.off.lost)
					}
				})
			}
			rows = append(rows, r)
		}
	}
	t.Logf("%d reloads per run; failed requests / requests, lost orders:", reloads)
	t.Logf("%-34s %-28s %-28s", "", "lame duck on", "lame duck off (close listener, then Shutdown)")
	for _, r := range rows {
		t.Logf("%-34s failed=%d/%d lost=%-8d failed=%d/%d lost=%d %v", r.name,
			r.on.failed, r.on.requests, r.on.lost, r.off.failed, r.off.requests, r.off.lost, r.off.failures)
	}
}
