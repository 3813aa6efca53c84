//go:build linux

package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/unixsock"
	"github.com/hitless/hitless/upgrade"
)

// Server serves a handler over HTTP on one listener. It is a
// supervisor.Carrier: an upgrade of hitless in place carries the
// listener, so that a scraper meets no refused connection and the same
// port (one chosen for host:0 included) after it.
type Server struct {
	h  http.Handler
	ln *keptListener

	mu      sync.Mutex
	srv     *http.Server
	done    chan struct{}     // closed when the current Serve has returned
	conns   map[net.Conn]bool // open connections: true while one waits for or serves a request
	changed chan struct{}     // closed and replaced when conns changes
}

// Listen binds addr: host:port, or, when addr contains a slash, a unix
// socket at that path (a stale socket file is replaced, a live one
// refused; Close removes the file). Nothing is served until Serve.
func Listen(addr string, h http.Handler) (*Server, error) {
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

func newServer(ln net.Listener, h http.Handler) *Server {
	s := &Server{h: h, ln: &keptListener{Listener: ln}}
	s.srv = s.httpServer()
	return s
}

func (s *Server) httpServer() *http.Server {
	return &http.Server{
		Handler: s.h,
		// A scraper that stalls must not hold a connection forever.
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      ScrapeTimeout + 10*time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnState:         s.connState,
	}
}

// Addr is the bound address: the port chosen for host:0, or the socket's
// path.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Close, and then returns nil. After a hand-over that
// failed (Resume), it serves again in a goroutine of Resume's.
func (s *Server) Serve() error {
	s.mu.Lock()
	srv, done := s.srv, make(chan struct{})
	s.done = done
	s.mu.Unlock()
	defer close(done)
	err := srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, errHandedOver) {
		return nil
	}
	return fmt.Errorf("metrics: %w", err)
}

// Close stops serving: it closes the listener (a unix socket's file is
// removed) and every connection, including a scrape in progress.
func (s *Server) Close() error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	var err error
	if srv != nil {
		err = srv.Close()
	}
	// Close closes the listener only if Serve had taken it.
	s.ln.close()
	return err
}

// serverState is the server, written down for the next image.
type serverState struct {
	Network string `json:"network"`
	Addr    string `json:"addr"`
}

// Handoff stops accepting without closing the listener, whose queue
// holds the scrapes that arrive during the exec, answers the scrapes on
// the connections it has (each connection closes after its response;
// idle keep-alive ones at once), and puts the listener in st
// (supervisor.Carrier). A scrape that connected before is answered here;
// one that connects after, there. A connection that sends nothing within
// ctx is closed. Not http.Server.Shutdown: it drops a request that is
// read once it began, unanswered.
func (s *Server) Handoff(ctx context.Context, st *upgrade.State) error {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.mu.Unlock()
	s.ln.keep(true)
	if done != nil {
		<-done // no connection is accepted from now on
	}
	if srv != nil {
		srv.SetKeepAlivesEnabled(false)
		if !s.waitConns(ctx) {
			srv.Close() // the listener is kept
		}
	}
	conn, ok := s.ln.Listener.(syscall.Conn)
	if !ok {
		return fmt.Errorf("metrics: cannot carry a %T", s.ln.Listener)
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
	s.srv = s.httpServer()
	s.mu.Unlock()
	s.ln.keep(false)
	go s.Serve()
}

// Restore takes back the server an earlier image handed over in st, to
// serve h; nil, nil when st carries none (the earlier image had no
// metrics, or was older). Nothing of st is closed until st.Commit.
func Restore(st *upgrade.State, h http.Handler) (*Server, error) {
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

// keptListener is the server's listener, which a hand-over keeps open:
// http.Server.Shutdown closes its listeners, and the next image needs
// this one.
type keptListener struct {
	net.Listener
	mu   sync.Mutex
	kept bool
}

// keep, on, ends Accept (with errHandedOver, once it has returned what it
// accepted) and makes Close only that; off, undoes it.
func (l *keptListener) keep(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kept = on
	if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
		if on {
			d.SetDeadline(time.Unix(1, 0)) // a blocked Accept returns
		} else {
			d.SetDeadline(time.Time{})
		}
	}
}

func (l *keptListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		l.mu.Lock()
		kept := l.kept
		l.mu.Unlock()
		if kept {
			return nil, errHandedOver
		}
	}
	return c, err
}

func (l *keptListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kept {
		if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
			return d.SetDeadline(time.Unix(1, 0)) // Accept returns; the socket stays
		}
	}
	return l.Listener.Close()
}

// close closes the listener whatever keep says.
func (l *keptListener) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kept = false
	err := l.Listener.Close()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// errHandedOver ends Serve when the listener is handed over.
var errHandedOver = errors.New("metrics: the listener is handed over")

// connState follows the connections, for Handoff.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns, s.changed = make(map[net.Conn]bool), make(chan struct{})
	}
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
	default:
		s.conns[c] = st != http.StateIdle
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitConns waits until every connection is closed, or ctx ends.
func (s *Server) waitConns(ctx context.Context) bool {
	for {
		s.mu.Lock()
		n, changed := len(s.conns), s.changed
		s.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}
