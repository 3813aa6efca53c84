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
// /metrics (any query), one request per connection. It is a
// supervisor.Carrier: an upgrade of hitless in place carries the
// listener, so that a scraper meets no refused connection and the same
// port (one chosen for host:0 included) after it.
//
// It is not net/http's server, which is 4 MB of hitless's 11 MB binary
// and 2.3 MiB of what hitless and its watcher hold at rest, every run,
// --metrics or not (docs/footprint.md), for one route that a scraper asks
// for every few seconds. The request head is read by net/textproto, within
// limits of size and time; the answer closes the connection, which every
// Prometheus server and HTTP client handles.
type Server struct {
	ln  net.Listener
	h   *Handler
	ctx context.Context // done when Close is called: ends the scrapes
	end context.CancelFunc

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	kept   bool           // handed over: Accept ends, the listener stays open
	done   chan struct{}  // closed when the current Serve has returned
	wg     sync.WaitGroup // one per connection
}

const (
	// maxHead bounds a request's line and headers.
	maxHead = 16 << 10
	// headTimeout bounds the wait for them: a scraper that stalls must
	// not hold a connection.
	headTimeout = 10 * time.Second
	// writeTimeout bounds the answer, after the scrape.
	writeTimeout = 10 * time.Second
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
	return &Server{ln: ln, h: h, ctx: ctx, end: end, conns: make(map[net.Conn]struct{})}
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
			s.mu.Lock()
			over := s.closed || s.kept
			s.mu.Unlock()
			if over {
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
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serve(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops serving: it closes the listener (a unix socket's file is
// removed) and every connection, ends a scrape in progress, and waits
// for the connections' goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.closeConns()
	s.mu.Unlock()
	s.end()
	err := s.ln.Close()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// closeConns closes every open connection; s.mu is held.
func (s *Server) closeConns() {
	for c := range s.conns {
		c.Close()
	}
}

// serverState is the server, written down for the next image.
type serverState struct {
	Network string `json:"network"`
	Addr    string `json:"addr"`
}

// Handoff stops accepting without closing the listener, whose queue
// holds the scrapes that arrive during the exec, answers the scrapes on
// the connections it has, and puts the listener in st
// (supervisor.Carrier). A scrape that connected before is answered here;
// one that connects after, there. A connection that sends nothing within
// ctx is closed.
func (s *Server) Handoff(ctx context.Context, st *upgrade.State) error {
	s.mu.Lock()
	s.kept = true
	done := s.done
	s.mu.Unlock()
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
		s.closeConns()
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

// serve answers the one request of connection c.
func (s *Server) serve(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(headTimeout))
	tp := textproto.NewReader(bufio.NewReader(io.LimitReader(c, maxHead)))
	line, err := tp.ReadLine()
	if err != nil {
		return // gone, or nothing but noise
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || (proto != "HTTP/1.1" && proto != "HTTP/1.0") {
		answer(c, method, 400, "text/plain; charset=utf-8", []byte("400 Bad Request: want an HTTP/1.x request line\n"), nil)
		return
	}
	if _, err := tp.ReadMIMEHeader(); err != nil {
		answer(c, method, 400, "text/plain; charset=utf-8", []byte("400 Bad Request: unreadable or too long headers\n"), nil)
		return
	}
	c.SetReadDeadline(time.Time{})
	path, _, _ := strings.Cut(target, "?")
	switch {
	case path != "/metrics":
		answer(c, method, 404, "text/plain; charset=utf-8", []byte("404 page not found\n"), nil)
	case method != "GET" && method != "HEAD":
		answer(c, method, 405, "text/plain; charset=utf-8", []byte("405 method not allowed\n"), []string{"Allow: GET, HEAD"})
	default:
		body, err := s.h.scrape(s.ctx)
		if err != nil {
			answer(c, method, 500, "text/plain; charset=utf-8", []byte("An error has occurred while serving metrics:\n\n"+err.Error()+"\n"), nil)
			return
		}
		if err := answer(c, method, 200, contentType, body, nil); err != nil {
			s.h.writeFailed(err)
		}
	}
}

// answer writes a whole response that closes the connection; the body
// is left out for HEAD.
func answer(c net.Conn, method string, code int, ctype string, body []byte, headers []string) error {
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	var b strings.Builder
	b.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + statusText[code] + "\r\n")
	b.WriteString("Content-Type: " + ctype + "\r\n")
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	b.WriteString("Connection: close\r\n")
	b.WriteString("X-Content-Type-Options: nosniff\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil || method == "HEAD" {
		return err
	}
	_, err := c.Write(body)
	return err
}

var statusText = map[int]string{200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
