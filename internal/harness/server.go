package harness

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WorkURL is the test server's POST /work on addr, whose handler takes
// delay before it answers 200 (none for 0).
func WorkURL(addr string, delay time.Duration) string {
	u := "http://" + addr + "/work"
	if ms := delay.Milliseconds(); ms > 0 {
		u += "?ms=" + strconv.FormatInt(ms, 10)
	}
	return u
}

// Stream is one event stream of the test server, GET /events: n events,
// one every interval, then the end of the response, read on a connection
// of its own.
type Stream struct {
	first  chan struct{}
	done   chan struct{}
	events atomic.Int64
	err    error // written before done is closed
}

// OpenStream opens GET /events on addr and reads it to its end, for at
// most the stream's own length and 30 s more.
func OpenStream(addr string, n int, interval time.Duration) *Stream {
	s := &Stream{first: make(chan struct{}), done: make(chan struct{})}
	go func() { // owned by s; ends with the response or the client timeout
		defer close(s.done)
		first := sync.OnceFunc(func() { close(s.first) })
		defer first()
		c := &http.Client{
			Transport: &http.Transport{DisableKeepAlives: true},
			Timeout:   time.Duration(n)*interval + 30*time.Second,
		}
		defer c.CloseIdleConnections()
		resp, err := c.Get(fmt.Sprintf("http://%s/events?n=%d&every=%s", addr, n, interval))
		if err != nil {
			s.err = err
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				s.events.Add(1)
				first()
			}
		}
		s.err = sc.Err()
	}()
	return s
}

// First is closed at the first event, or when the stream ends without one.
func (s *Stream) First() <-chan struct{} { return s.first }

// Events is the number of events read so far.
func (s *Stream) Events() int64 { return s.events.Load() }

// Err is how the stream ended: nil for a clean end. It is valid once Done
// is closed.
func (s *Stream) Err() error {
	<-s.done
	return s.err
}

// Wait waits for the end of the stream, for at most d.
func (s *Stream) Wait(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.done:
		return nil
	case <-t.C:
		return fmt.Errorf("event stream still open after %v", d)
	}
}

// FreeAddr returns a loopback TCP address that was free a moment ago, for
// a server that binds its address itself.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
