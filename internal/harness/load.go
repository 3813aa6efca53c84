package harness

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LoadOptions says what load to send. Each worker has one request in
// flight at a time (a closed loop): a slower server gets fewer requests,
// as it would from real clients, and the count of requests in flight is
// bounded by Workers.
type LoadOptions struct {
	// URL is POSTed to with the body "payload", unless NewRequest is set.
	URL string
	// NewRequest, if set, makes the n-th request (n counts from 0 over
	// every worker). Requests are not tied to the load's context: one in
	// flight when the load ends is answered, and counted.
	NewRequest func(n int64) (*http.Request, error)
	// OnResult, if set, is called after each request with its outcome
	// (nil for a success), from the worker that sent it.
	OnResult func(req *http.Request, err error)
	// OnBody, if set, is called with the whole body of each successful
	// answer, from the worker that sent the request: it tells which
	// server answered (the test server names its pid and generation).
	OnBody func(body []byte)

	Workers   int  // concurrent clients (default 1)
	KeepAlive bool // reuse connections; false opens one per request

	// The bounds: at most Requests requests (default 1,000,000), for at
	// most Duration (default one minute), whichever ends first; the
	// context given to StartLoad can end the load sooner.
	Requests int64
	Duration time.Duration

	// Rate paces the requests, per second over every worker; 0 sends
	// each as soon as the worker is free.
	Rate float64

	Timeout        time.Duration // per request, from connect to the end of the body (default 10s)
	ConnectTimeout time.Duration // for the connect alone (default Timeout)
	Want           int           // the status of a success; 0 means any 2xx
}

// Load is HTTP POST load in progress. Each request is counted in the Tally
// of the phase current when it was sent.
type Load struct {
	opts   LoadOptions
	phase  atomic.Pointer[Tally]
	cancel context.CancelFunc
	done   chan struct{}
}

// StartLoad starts the workers, which stop at the bounds, when ctx ends,
// or at Stop.
func StartLoad(ctx context.Context, o LoadOptions) *Load {
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.Requests <= 0 {
		o.Requests = 1_000_000
	}
	if o.Duration <= 0 {
		o.Duration = time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = o.Timeout
	}
	if o.NewRequest == nil {
		o.NewRequest = func(int64) (*http.Request, error) {
			req, err := http.NewRequest(http.MethodPost, o.URL, strings.NewReader("payload"))
			if err == nil {
				req.Header.Set("Content-Type", "text/plain")
			}
			return req, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	l := &Load{opts: o, cancel: cancel, done: make(chan struct{})}
	l.phase.Store(new(Tally))

	// The pacer, if any, hands out one permit per tick to a free worker;
	// it ends with ctx, which is cancelled once every worker has stopped.
	var permits chan struct{}
	var pacer sync.WaitGroup
	if o.Rate > 0 {
		permits = make(chan struct{})
		pacer.Go(func() {
			tick := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
				select {
				case permits <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	var next atomic.Int64
	var workers sync.WaitGroup
	for range o.Workers {
		workers.Go(func() {
			// Each worker is one client with one connection at a time,
			// as the count of connections in a test assumes. A shared
			// pool would dial a spare connection whenever a request
			// raced another's return to the pool, and a spare left idle
			// past the lame duck's quiet time is closed by the server
			// just as the pool may hand it out: the idle-close race of
			// HTTP/1.1, which no setting of hitless can remove.
			tr := &http.Transport{
				DisableKeepAlives: !o.KeepAlive,
				MaxConnsPerHost:   1,
				DialContext:       (&net.Dialer{Timeout: o.ConnectTimeout}).DialContext,
			}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: o.Timeout}
			for ctx.Err() == nil {
				if permits != nil {
					select {
					case <-permits:
					case <-ctx.Done():
						return
					}
				}
				n := next.Add(1) - 1
				if n >= o.Requests {
					return
				}
				l.send(client, n)
			}
		})
	}
	go func() {
		workers.Wait()
		cancel()
		pacer.Wait()
		close(l.done)
	}()
	return l
}

// send sends the n-th request and counts its outcome.
func (l *Load) send(client *http.Client, n int64) {
	tally := l.phase.Load()
	req, err := l.opts.NewRequest(n)
	start := time.Now()
	if err == nil {
		var resp *http.Response
		resp, err = client.Do(req)
		if err == nil {
			// Read the whole answer: a failure may come after the
			// header, and only a body read to its end lets the
			// connection be reused.
			var body []byte
			if l.opts.OnBody != nil {
				body, err = io.ReadAll(resp.Body)
			} else {
				_, err = io.Copy(io.Discard, resp.Body)
			}
			resp.Body.Close()
			if err == nil {
				err = checkStatus(resp.StatusCode, resp.Status, l.opts.Want)
			}
			if err == nil && l.opts.OnBody != nil {
				l.opts.OnBody(body)
			}
		}
	}
	if err != nil {
		tally.AddFailure(err)
	} else {
		tally.AddOK(time.Since(start))
	}
	if l.opts.OnResult != nil {
		l.opts.OnResult(req, err)
	}
}

// Tally is the tally of the current phase.
func (l *Load) Tally() *Tally { return l.phase.Load() }

// NextPhase starts a new phase and returns its tally: requests sent from
// now on are counted there, so a test can tell requests sent before an
// event from those sent after it.
func (l *Load) NextPhase() *Tally {
	t := new(Tally)
	l.phase.Store(t)
	return t
}

// WaitOK waits until the current phase has more successes than it had
// when called, for at most d; it fails early if the load ends first.
func (l *Load) WaitOK(more int64, d time.Duration) error {
	return l.Tally().waitOK(more, d, l.done)
}

// Wait waits until every worker has stopped and returns the tally of the
// current phase. Workers stop at the bounds, so Wait returns within
// Duration and one request's Timeout.
func (l *Load) Wait() *Tally {
	<-l.done
	return l.Tally()
}

// Stop ends the load: each worker stops once its request in flight is
// answered. It returns the tally of the current phase, as Wait does.
func (l *Load) Stop() *Tally {
	l.cancel()
	return l.Wait()
}
