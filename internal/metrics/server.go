//go:build linux

package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hitless/hitless/internal/unixsock"
)

// Server serves a handler over HTTP on one listener.
type Server struct {
	srv *http.Server
	ln  net.Listener
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
	return &Server{
		ln: ln,
		srv: &http.Server{
			Handler: h,
			// A scraper that stalls must not hold a connection forever.
			ReadHeaderTimeout: 10 * time.Second,
			WriteTimeout:      ScrapeTimeout + 10*time.Second,
			IdleTimeout:       2 * time.Minute,
		},
	}, nil
}

// Addr is the bound address: the port chosen for host:0, or the socket's
// path.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Close, and then returns nil.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics: %w", err)
}

// Close stops serving: it closes the listener (a unix socket's file is
// removed) and every connection, including a scrape in progress.
func (s *Server) Close() error {
	err := s.srv.Close()
	// Close closes the listener only if Serve had taken it.
	s.ln.Close()
	return err
}
