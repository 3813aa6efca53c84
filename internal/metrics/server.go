//go:build linux

package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/unixsock"
	"github.com/hitless/hitless/upgrade"
)

// Server serves a Handler over HTTP/1.1 on one listener: GET and HEAD of
// /metrics (any query). It is a supervisor.Carrier: an upgrade of hitless
// in place carries the listener, so that a scraper meets no refused
// connection and the same port (one chosen for host:0 included) after it.
//
// It is not net/http's server. Linked for this one route, net/http (with
// crypto/tls, HTTP/2 and the rest it brings) added 3.9 MiB to hitless's
// binary (11.6 MiB instead of 7.7) and 2.2 MiB to what hitless and its
// watcher hold at rest (PSS 10.3 MiB instead of 8.2), every run,
// --metrics or not, in one run of both (docs/footprint.md, "What each
// dependency costs"). What a scraper sends is small and fixed,
// so this server is too, and it keeps to what net/http's would answer:
//
//   - HTTP/1.1 keep-alive: a connection serves requests one after
//     another (pipelined ones too) until the client sends
//     "Connection: close", or waits idleTimeout for its next request.
//     HTTP/1.0 requests are answered and the connection closed.
//   - GET and HEAD of /metrics (origin or absolute form, any query);
//     404 for another path, 405 with Allow for another method, 400 for a
//     request that is not HTTP/1.x, 431 for a head (line and headers)
//     over maxHead. A request with a body is answered once the body is
//     read (up to maxHead; a larger or chunked one closes the connection
//     after the answer).
//   - Time limits: the head must arrive within headTimeout of its first
//     byte (or of the connection's start), and the answer be written
//     within writeTimeout; a stalled client loses its connection, not
//     the server's goroutines.
//   - At most maxConns connections at once, which bounds the scrapes
//     served at once. At the limit, the connection idle the longest (no
//     byte of a request yet: between requests, or since it connected) is
//     closed to make room (as HTTP/1.1 allows, and nginx does); a
//     client's next request on it fails, and Go's HTTP client,
//     Prometheus's, sends it again on a new connection. With none idle, a
//     connection whose head has been arriving for over slowHead (a slow
//     client: a scraper's head is one packet) is closed instead; with
//     neither, the connection just accepted waits for one to go, and the
//     next ones in the listener's queue. So clients that connect and send
//     nothing, or send slowly, do not starve scrapes; an upgrade's
//     hand-over closes idle connections at once, and gives one that has
//     sent nothing since it connected freshGrace to begin its request.
//
// No TLS, no compression, only the text format.
type Server struct {
	ln  net.Listener
	h   *Handler
	ctx context.Context // done when Close is called: ends the scrapes
	end context.CancelFunc

	// The limits, set by newServer from the constants below; tests
	// shorten them.
	maxConns                               int
	headTimeout, idleTimeout, writeTimeout time.Duration

	mu      sync.Mutex
	conns   map[net.Conn]*connState // the open connections
	changed chan struct{}           // closed and replaced when conns, closed or kept change
	closed  bool
	kept    bool           // handed over: Accept ends, the listener stays open
	done    chan struct{}  // closed when the current Serve has returned
	wg      sync.WaitGroup // one per connection
}

// connState is what Server knows of a connection.
type connState struct {
	// idle: no byte of a request yet, since the connection's start or
	// its last answer; it may be closed at any time.
	idle      bool
	fresh     bool      // idle since its start: no request yet
	idleSince time.Time // when it last became idle
	headSince time.Time // when its request's head began; zero once read
	closing   bool      // closed by the server, its goroutine not yet done
}

