// Package load drives WebSocket echo clients against wsecho and counts
// what a reload costs them: each client sends numbered text messages and
// checks that every echo comes back, in order; a close frame the client
// did not ask for, a message lost or out of order, or an error is a
// failure.
package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Options say how many clients and how fast.
type Options struct {
	URL     string        // ws://host:port/ws
	Clients int           // connections, each its own client
	Every   time.Duration // between a client's messages
	Timeout time.Duration // for each echo; default 10s
	// Connected, if set, is called once every client has dialled.
	Connected func()
}

// Result is what a run counted. It crosses a process boundary as JSON
// (hitless-bench reads it), so it has no types of its own.
type Result struct {
	Clients     int              `json:"clients"`
	Connected   int              `json:"connected"`
	Sent        int64            `json:"sent"`
	Echoed      int64            `json:"echoed"`
	Lost        int64            `json:"lost"`         // sent, never echoed (or echoed out of order)
	CloseFrames int64            `json:"close_frames"` // from the server, unasked
	Failed      int64            `json:"failed"`       // clients that ended on an error
	Failures    map[string]int64 `json:"failures"`
	P50         time.Duration    `json:"p50_ns"`
	P99         time.Duration    `json:"p99_ns"`
}

// Run opens the clients, paced, and runs them until ctx ends; then each
// closes its connection cleanly (a close frame, answered) and Run returns
// what happened.
func Run(ctx context.Context, o Options) Result {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	r := &run{o: o, failures: map[string]int64{}}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32) // at most this many handshakes at once
	for i := range o.Clients {
		sem <- struct{}{}
		c, err := r.dial(ctx)
		<-sem
		if err != nil {
			r.fail("dial", err)
			continue
		}
		r.connected.Add(1)
		wg.Go(func() { r.client(ctx, c, i) })
	}
	if o.Connected != nil {
		o.Connected()
	}
	wg.Wait()
	res := Result{
		Clients: o.Clients, Connected: int(r.connected.Load()), Sent: r.sent.Load(), Echoed: r.echoed.Load(),
		Lost: r.lost.Load(), CloseFrames: r.closeFrames.Load(), Failed: r.failed.Load(), Failures: r.failures,
	}
	slices.Sort(r.lat)
	if n := len(r.lat); n > 0 {
		res.P50, res.P99 = r.lat[n/2], r.lat[min(n-1, n*99/100)]
	}
	return res
}

type run struct {
	o                                     Options
	connected, sent, echoed, lost, failed atomic.Int64
	closeFrames                           atomic.Int64
	mu                                    sync.Mutex
	failures                              map[string]int64
	lat                                   []time.Duration
}

type conn struct {
	net.Conn
	br *bufio.Reader
}

func (c *conn) Read(p []byte) (int, error) { return c.br.Read(p) }

func (r *run) dial(ctx context.Context) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, br, _, err := ws.Dial(dctx, r.o.URL)
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReader(nc)
	}
	return &conn{Conn: nc, br: br}, nil
}

func (r *run) fail(what string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures[what+": "+err.Error()]++
}

// errCloseFrame is a close frame the client did not ask for.
var errCloseFrame = errors.New("close frame from the server")

// client sends a numbered message every Every and checks its echo.
func (r *run) client(ctx context.Context, c *conn, id int) {
	defer c.Close()
	t := time.NewTicker(r.o.Every)
	defer t.Stop()
	var lat []time.Duration
	defer func() {
		r.mu.Lock()
		r.lat = append(r.lat, lat...)
		r.mu.Unlock()
	}()
	for seq := 1; ; seq++ {
		select {
		case <-ctx.Done():
			r.closeCleanly(c)
			return
		case <-t.C:
		}
		msg := []byte(fmt.Sprintf("%d:%d", id, seq))
		start := time.Now()
		c.SetDeadline(start.Add(r.o.Timeout))
		if err := wsutil.WriteClientText(c, msg); err != nil {
			r.end(err, 0)
			return
		}
		r.sent.Add(1)
		got, err := r.readEcho(c)
		if err != nil {
			r.end(err, 1)
			return
		}
		if string(got) != string(msg) {
			r.lost.Add(1)
			r.fail("echo", fmt.Errorf("got %q, want %q", trim(got), msg))
			r.failed.Add(1)
			return
		}
		lat = append(lat, time.Since(start))
		r.echoed.Add(1)
	}
}

// readEcho reads the next data message; a close frame is an error.
func (r *run) readEcho(c *conn) ([]byte, error) {
	for {
		msgs, err := wsutil.ReadServerMessage(c, nil)
		if err != nil {
			var closed wsutil.ClosedError
			if errors.As(err, &closed) {
				return nil, fmt.Errorf("%w (%d %s)", errCloseFrame, closed.Code, closed.Reason)
			}
			return nil, err
		}
		for _, m := range msgs {
			switch m.OpCode {
			case ws.OpText, ws.OpBinary:
				return m.Payload, nil
			case ws.OpClose:
				return nil, errCloseFrame
			}
		}
	}
}

// end records a client that ended on err with lost messages unanswered.
func (r *run) end(err error, lost int64) {
	r.lost.Add(lost)
	r.failed.Add(1)
	if errors.Is(err, errCloseFrame) {
		r.closeFrames.Add(1)
		r.fail("close frame", err)
		return
	}
	r.fail("error", err)
}

// closeCleanly ends the session as RFC 6455 says: a close frame, and the
// server's close frame back.
func (r *run) closeCleanly(c *conn) {
	c.SetDeadline(time.Now().Add(r.o.Timeout))
	body := ws.NewCloseFrameBody(ws.StatusNormalClosure, "")
	if err := ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(body))); err != nil {
		r.fail("close", err)
		return
	}
	for {
		h, err := ws.ReadHeader(c)
		if err != nil || h.OpCode == ws.OpClose {
			return
		}
		if _, err := io.CopyN(io.Discard, c, h.Length); err != nil {
			return
		}
	}
}

func trim(b []byte) string {
	if len(b) > 40 {
		return strconv.Quote(string(b[:40])) + "..."
	}
	return string(b)
}
