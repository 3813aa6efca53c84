package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
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

// TestReloadUnderHitless is the end-to-end proof: the orders demo under the
// real hitless binary, POST load with keep-alive on and off, a fast and a
// slow handler, several reloads (SIGHUP): no failed request and no
// acknowledged order missing from the database. The same runs with the
// lame duck off are reported side by side.
func TestReloadUnderHitless(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end reloads take a while; run without -short")
	}
	bin := t.TempDir()
	hitless := filepath.Join(bin, "hitless")
	build := exec.Command("go", "build", "-o", hitless, "./cmd/hitless")
	build.Dir = "../.." // the hitless module, not this one
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("hitless does not build yet, so there is nothing to run the demo under:\n%s", out)
	}
	orders := filepath.Join(bin, "orders")
	if out, err := exec.Command("go", "build", "-o", orders, ".").CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}

	const reloads = 3
	type row struct {
		name    string
		on, off outcome
	}
	var rows []row
	for _, keepAlive := range []bool{true, false} {
		for _, slow := range []bool{false, true} {
			r := row{name: fmt.Sprintf("keepalive=%v handler=%s", keepAlive, map[bool]string{false: "fast", true: "slow(50ms)"}[slow])}
			for _, lameDuck := range []bool{true, false} {
				t.Run(fmt.Sprintf("keepalive=%v/slow=%v/lameduck=%v", keepAlive, slow, lameDuck), func(t *testing.T) {
					o := runDemo(t, hitless, orders, keepAlive, slow, lameDuck, reloads)
					if lameDuck {
						r.on = o
						if o.failed != 0 || o.lost != 0 {
							t.Errorf("%d of %d requests failed (%v); %d acknowledged orders not stored", o.failed, o.requests, o.failures, o.lost)
						}
					} else {
						r.off = o
						if o.lost != 0 {
							t.Errorf("%d acknowledged orders not stored", o.lost)
						}
					}
				})
			}
			rows = append(rows, r)
		}
	}
	t.Logf("%d reloads per run under hitless; per run: failed/requests, lost orders, Go client retries of idle-connection races", reloads)
	t.Logf("%-34s | %-36s | %s", "", "lame duck on", "lame duck off")
	for _, r := range rows {
		t.Logf("%-34s | failed=%d/%d lost=%d retried=%-8d | failed=%d/%d lost=%d retried=%d %v", r.name,
			r.on.failed, r.on.requests, r.on.lost, r.on.retried, r.off.failed, r.off.requests, r.off.lost, r.off.retried, r.off.failures)
	}
}

type outcome struct {
	requests, failed, lost, retried int
	failures                        map[string]int
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func runDemo(t *testing.T, hitless, orders string, keepAlive, slow, lameDuck bool, reloads int) outcome {
	dir := t.TempDir()
	addr := "127.0.0.1:" + freePort(t)
	db := filepath.Join(dir, "orders.db")
	args := []string{"run", "--listen", "http=tcp://" + addr, "--drain-timeout", "30s", "--",
		orders, "-listen", addr, "-db", db, "-write-delay", "20ms"}
	if slow {
		args = append(args, "-handler-delay", "50ms")
	}
	if !lameDuck {
		args = append(args, "-lame-duck", "-1ns")
	}
	logPath := filepath.Join(dir, "hitless.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(hitless, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("hitless log:\n%s", b)
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill() })

	base := "http://" + addr
	pid := waitNewPID(t, base, 0)
	ctx, cancel := context.WithCancel(context.Background())
	var progress atomic.Int64
	done := make(chan *load)
	go func() { done <- runLoad(ctx, base, 6, keepAlive, &progress) }()
	between := int64(300)
	if slow {
		between = 60
	}
	waitProgress(t, &progress, between)
	for range reloads {
		cmd.Process.Signal(syscall.SIGHUP)
		pid = waitNewPID(t, base, pid)
		waitProgress(t, &progress, between)
	}
	cancel()
	res := <-done

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("hitless exit: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("hitless did not exit after SIGTERM")
	}
	out, err := exec.Command(orders, "-db", db, "-count").Output()
	if err != nil {
		t.Fatalf("counting orders: %v", err)
	}
	stored, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return outcome{requests: res.ok + res.failed, failed: res.failed, lost: res.ok - stored, retried: int(res.retried.Load()), failures: res.failures}
}

// waitNewPID polls /healthz until a process other than old answers: how a
// reload's effect shows from outside. The deadline bounds it.
func waitNewPID(t *testing.T, base string, old int) int {
	t.Helper()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			var h struct {
				PID    int
				Status string
			}
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err == nil && h.PID != old && h.Status == "ok" {
				return h.PID
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no process other than %d answered %s/healthz", old, base)
	return 0
}

func waitProgress(t *testing.T, p *atomic.Int64, n int64) {
	t.Helper()
	target := p.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for p.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("load made no progress (%d of %d)", p.Load(), target)
		}
		time.Sleep(5 * time.Millisecond) // a counter has nothing to wait on
	}
}

type load struct {
	mu       sync.Mutex
	ok       int
	failed   int
	failures map[string]int
	retried  atomic.Int64
}

// runLoad POSTs orders until ctx is done. Each carries an Idempotency-Key,
// as a careful client's POST does; retried counts the requests Go's client
// sent twice because an idle keep-alive connection was closed under them.
func runLoad(ctx context.Context, base string, workers int, keepAlive bool, progress *atomic.Int64) *load {
	res := &load{failures: map[string]int{}}
	tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: workers}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				ref := fmt.Sprintf("e2e-%d-%d", w, i)
				attempts := 0
				trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { attempts++ }}
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
					http.MethodPost, base+"/orders", strings.NewReader(`{"item":"widget","qty":1}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", ref)
				resp, err := client.Do(req)
				if attempts > 1 {
					res.retried.Add(int64(attempts - 1))
				}
				res.mu.Lock()
				switch {
				case err != nil:
					res.failed++
					res.failures[classify(err)]++
				case resp.StatusCode != http.StatusAccepted:
					res.failed++
					res.failures["status "+resp.Status]++
				default:
					res.ok++
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
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case strings.Contains(err.Error(), "EOF"):
		return "EOF"
	}
	return err.Error()
}