const (
	// maxConns bounds the open connections, and so the scrapes served
	// at once: a Prometheus server keeps one connection a target.
	maxConns = 16
	// maxHead bounds a request's line and headers, and the body read
	// before an answer.
	maxHead = 16 << 10
	// headTimeout bounds the wait for a request's head, from its first
	// byte (from the connection's start for the first request).
	headTimeout = 10 * time.Second
	// freshGrace: at a hand-over, how long a connection that has sent
	// nothing yet has to begin its request before it is closed.
	freshGrace = 500 * time.Millisecond
	// slowHead: a head that takes longer than this to arrive (one
	// packet, for a scraper) is a slow client's, which room may close to
	// serve a new connection.
	slowHead = time.Second
	// idleTimeout bounds the wait for the next request on a kept-alive
	// connection.
	idleTimeout = 2 * time.Minute
	// writeTimeout bounds the writing of an answer, after the scrape.
	writeTimeout = 10 * time.Second
	// lingerMax and lingerTimeout bound what is read and discarded of a
	// request that is not read whole before its connection is closed, so
	// that the kernel does not reset it and lose the answer.
	lingerMax     = 256 << 10
	lingerTimeout = time.Second
)

// Listen binds addr: host:port, or, when addr contains a slash, a unix
// socket at that path (a stale socket file is replaced, a live one
// refused; Close removes the file). Nothing is served until Serve.
func Listen(addr string, h *Handler) (*Server, error) {
	network := "tcp"
	if strings.Contains(addr, "/") {
		network = "unix"
		if err := unixsock.RemoveStale(addr); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return newServer(ln, h), nil
}

func newServer(ln net.Listener, h *Handler) *Server {
	ctx, end := context.WithCancel(context.Background())
	return &Server{ln: ln, h: h, ctx: ctx, end: end,
		maxConns: maxConns, headTimeout: headTimeout, idleTimeout: idleTimeout, writeTimeout: writeTimeout,
		conns: make(map[net.Conn]*connState), changed: make(chan struct{})}
}

// Addr is the bound address: the port chosen for host:0, or the socket's
// path.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Close (or a hand-over), and then returns nil. After a
// hand-over that failed (Resume), it serves again in a goroutine of
// Resume's.
func (s *Server) Serve() error {
	s.mu.Lock()
	done := make(chan struct{})
	s.done = done
	s.mu.Unlock()
	defer close(done)
	backoff := 5 * time.Millisecond
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.over() {
				return nil
			}
			// Out of descriptors, or a connection that went before it
			// was taken: wait a little, as net/http does, and go on.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			return fmt.Errorf("metrics: %w", err)
		}
		backoff = 5 * time.Millisecond
		if !s.room() {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = &connState{idle: true, fresh: true, idleSince: time.Now()}
		s.notify()
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.notify()
			s.mu.Unlock()
		}()
	}
}

// room waits until a connection just accepted may be served: fewer than
// maxConns are open. At the limit it closes the connection that has been
// idle (no byte of a request yet) the longest to make room, as nginx
// closes its keep-alive connections when it runs short, or one whose
// request's head has been arriving for over slowHead (a slow client,
// not a scraper); with neither, it waits for one to go, and the accept
// queue holds the next ones. A connection accepted before a hand-over is
// served (the hand-over waits for it), even beyond the limit. room
// returns false, with s.mu held, when the server is closed; true
// otherwise, with s.mu held.
func (s *Server) room() bool {
	s.mu.Lock()
	for {
		if s.closed {
			return false
		}
		now := time.Now()
		open := 0
		var victim net.Conn
		var victimSince, slowAt time.Time // slowAt: when the next head turns slow
		for c, st := range s.conns {
			if st.closing {
				continue
			}
			open++
			since := st.idleSince
			if !st.idle {
				if st.headSince.IsZero() {
					continue // answering
				}
				if at := st.headSince.Add(slowHead); now.Before(at) {
					if slowAt.IsZero() || at.Before(slowAt) {
						slowAt = at
					}
					continue
				}
				since = st.headSince
			}
			if victim == nil || since.Before(victimSince) {
				victim, victimSince = c, since
			}
		}
		if open < s.maxConns || s.kept {
			return true
		}
		if victim != nil {
			s.conns[victim].closing = true
			victim.Close() // its goroutine sees it and goes
		}
		changed := s.changed
		s.mu.Unlock()
		var slow <-chan time.Time
		var timer *time.Timer
		if victim == nil && !slowAt.IsZero() {
			timer = time.NewTimer(slowAt.Sub(now))
			slow = timer.C
		}
		select {
		case <-changed:
		case <-slow:
		}
		if timer != nil {
			timer.Stop()
		}
		s.mu.Lock()
	}
}

