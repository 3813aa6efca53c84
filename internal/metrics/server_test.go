//go:build linux

package metrics

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/metrics/metricstest"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

// dial connects to the unix socket path, with a deadline that ends a
// test that waits for an answer that never comes.
func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readAnswer reads one answer from br, head and body (none for HEAD, as
// Content-Length says otherwise), and returns it as it came.
func readAnswer(t *testing.T, br *bufio.Reader, method string) string {
	t.Helper()
	var head strings.Builder
	n := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the answer's head: %q, %v", head.String()+line, err)
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if method == "HEAD" {
		n = 0
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatalf("reading the answer's %d bytes of body: %v", n, err)
	}
	return head.String() + string(body)
}

// closed waits for the server to close c, and says whether it did
// without sending more.
func closed(c net.Conn, br *bufio.Reader) bool {
	_, err := br.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// The server answers GET and HEAD of /metrics, and says what is wrong
// with anything else. An HTTP/1.1 connection serves another request,
// unless the client or the request says otherwise; the test sends each
// request twice on such a connection.
func TestServerRequests(t *testing.T) {
	path := serve(t, New(Options{}), &source{})
	for _, tc := range []struct {
		req, status, has, lacks string
		closes                  bool
	}{
		{"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK", "\r\n\r\n# HELP ", "Connection: close", false},
		{"GET /metrics?x=1 HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK", "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n", "", true},
		{"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 200 OK", "Connection: close\r\n", "", true},
		{"GET http://x:9180/metrics?y HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "# TYPE ", "", false},
		{"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK", "Content-Length: ", "# HELP", false},
		{"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found", "404 page not found", "", false},
		{"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed", "Allow: GET, HEAD\r\n", "", false},
		{"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "HTTP/1.1 405 Method Not Allowed", "Allow: GET, HEAD\r\n", "", false},
		{"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed", "Connection: close\r\n", "", true},
		{"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request", "request line", "", true},
		{"GET /metrics HTTP/1.1\r\nnot a header\r\n\r\n", "HTTP/1.1 400 Bad Request", "headers", "", true},
		{"GET /metrics HTTP/1.1\r\nContent-Length: x\r\n\r\n", "HTTP/1.1 400 Bad Request", "Content-Length", "", true},
		{"GET /metrics HTTP/1.1\r\nContent-Length: +0\r\n\r\n", "HTTP/1.1 400 Bad Request", "Content-Length", "", true},
		{"\r\nGET /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "# HELP ", "", false},
	} {
		c := dial(t, path)
		br := bufio.NewReader(c)
		method, _, _ := strings.Cut(tc.req, " ")
		for range 2 {
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			got := readAnswer(t, br, method)
			if !strings.HasPrefix(got, tc.status+"\r\n") || !strings.Contains(got, tc.has) || tc.lacks != "" && strings.Contains(got, tc.lacks) {
				t.Errorf("%.40q: got %.300q, want %s with %q", tc.req, got, tc.status, tc.has)
			}
			head, body, _ := strings.Cut(got, "\r\n\r\n")
			if n := "Content-Length: " + strconv.Itoa(len(body)); method != "HEAD" && !strings.Contains(head, n) {
				t.Errorf("%.40q: %q lacks %q", tc.req, head, n)
			}
			if tc.closes {
				if !closed(c, br) {
					t.Errorf("%.40q: the connection is not closed after the answer", tc.req)
				}
				break
			}
		}
	}
}

// Pipelined requests are answered in order; a Go client's keep-alive
// connection serves every scrape.
func TestServerKeepAlive(t *testing.T) {
	path := serve(t, New(Options{}), &source{})
	c := dial(t, path)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /nothing HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
	for _, want := range []struct{ method, status string }{{"GET", "404"}, {"HEAD", "200"}, {"GET", "200"}} {
		if got := readAnswer(t, br, want.method); !strings.HasPrefix(got, "HTTP/1.1 "+want.status+" ") {
			t.Errorf("pipelined %s: got %.100q, want %s", want.method, got, want.status)
		}
	}
	if !closed(c, br) {
		t.Error("open after the answer to Connection: close")
	}

	dials := 0
	get := goClient(t, path, func() { dials++ })
	for range 5 {
		get()
	}
	if dials != 1 {
		t.Errorf("5 scrapes took %d connections, want 1", dials)
	}
}

// goClient returns a scrape of the unix socket path by Go's HTTP client,
// with keep-alive, which fails the test unless it gets a 200; dialed, if
// not nil, is called at each new connection.
func goClient(t *testing.T, path string, dialed func()) func() {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		if dialed != nil {
			dialed()
		}
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	t.Cleanup(client.CloseIdleConnections)
	return func() {
		t.Helper()
		resp, err := client.Get("http://unix/metrics")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %s", resp.Status)
		}
	}
}

// A request head larger than the server reads is answered 431, and the
// connection closed.
func TestServerHeadTooLong(t *testing.T) {
	path := serve(t, New(Options{}), &source{})
	c := dial(t, path)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nX: "+strings.Repeat("a", maxHead)+"\r\n\r\n")
	if got := readAnswer(t, br, "GET"); !strings.HasPrefix(got, "HTTP/1.1 431 Request Header Fields Too Large\r\n") {
		t.Errorf("got %.200q", got)
	}
	if !closed(c, br) {
		t.Error("open after the 431")
	}
}

// A client that stalls within a head, or stays idle between requests,
// loses its connection when its time is up.
func TestServerTimeouts(t *testing.T) {
	_, path := serveWith(t, New(Options{}), &source{}, func(s *Server) {
		s.headTimeout, s.idleTimeout = 100*time.Millisecond, 300*time.Millisecond
	})
	stalled := dial(t, path)
	io.WriteString(stalled, "GET /metrics HTTP/1.1\r\n") // and never the end of the head
	if br := bufio.NewReader(stalled); !closed(stalled, br) {
		t.Error("a stalled head: the connection is not closed")
	}
	idle := dial(t, path)
	br := bufio.NewReader(idle)
	io.WriteString(idle, "GET /metrics HTTP/1.1\r\n\r\n")
	readAnswer(t, br, "GET")
	if !closed(idle, br) {
		t.Error("an idle connection is not closed")
	}
}

// At most maxConns connections are served at once. At the limit, a
// connection idle between requests is closed to make room; with none
// idle, a new one waits until one goes, or until a stalled head has been
// arriving for slowHead, whose connection is then closed.
func TestServerBounded(t *testing.T) {
	srv, path := serveWith(t, New(Options{}), &source{}, func(s *Server) { s.maxConns = 2 })
	var idle [2]net.Conn
	var idleR [2]*bufio.Reader
	for i := range idle {
		idle[i] = dial(t, path)
		idleR[i] = bufio.NewReader(idle[i])
		io.WriteString(idle[i], "GET /metrics HTTP/1.1\r\n\r\n")
		readAnswer(t, idleR[i], "GET")
	}
	// A third connection: one idle connection makes room.
	third := dial(t, path)
	thirdR := bufio.NewReader(third)
	io.WriteString(third, "GET /metrics HTTP/1.1\r\n\r\n")
	readAnswer(t, thirdR, "GET")
	n := 0
	for i := range idle {
		io.WriteString(idle[i], "GET /metrics HTTP/1.1\r\n\r\n")
		if closed(idle[i], idleR[i]) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d idle connections closed to make room for one, want 1", n)
	}
	// With two busy ones (stalled heads), a fourth waits in the queue
	// until one goes.
	for _, c := range append(idle[:], third) {
		c.Close()
	}
	waitConns(t, srv, 0, true)
	busy := [2]net.Conn{dial(t, path), dial(t, path)}
	for _, c := range busy {
		io.WriteString(c, "GET /metrics HTTP/1.1\r\n")
	}
	waitConns(t, srv, 2, false)
	fourth := dial(t, path)
	fourthR := bufio.NewReader(fourth)
	io.WriteString(fourth, "GET /metrics HTTP/1.1\r\n\r\n")
	fourth.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := fourthR.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the fourth connection, beyond the limit: %v, want no answer yet", err)
	}
	fourth.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got := readAnswer(t, fourthR, "GET"); !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") {
		t.Errorf("the fourth, once a stalled head was slow: %.100q", got)
	}
	// The other stalled head stays open: its read ends at a deadline.
	n = 0
	for _, c := range busy {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if closed(c, bufio.NewReader(c)) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d stalled heads closed to make room for one, want 1", n)
	}
}

// A client that connects and sends nothing is closed by a hand-over
// once freshGrace has passed, rather than at its head's timeout (review
// of issue 18: a silent connection held an upgrade, and the control
// socket, for 5 s); one that sends its request within the grace is
// answered.
func TestServerHandoffClosesSilent(t *testing.T) {
	srv, path := serveWith(t, New(Options{}), &source{}, nil)
	silent := dial(t, path)
	late := dial(t, path)
	lateR := bufio.NewReader(late)
	waitConns(t, srv, 2, true)
	done := make(chan error, 1)
	go func() { done <- srv.Handoff(context.Background(), upgrade.NewState(1, "test")) }()
	io.WriteString(late, "GET /metrics HTTP/1.1\r\n\r\n")
	if got := readAnswer(t, lateR, "GET"); !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.Contains(got, "Connection: close\r\n") {
		t.Errorf("a request sent as the hand-over begins: %.200q, want 200 and Connection: close", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the hand-over waits for a connection that sent nothing")
	}
	if !closed(silent, bufio.NewReader(silent)) {
		t.Error("the silent connection is open after the hand-over")
	}
}

// waitConns waits until srv has n connections open, none of them idle if
// !idle.
func waitConns(t *testing.T, srv *Server, n int, idle bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		srv.mu.Lock()
		got, changed := 0, srv.changed
		for _, st := range srv.conns {
			if !st.closing && (idle || !st.idle) {
				got++
			}
		}
		srv.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%d connections, want %d", got, n)
		}
	}
}

// blockingSource is a Source whose Status waits for release.
type blockingSource struct {
	entered, release chan struct{}
}

func (s *blockingSource) Status(ctx context.Context) (supervisor.Status, error) {
	s.entered <- struct{}{}
	<-s.release
	return supervisor.Status{}, nil
}

// A hand-over closes the idle keep-alive connections at once, answers
// the request in progress (its answer closes its connection), and only
// then carries the listener; Resume serves again.
func TestServerHandoffKeepAlive(t *testing.T) {
	// entered has room for the scrapes after the release.
	src := &blockingSource{entered: make(chan struct{}, 4), release: make(chan struct{})}
	srv, path := serveWith(t, New(Options{}), src, nil)
	idle := dial(t, path)
	idleR := bufio.NewReader(idle)
	io.WriteString(idle, "GET /nothing HTTP/1.1\r\n\r\n")
	readAnswer(t, idleR, "GET")
	busy := dial(t, path)
	busyR := bufio.NewReader(busy)
	io.WriteString(busy, "GET /metrics HTTP/1.1\r\n\r\n")
	<-src.entered
	handed := make(chan error, 1)
	go func() { handed <- srv.Handoff(context.Background(), upgrade.NewState(1, "test")) }()
	if !closed(idle, idleR) {
		t.Error("the idle connection is not closed by the hand-over")
	}
	select {
	case err := <-handed:
		t.Fatalf("Handoff returned (%v) with a scrape in progress", err)
	default:
	}
	close(src.release)
	got := readAnswer(t, busyR, "GET")
	if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.Contains(got, "Connection: close\r\n") {
		t.Errorf("the scrape in progress: %.200q", got)
	}
	if !closed(busy, busyR) {
		t.Error("the connection of the scrape in progress is not closed")
	}
	if err := <-handed; err != nil {
		t.Fatal(err)
	}
	srv.Resume()
	if _, err := metricstest.Scrape(path); err != nil {
		t.Errorf("scrape after Resume: %v", err)
	}
}

// A Go client (Prometheus's is one) whose idle connection was closed to
// make room scrapes again on a new one.
func TestServerRoomGoClient(t *testing.T) {
	srv, path := serveWith(t, New(Options{}), &source{}, func(s *Server) { s.maxConns = 1 })
	get := goClient(t, path, nil)
	get()
	waitConns(t, srv, 1, true)
	other := dial(t, path)
	otherR := bufio.NewReader(other)
	io.WriteString(other, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
	readAnswer(t, otherR, "GET") // the client's idle connection made room
	get()
}
