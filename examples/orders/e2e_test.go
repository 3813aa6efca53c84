package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
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
	// The hitless module, not this one.
	if err := harness.Build("../..", hitless, "./cmd/hitless"); err != nil {
		t.Skipf("hitless does not build yet, so there is nothing to run the demo under:\n%v", err)
	}
	orders := filepath.Join(bin, "orders")
	if err := harness.Build("", orders, "."); err != nil {
		t.Fatalf("building the demo: %v", err)
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
	failures                        map[harness.Class]int
}

func runDemo(t *testing.T, hitless, orders string, keepAlive, slow, lameDuck bool, reloads int) outcome {
	dir := t.TempDir()
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "orders.db")
	cmd := []string{orders, "-listen", addr, "-db", db, "-write-delay", "20ms"}
	if slow {
		cmd = append(cmd, "-handler-delay", "50ms")
	}
	if !lameDuck {
		cmd = append(cmd, "-lame-duck", "-1ns")
	}
	h := harness.Start(t, harness.Options{
		Hitless: hitless,
		Args:    []string{"--listen", "http=tcp://" + addr, "--drain-timeout", "30s"},
		Command: cmd,
	})

	var retried atomic.Int64
	load := placeOrders(h.Addr(), 6, keepAlive, &retried)
	defer load.Stop()
	between := int64(300)
	if slow {
		between = 60
	}
	waitOK(t, load, between)
	for range reloads {
		h.Reload()
		waitOK(t, load, between)
	}
	res := load.Stop()

	h.Signal(syscall.SIGTERM)
	if code := h.Wait(60 * time.Second); code != 0 {
		t.Errorf("hitless exit status %d", code)
	}
	out, err := exec.Command(orders, "-db", db, "-count").Output()
	if err != nil {
		t.Fatalf("counting orders: %v", err)
	}
	stored, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return outcome{requests: int(res.Sent()), failed: int(res.Failed()), lost: int(res.OK()) - stored, retried: int(retried.Load()), failures: res.Failures()}
}

func waitOK(t *testing.T, load *harness.Load, n int64) {
	t.Helper()
	if err := load.WaitOK(n, 30*time.Second); err != nil {
		t.Fatalf("load: %v", err)
	}
}

// placeOrders POSTs orders until stopped, for at most five minutes. Each
// carries an Idempotency-Key, as a careful client's POST does; retried
// counts the requests Go's client sent twice because an idle keep-alive
// connection was closed under them.
func placeOrders(addr string, workers int, keepAlive bool, retried *atomic.Int64) *harness.Load {
	return harness.StartLoad(context.Background(), harness.LoadOptions{
		Workers:   workers,
		KeepAlive: keepAlive,
		Duration:  5 * time.Minute,
		Timeout:   30 * time.Second,
		Want:      http.StatusAccepted,
		NewRequest: func(n int64) (*http.Request, error) {
			var attempts atomic.Int64
			trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
				if attempts.Add(1) > 1 {
					retried.Add(1)
				}
			}}
			req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
				http.MethodPost, "http://"+addr+"/orders", strings.NewReader(`{"item":"widget","qty":1}`))
			if err != nil {
				return nil, err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "e2e-"+strconv.FormatInt(n, 10))
			return req, nil
		},
	})
}