// over says whether Serve must end: the server is closed or handed over.
func (s *Server) over() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || s.kept
}

// notify wakes those waiting for a change; s.mu is held.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Close stops serving: it closes the listener (a unix socket's file is
// removed) and every connection, ends a scrape in progress, and waits
// for the connections' goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.closeConns(false, true)
	s.notify()
	s.mu.Unlock()
	s.end()
	err := s.ln.Close()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// closeConns closes the open connections, only the idle ones if
// idleOnly, and of those the fresh ones too if fresh; s.mu is held.
func (s *Server) closeConns(idleOnly, fresh bool) {
	for c, st := range s.conns {
		if st.idle && (fresh || !st.fresh) || !idleOnly {
			st.closing = true
			c.Close()
		}
	}
}

// serverState is the server, written down for the next image.
type serverState struct {
	Network string `json:"network"`
	Addr    string `json:"addr"`
}

// Handoff stops accepting without closing the listener, whose queue
// holds the scrapes that arrive during the exec, answers the requests on
// the connections it has (each connection closes after its answer; idle
// keep-alive ones at once), and puts the listener in st
// (supervisor.Carrier). A scrape that connected before is answered here;
// one that connects after, there. A connection still open when ctx ends
// is closed.
func (s *Server) Handoff(ctx context.Context, st *upgrade.State) error {
	s.mu.Lock()
	s.kept = true
	done := s.done
	s.closeConns(true, false)
	s.notify()
	s.mu.Unlock()
	// A connection that has sent nothing yet is a scraper whose request
	// is on its way, or a client that sends nothing: it has freshGrace
	// to begin its request, which is then answered here.
	grace := time.AfterFunc(freshGrace, func() {
		s.mu.Lock()
		s.closeConns(true, true)
		s.mu.Unlock()
	})
	defer grace.Stop()
	setDeadline(s.ln, time.Unix(1, 0)) // a blocked Accept returns
	if done != nil {
		<-done // no connection is accepted from now on
	}
	answered := make(chan struct{})
	go func() { s.wg.Wait(); close(answered) }()
	select {
	case <-answered:
	case <-ctx.Done():
		s.mu.Lock()
		s.closeConns(false, true)
		s.mu.Unlock()
		<-answered
	}
	conn, ok := s.ln.(syscall.Conn)
	if !ok {
		return fmt.Errorf("metrics: cannot carry a %T", s.ln)
	}
	if err := st.CarryConn("metrics/listener", conn); err != nil {
		return err
	}
	a := s.ln.Addr()
	return st.Put("metrics/server", serverState{Network: a.Network(), Addr: a.String()})
}

// Resume serves again after a hand-over whose exec failed, or that failed
// itself (supervisor.Carrier).
func (s *Server) Resume() {
	s.mu.Lock()
	s.kept = false
	s.mu.Unlock()
	setDeadline(s.ln, time.Time{})
	go s.Serve()
}

// Restore takes back the server an earlier image handed over in st, to
// serve h; nil, nil when st carries none (the earlier image had no
// metrics, or was older). Nothing of st is closed until st.Commit.
func Restore(st *upgrade.State, h *Handler) (*Server, error) {
	var ss serverState
	if _, ok := st.Sections["metrics/server"]; !ok {
		return nil, nil
	}
	if err := st.Get("metrics/server", &ss); err != nil {
		return nil, err
	}
	f := st.File("metrics/listener")
	if f == nil {
		return nil, errors.New("metrics: the state carries no listener")
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("metrics %s: %w", ss.Addr, err)
	}
	st.CloseLater(f) // ln holds a duplicate
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(true) // as Listen's: Close removes the file
	}
	return newServer(ln, h), nil
}

