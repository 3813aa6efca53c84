package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// rawConn is one hand-driven HTTP/1.1 keep-alive connection of the scale
// scenario. Between requests it waits on a read: a server that closes the
// idle connection is seen at once, and the client reconnects with a
// request, as a pool that keeps its connections warm would.
type rawConn struct {
	addr  string
	c     net.Conn
	br    *bufio.Reader
	stats *scaleStats
}

type scaleStats struct {
	tally      *Tally
	open       atomic.Int64 // connections open now
	idleClosed atomic.Int64 // closed by the server while idle, then reopened
	closeAsked atomic.Int64 // responses with "Connection: close"
	dialFails  atomic.Int64
	failFresh  atomic.Int64 // failures on a connection dialed for this request
	failReused atomic.Int64 // failures on a connection that had served before
}

var scaleRequest = []byte("POST /work HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\npayload")

func (rc *rawConn) dial() error {
	c, err := net.DialTimeout("tcp", rc.addr, 10*time.Second)
	if err != nil {
		rc.stats.dialFails.Add(1)
		rc.stats.tally.fail(classify(err), err.Error())
		return err
	}
	rc.c, rc.br = c, bufio.NewReader(c)
	rc.stats.open.Add(1)
	return nil
}

func (rc *rawConn) close() {
	if rc.c != nil {
		rc.c.Close()
		rc.c = nil
		rc.stats.open.Add(-1)
	}
}

// do sends one request on the connection (dialing first if needed) and
// reads the answer.
func (rc *rawConn) do() {
	fresh := rc.c == nil
	if fresh && rc.dial() != nil {
		return
	}
	fail := func(class, msg string) {
		rc.stats.tally.fail(class, msg)
		if fresh {
			rc.stats.failFresh.Add(1)
		} else {
			rc.stats.failReused.Add(1)
		}
	}
	start := time.Now()
	rc.c.SetDeadline(start.Add(10 * time.Second))
	if _, err := rc.c.Write(scaleRequest); err != nil {
		fail(classify(err), err.Error())
		rc.close()
		return
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		fail(classify(err), err.Error())
		rc.close()
		return
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	rc.c.SetDeadline(time.Time{})
	switch {
	case err != nil:
		fail(classify(err), err.Error())
		rc.close()
		return
	case resp.StatusCode/100 != 2:
		fail(classStatus, resp.Status)
	default:
		rc.stats.tally.ok(time.Since(start))
	}
	if resp.Close {
		rc.stats.closeAsked.Add(1)
		rc.close()
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// sseResult counts event streams.
type sseResult struct {
	mu       sync.Mutex
	complete int
	broken   map[string]int
	events   int64
}

// streamSSE reads one GET /events stream of n events to its end.
func streamSSE(addr string, n int, every time.Duration, res *sseResult, started *sync.WaitGroup) {
	startedOnce := sync.OnceFunc(started.Done)
	defer startedOnce()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Duration(n)*every + 30*time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/events?n=%d&every=%s", addr, n, every))
	got := 0
	if err == nil {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				got++
				startedOnce()
			}
		}
		err = sc.Err()
		resp.Body.Close()
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	res.events += int64(got)
	switch {
	case err != nil:
		res.broken[classify(err)]++
	case got != n:
		res.broken[fmt.Sprintf("ended after %d of %d events", got, n)]++
	default:
		res.complete++
	}
}

func randN(n int64) int64 { return rand.Int64N(n) }
