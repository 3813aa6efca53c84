// Command loadgen sends a bounded stream of POST /orders to the orders
// demo and counts what happened: acknowledged (202) orders, and failures
// by class. It prints one JSON object (with -json) or one summary line.
//
//	loadgen -url http://127.0.0.1:8080 -n 5000 -c 8 -rate 500 -keepalive=false
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
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
	res := run(ctx, *url, *n, *c, *rate, *keepAlive, *idempotency, *timeout)
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

func run(ctx context.Context, url string, n, workers int, rate float64, keepAlive, idempotency bool, timeout time.Duration) Result {
	start := time.Now()
	tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: workers}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: timeout}

	jobs := make(chan int)
	go func() { // the pacer owns jobs
		defer close(jobs)
		var tick *time.Ticker
		if rate > 0 {
			tick = time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer tick.Stop()
		}
		for i := range n {
			if tick != nil {
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()

	var mu sync.Mutex
	res := Result{Failures: map[string]int{}, KeepAlive: keepAlive, Idempotency: idempotency}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				ref := fmt.Sprintf("loadgen-%d-%d", start.UnixNano(), i)
				body := fmt.Sprintf(`{"item":"widget","qty":%d,"ref":%q}`, i%5+1, ref)
				req, _ := http.NewRequest(http.MethodPost, url+"/orders", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if idempotency {
					req.Header.Set("Idempotency-Key", ref)
				}
				resp, err := client.Do(req)
				class := ""
				switch {
				case err != nil:
					class = classify(err)
				case resp.StatusCode != http.StatusAccepted:
					class = "status " + resp.Status
				}
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				res.Sent++
				if class == "" {
					res.Acknowledged++
				} else {
					res.Failed++
					res.Failures[class]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	return res
}

func classify(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case strings.Contains(msg, "server closed idle connection"):
		return "server closed idle connection"
	case strings.Contains(msg, "EOF"):
		return "closed without response (EOF)"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "Timeout"):
		return "timeout"
	}
	return msg
}
