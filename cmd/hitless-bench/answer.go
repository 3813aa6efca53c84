package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A test server (internal/e2e/testserver, and the tableflip server)
// names its pid in every answer to POST /work ("ok gen=G pid=P …"):
// that is how the bench tells which backend answered.

// probeClient opens a new connection for each request: it sees which
// process accepts new connections now, not the one an old connection
// leads to.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}

// answeredPID sends POST /work to addr on a new connection and returns
// the pid named in the answer.
func answeredPID(addr string) (int, error) {
	resp, err := probeClient.Post("http://"+addr+"/work", "text/plain", strings.NewReader("probe"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	pid := bodyPID(b)
	if pid == 0 {
		return 0, fmt.Errorf("no pid in the answer %q", b)
	}
	return pid, nil
}

// waitAnswer polls addr with new connections until one is answered by
// want, or, when want is 0, by any pid other than old; it returns that
// pid. There is no event to wait on: the switch happens in another
// process.
func waitAnswer(addr string, old, want int, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	var last error
	for {
		pid, err := answeredPID(addr)
		switch {
		case err != nil:
			last = err
		case want != 0 && pid == want, want == 0 && pid != old:
			return pid, nil
		default:
			last = fmt.Errorf("answered by pid %d", pid)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: no answer from a new backend (want pid %d, old %d) within %v; last: %v", addr, want, old, d, last)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// bodyPID is the pid an answer names (" pid=N "), or 0.
func bodyPID(b []byte) int {
	i := bytes.Index(b, []byte(" pid="))
	if i < 0 {
		return 0
	}
	b = b[i+len(" pid="):]
	if j := bytes.IndexAny(b, " \n"); j >= 0 {
		b = b[:j]
	}
	pid, _ := strconv.Atoi(string(b))
	return pid
}

// pidsSeen records, in order, each pid that first answered a client:
// the proof that deploys happened, seen from the clients' side.
type pidsSeen struct {
	mu    sync.Mutex
	order []int
	seen  map[int]bool
}

// add is a client.onBody.
func (p *pidsSeen) add(body []byte) {
	pid := bodyPID(body)
	if pid == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[int]bool{}
	}
	if !p.seen[pid] {
		p.seen[pid] = true
		p.order = append(p.order, pid)
	}
}

// pids returns the pids seen, in the order they first answered.
func (p *pidsSeen) pids() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.order...)
}
