// Command loadgen sends a bounded stream of POST /orders to the orders
// demo and counts what happened: acknowledged (202) orders, and failures
// by class (internal/harness's load and classes). It prints one JSON
// object (with -json) or one summary line.
//
//	loadgen -url http://127.0.0.1:8080 -n 5000 -c 8 -rate 500 -keepalive=false
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// Result is what loadgen reports.
type Result struct {
	Sent         int            `json:"sent"`
	Acknowledged int            `json:"acknowledged"`
	Failed       int            `json:"failed"`
	Failures     map[string]int `json:"failures"`
	KeepAlive    bool           `json:"keepalive"`
	Idempotency  bool           `json:"idempotency_key"`
	Seconds      float64        `json:"seconds"`
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "base URL of the orders server")
	n := flag.Int("n", 2000, "orders to send in total")
	c := flag.Int("c", 8, "concurrent clients")
	rate := flag.Float64("rate", 0, "orders per second over all clients (0: as fast as possible)")
	keepAlive := flag.Bool("keepalive", true, "reuse connections; false opens a new connection per request")
	timeout := flag.Duration("timeout", 30*time.Second, "per-request timeout")
	maxTime := flag.Duration("max-time", 10*time.Minute, "stop sending after this long, whatever is left of -n")
	idempotency := flag.Bool("idempotency-key", true, "send an Idempotency-Key with each POST, as a careful client does; Go's client then retries a POST whose idle keep-alive connection the server closed just as it was sent (a race in HTTP/1.1 itself, not in the server)")
	asJSON := flag.Bool("json", false, "print a JSON object instead of a summary line")
	waitPID := flag.Int("wait-new-pid", -1, "instead of sending orders: wait until GET /healthz answers from a pid other than this one (0: any), print that pid and exit")
	deadline := flag.Duration("deadline", 30*time.Second, "with -wait-new-pid: give up after this long")
	flag.Parse()

	if *waitPID >= 0 {
		pid, err := waitNewPID(*url, *waitPID, *deadline)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		fmt.Println(pid)
		return
	}

	// Ctrl-C stops sending; what was sent is still reported.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res := run(ctx, *url, *n, *c, *rate, *keepAlive, *idempotency, *timeout, *maxTime)
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	fmt.Println(summary(res))
}

// waitNewPID polls /healthz until a process other than old answers: the
// effect of a reload. Polling is the only way to observe it from outside;
// the deadline bounds it.
func waitNewPID(url string, old int, deadline time.Duration) (int, error) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	end := time.Now().Add(deadline)
	var last error
	for time.Now().Before(end) {
		resp, err := client.Get(url + "/healthz")
		if err == nil {
			var h struct {
				PID    int    `json:"pid"`
				Status string `json:"status"`
			}
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err == nil && h.PID != old && h.Status == "ok" {
				return h.PID, nil
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("no process other than pid %d answered %s/healthz within %s (last error: %v)", old, url, deadline, last)
}

func summary(r Result) string {
	classes := make([]string, 0, len(r.Failures))
	for k, v := range r.Failures {
		classes = append(classes, fmt.Sprintf("%q=%d", k, v))
	}
	sort.Strings(classes)
	s := fmt.Sprintf("sent=%d acknowledged=%d failed=%d keepalive=%v idempotency_key=%v seconds=%.1f", r.Sent, r.Acknowledged, r.Failed, r.KeepAlive, r.Idempotency, r.Seconds)
	if len(classes) > 0 {
		s += " failures: " + strings.Join(classes, " ")
	}
	return s
}

func run(ctx context.Context, url string, n, workers int, rate float64, keepAlive, idempotency bool, timeout, maxTime time.Duration) Result {
	start := time.Now()
	tally := harness.StartLoad(ctx, harness.LoadOptions{
		Workers:   workers,
		KeepAlive: keepAlive,
		Requests:  int64(n),
		Duration:  maxTime,
		Rate:      rate,
		Timeout:   timeout,
		Want:      http.StatusAccepted,
		NewRequest: func(i int64) (*http.Request, error) {
			ref := fmt.Sprintf("loadgen-%d-%d", start.UnixNano(), i)
			body := fmt.Sprintf(`{"item":"widget","qty":%d,"ref":%q}`, i%5+1, ref)
			req, err := http.NewRequest(http.MethodPost, url+"/orders", strings.NewReader(body))
			if err != nil {
				return nil, err
			}
			req.Header.Set("Content-Type", "application/json")
			if idempotency {
				req.Header.Set("Idempotency-Key", ref)
			}
			return req, nil
		},
	}).Wait()
	res := Result{
		Sent:         int(tally.Sent()),
		Acknowledged: int(tally.OK()),
		Failed:       int(tally.Failed()),
		Failures:     map[string]int{},
		KeepAlive:    keepAlive,
		Idempotency:  idempotency,
		Seconds:      time.Since(start).Seconds(),
	}
	for c, k := range tally.Failures() {
		res.Failures[string(c)] = k
	}
	return res
}
