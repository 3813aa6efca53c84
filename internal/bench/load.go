package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Failure classes, in the order the tables show them.
const (
	classRefused = "refused"
	classReset   = "reset"
	classEOF     = "EOF"
	classTimeout = "timeout"
	classStatus  = "non-2xx"
	classOther   = "other"
)

var failureClasses = []string{classRefused, classReset, classEOF, classTimeout, classStatus, classOther}

// classify files a client error under one failure class.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return classRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return classReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return classEOF
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return classTimeout
	}
	// net/http wraps some causes in plain strings.
	s := err.Error()
	switch {
	case strings.Contains(s, "connection refused"):
		return classRefused
	case strings.Contains(s, "connection reset"), strings.Contains(s, "broken pipe"):
		return classReset
	case strings.Contains(s, "EOF"), strings.Contains(s, "server closed idle connection"):
		return classEOF
	case strings.Contains(s, "timeout"), strings.Contains(s, "deadline exceeded"):
		return classTimeout
	}
	return classOther
}

// Tally counts outcomes and keeps the latency of each success.
type Tally struct {
	mu       sync.Mutex
	Sent     int
	OK       int
	Fail     map[string]int
	Examples map[string]string // one error message per class
	lat      []time.Duration
}

func newTally() *Tally {
	return &Tally{Fail: map[string]int{}, Examples: map[string]string{}}
}

func (t *Tally) ok(d time.Duration) {
	t.mu.Lock()
	t.Sent++
	t.OK++
	t.lat = append(t.lat, d)
	t.mu.Unlock()
}

func (t *Tally) fail(class, msg string) {
	t.mu.Lock()
	t.Sent++
	t.Fail[class]++
	if _, ok := t.Examples[class]; !ok {
		t.Examples[class] = msg
	}
	t.mu.Unlock()
}

// Failed is the number of failed requests.
func (t *Tally) Failed() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, v := range t.Fail {
		n += v
	}
	return n
}

// Pct returns the p-th percentile (0 < p <= 100) of successful requests'
// latency.
func (t *Tally) Pct(p float64) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return percentile(t.lat, p)
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// failureText renders failures as "refused 0 · reset 2 · ...", every class
// shown, so a zero is a measured zero.
func (t *Tally) failureText() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for _, c := range failureClasses {
		if c == classOther && t.Fail[c] == 0 {
			continue
		}
		parts = append(parts, c+" "+strconv.Itoa(t.Fail[c]))
	}
	return strings.Join(parts, " · ")
}

// Client is one class of HTTP/1.1 load: workers that POST in a closed
// loop, with keep-alive or a new connection per request. POST is what no
// client retries on its own, so every failure the server causes shows.
type Client struct {
	Name      string
	KeepAlive bool
	MS        int // handler time asked of /work
	Workers   int
	Tally     *Tally
}

// Run sends requests until ctx ends.
func (c *Client) Run(ctx context.Context, addr string) {
	c.Tally = newTally()
	tr := &http.Transport{
		DisableKeepAlives:   !c.KeepAlive,
		MaxIdleConnsPerHost: c.Workers,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + addr + "/work"
	if c.MS > 0 {
		url += "?ms=" + strconv.Itoa(c.MS)
	}
	var wg sync.WaitGroup
	for range c.Workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				resp, err := client.Post(url, "text/plain", strings.NewReader("payload"))
				if err != nil {
					if ctx.Err() == nil {
						c.Tally.fail(classify(err), err.Error())
					}
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					c.Tally.fail(classify(err), err.Error())
				case resp.StatusCode/100 != 2:
					c.Tally.fail(classStatus, resp.Status)
				default:
					c.Tally.ok(time.Since(start))
				}
			}
		})
	}
	wg.Wait()
}

// runClients runs every client against addr until ctx ends.
func runClients(ctx context.Context, addr string, clients []*Client) {
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { c.Run(ctx, addr) })
	}
	wg.Wait()
}
