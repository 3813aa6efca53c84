package childproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
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

// orders POSTs orders, each with an id of its own, from workers clients
// until stopped, for at most two minutes; acked collects the ids the
// server acknowledged (202).
func orders(addr string, workers int, keepAlive, slow bool) (load *harness.Load, acked func() map[string]bool) {
	var mu sync.Mutex
	ids := map[string]bool{}
	load = harness.StartLoad(context.Background(), harness.LoadOptions{
		Workers:   workers,
		KeepAlive: keepAlive,
		Duration:  2 * time.Minute,
		Want:      http.StatusAccepted,
		NewRequest: func(n int64) (*http.Request, error) {
			url := "http://" + addr + "/orders?id=o" + strconv.FormatInt(n, 10)
			if slow {
				url += "&slow=1"
			}
			return http.NewRequest(http.MethodPost, url, strings.NewReader(`{"item":"x"}`))
		},
		OnResult: func(req *http.Request, err error) {
			if err == nil {
				mu.Lock()
				ids[req.URL.Query().Get("id")] = true
				mu.Unlock()
			}
		},
	})
	return load, func() map[string]bool {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(ids)
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
	failures               map[harness.Class]int
}

func runReloads(t *testing.T, keepAlive, slow, lameDuck bool, reloads int) reloadOutcome {
	store := filepath.Join(t.TempDir(), "orders.txt")
	env := []string{"CHILDPROC_TEST_STORE=" + store}
	if !lameDuck {
		env = append(env, "CHILDPROC_TEST_LAMEDUCK=-1ns")
	}
	sup := newFakeSupervisor(t, env...)
	cur := sup.start()

	// Traffic between reloads, in acknowledged orders: enough that every
	// drain starts with requests in flight on every connection.
	between := int64(150)
	if slow {
		between = 30
	}
	load, acked := orders(sup.addr(), 6, keepAlive, slow)
	defer load.Stop()
	waitOK(t, load, between)
	for range reloads {
		next := sup.start()
		cur.stop(t)
		cur = next
		waitOK(t, load, between)
	}
	res := load.Stop()
	cur.stop(t)

	stored := readStored(t, store)
	lost := 0
	for id := range acked() {
		if !stored[id] {
			lost++
		}
	}
	return reloadOutcome{requests: int(res.Sent()), failed: int(res.Failed()), lost: lost, failures: res.Failures()}
}

func waitOK(t *testing.T, load *harness.Load, n int64) {
	t.Helper()
	if err := load.WaitOK(n, testWait); err != nil {
		t.Fatalf("load: %v", err)
	}
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