// setDeadline sets the deadline of Accept, for the listeners that have
// one (TCP and unix sockets do).
func setDeadline(ln net.Listener, t time.Time) {
	if d, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(t)
	}
}

// idle marks c idle between requests, or busy again once a request's
// first byte came. It returns false when c is to be closed instead: the
// server is closed or handed over, or closed c to make room.
func (s *Server) idle(c net.Conn, on bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.conns[c]
	if st.closing || (on && (s.closed || s.kept)) {
		return false
	}
	st.idle = on
	if on {
		st.idleSince = time.Now()
	} else {
		st.headSince, st.fresh = time.Now(), false
	}
	s.notify() // room may close it, now or once its head is slow
	return true
}

// answering marks c's request read: c is closed no more to make room.
func (s *Server) answering(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c].headSince = time.Time{}
}

// serveConn answers the requests of connection c, one after another,
// until one of them or the server ends the connection.
func (s *Server) serveConn(c net.Conn) {
	// lr bounds what a request's head may take; reset for each request.
	lr := &io.LimitedReader{R: c, N: maxHead}
	br := bufio.NewReader(lr)
	for first := true; ; first = false {
		// Idle until a request's first byte, from the connection's start
		// too: a client that connects and sends nothing holds up neither
		// a hand-over nor a new scrape (see room).
		wait := s.headTimeout
		if !first {
			if !s.idle(c, true) {
				return
			}
			wait = s.idleTimeout
		}
		c.SetReadDeadline(time.Now().Add(wait))
		lr.N = maxHead
		if _, err := br.Peek(1); err != nil {
			return // gone, or idle too long
		}
		if !s.idle(c, false) {
			return
		}
		c.SetReadDeadline(time.Now().Add(s.headTimeout))
		if !s.serveRequest(c, lr, br) {
			return
		}
	}
}

// request is a request's head, as far as the server reads it.
type request struct {
	method, path string
	keepAlive    bool // the client keeps the connection for another request
	unread       bool // a body is left unread: the connection closes after the answer
}

// errGone is readRequest's when the client went, or sent nothing that
// could be answered.
var errGone = errors.New("metrics: the client sent no request")

// badRequest is readRequest's error for a request that is answered with
// code and msg before the connection closes.
type badRequest struct {
	code int
	msg  string
}

func (e *badRequest) Error() string { return e.msg }

// serveRequest reads one request from br and answers it. It returns
// whether the connection serves another.
func (s *Server) serveRequest(c net.Conn, lr *io.LimitedReader, br *bufio.Reader) bool {
	req, err := readRequest(textproto.NewReader(br), lr)
	var bad *badRequest
	if errors.As(err, &bad) {
		s.write(c, "", bad.code, []byte(bad.msg+"\n"), false, nil)
		s.linger(c, lr, br)
		return false
	}
	if err != nil {
		return false
	}
	s.answering(c)
	if req.unread {
		defer s.linger(c, lr, br) // once answered
	}
	c.SetReadDeadline(time.Time{})
	var (
		status  = 200
		body    []byte
		headers []string
	)
	switch {
	case req.path != "/metrics":
		status, body = 404, []byte("404 page not found\n")
	case req.method != "GET" && req.method != "HEAD":
		status, body, headers = 405, []byte("405 method not allowed\n"), []string{"Allow: GET, HEAD"}
	default:
		if body, err = s.h.scrape(s.ctx); err != nil {
			status, body = 500, []byte("An error has occurred while serving metrics:\n\n"+err.Error()+"\n")
		}
	}
	// Handed over or closed meanwhile: this answer is the connection's
	// last, and says so.
	keep := req.keepAlive && !req.unread && !s.over()
	if err := s.write(c, req.method, status, body, keep, headers); err != nil {
		if status == 200 {
			s.h.writeFailed(err)
		}
		return false
	}
	return keep
}

// readRequest reads a request's line and headers from tp, and its body if
// it has one of at most maxHead bytes, through lr, which bounds the head.
func readRequest(tp *textproto.Reader, lr *io.LimitedReader) (request, error) {
	var req request
	tooLarge := &badRequest{431, "431 Request Header Fields Too Large"}
	line, err := tp.ReadLine()
	if err == nil && line == "" {
		// An empty line before a request is ignored (RFC 9112, 2.2), as
		// net/http does: some clients send one after a POST's body.
		line, err = tp.ReadLine()
	}
	if err != nil {
		if lr.N <= 0 {
			return req, tooLarge
		}
		return req, errGone
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || (proto != "HTTP/1.1" && proto != "HTTP/1.0") {
		return req, &badRequest{400, "400 Bad Request: want an HTTP/1.x request line"}
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		switch {
		case lr.N <= 0:
			return req, tooLarge
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed):
			return req, errGone // gone or too slow: no answer, as net/http
		}
		return req, &badRequest{400, "400 Bad Request: unreadable headers"}
	}
	req.method = method
	// The absolute form, a proxy's, names the host too.
	if _, after, ok := strings.Cut(target, "://"); ok && !strings.HasPrefix(target, "/") {
		target = "/"
		if i := strings.IndexByte(after, '/'); i >= 0 {
			target = after[i:]
		}
	}
	req.path, _, _ = strings.Cut(target, "?")
	req.keepAlive = proto == "HTTP/1.1" && !hasToken(hdr.Values("Connection"), "close")
	cl := hdr.Values("Content-Length")
	switch {
	case len(hdr.Values("Transfer-Encoding")) > 0 || len(hdr.Values("Expect")) > 0:
		req.unread = true // not read (a scraper sends no body)
	case len(cl) > 0:
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 || len(cl) > 1 || cl[0][0] == '+' {
			return req, &badRequest{400, "400 Bad Request: bad Content-Length"}
		}
		if n > maxHead {
			req.unread = true
			break
		}
		lr.N += n
		if _, err := io.CopyN(io.Discard, tp.R, n); err != nil {
			return req, errGone
		}
	}
	return req, nil
}

// hasToken says whether the comma-separated header values include tok.
func hasToken(values []string, tok string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), tok) {
				return true
			}
		}
	}
	return false
}

// write writes a whole answer; the body is left out for HEAD. Unless
// keep, it says that the connection closes.
func (s *Server) write(c net.Conn, method string, code int, body []byte, keep bool, headers []string) error {
	c.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	var b strings.Builder
	b.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + statusText[code] + "\r\n")
	ctype := "text/plain; charset=utf-8"
	if code == 200 {
		ctype = contentType
	}
	b.WriteString("Content-Type: " + ctype + "\r\n")
	b.WriteString("Date: " + time.Now().UTC().Format(timeFormat) + "\r\n")
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	if !keep {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("X-Content-Type-Options: nosniff\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	bufs := net.Buffers{[]byte(b.String())}
	if method != "HEAD" {
		bufs = append(bufs, body)
	}
	_, err := bufs.WriteTo(c)
	return err
}

// linger, before a connection closes with some of the request unread,
// ends the answer (a FIN) and reads and discards what the client still
// sends, bounded in size and time: closing a socket with unread data
// resets it, and the client could lose the answer.
func (s *Server) linger(c net.Conn, lr *io.LimitedReader, br *bufio.Reader) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	lr.N = lingerMax
	io.Copy(io.Discard, br)
}

// timeFormat is that of HTTP's Date (net/http's TimeFormat).
const timeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

var statusText = map[int]string{200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
	431: "Request Header Fields Too Large", 500: "Internal Server Error"}
