//go:build linux

package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hitless/hitless/internal/unixsock"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

// When hitless replaces its own binary in place (package upgrade), the
// control socket goes over to the next image with everything on it: the
// listening socket, whose queue holds the connections that arrive during
// the exec (a short pause, never a refusal), and each connection whose
// request was in flight, with that request and its deadline. The next
// image answers them: a reload rejoins the reload it had joined (the
// machine carries its callers), a stop is asked again (it joins the stop
// the old image had deferred), and an upgrade gets the verdict of the
// upgrade that brought the new image up.

// errHandoff cancels the requests in flight when the server is handed
// over: the supervisor keeps their callers' places (ErrCarried).
var errHandoff = fmt.Errorf("control socket handed over to the next image: %w", supervisor.ErrCarried)

// carried is a connection handed over: its request, or what was read of
// it so far.
type carried struct {
	conn     *net.UnixConn
	req      request
	deadline time.Time // zero: the request was not read yet
	partial  []byte
}

// carriedState is a carried connection, written down.
type carriedState struct {
	Cmd     string        `json:"cmd,omitempty"` // empty: not read yet
	Binary  string        `json:"binary,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"` // as asked
	Left    time.Duration `json:"left,omitempty"`    // of its wait, at the hand-over
	Partial []byte        `json:"partial,omitempty"`
	// Caller names a reload to the supervisor: the carried request
	// takes its own place back (0 from a build that named none).
	Caller supervisor.Caller `json:"caller,omitempty"`
}

// controlState is the control server, written down.
type controlState struct {
	Path     string         `json:"path"`
	Dev      uint64         `json:"dev"`
	Ino      uint64         `json:"ino"`
	Requests []carriedState `json:"requests"`
}

func (s *Server) requestContext() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reqCtx
}

func (s *Server) handingOffNow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handingOff
}

// track records c as being served; false if the server is being handed
// over, and c must be carried instead.
func (s *Server) track(c *net.UnixConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handingOff {
		return false
	}
	s.conns[c] = true
	return true
}

func (s *Server) untrack(c *net.UnixConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// carry keeps cr for the next image (or for Resume). It returns true: the
// connection stays open.
func (s *Server) carry(cr carried) bool {
	// A request that was read was asked (or was about to be): whoever
	// answers it gives the verdict of what it asked for, not a second
	// one. An upgrade gets the verdict of the one under way; a reload
	// rejoins the reload it had joined.
	if cr.req.cmd == CmdUpgrade || cr.req.cmd == CmdReload {
		cr.req.resumed = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.h; h != nil && !s.handingOff {
		// Cut off by a hand-over that is over already (its exec, or the
		// hand-over itself, failed, and Resume ran): answer it here.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.resumeConn(cr, h)
		}()
		return true
	}
	s.carried = append(s.carried, cr)
	return true
}

// Handoff hands the server over to the next image (it is a
// supervisor.Carrier): it stops accepting, with the listening socket left
// open; interrupts every request in flight, which keeps its connection
// open for the next image; and puts the listening socket, the connections
// and their requests in st.
func (s *Server) Handoff(ctx context.Context, st *upgrade.State) error {
	s.mu.Lock()
	s.handingOff = true
	done := s.serveDone
	s.reqCancel(errHandoff)
	for c := range s.conns {
		c.SetReadDeadline(time.Unix(1, 0)) // a request being read
	}
	s.mu.Unlock()
	s.ln.SetDeadline(time.Unix(1, 0)) // Accept returns; the socket stays
	if done != nil {
		<-done
	}
	waited := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-ctx.Done():
		return fmt.Errorf("control socket: requests in flight did not stop: %w", context.Cause(ctx))
	}
	cs := controlState{Path: s.path, Dev: s.dev, Ino: s.ino}
	errs := []error{st.CarryConn("control/listener", s.ln)}
	now := time.Now()
	for i, cr := range s.carried {
		r := carriedState{Cmd: cr.req.cmd, Binary: cr.req.binary, Timeout: cr.req.timeout, Partial: cr.partial, Caller: cr.req.caller}
		if !cr.deadline.IsZero() {
			r.Left = max(cr.deadline.Sub(now), time.Millisecond)
		}
		cs.Requests = append(cs.Requests, r)
		errs = append(errs, st.CarryConn(fmt.Sprintf("control/conn/%d", i), cr.conn))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	return st.Put("control", cs)
}

// Resume takes the server back after a hand-over whose exec failed, or
// that failed itself: it accepts again and answers the requests it had
// carried, and those carried later.
func (s *Server) Resume() {
	s.mu.Lock()
	s.handingOff = false
	s.reqCtx, s.reqCancel = context.WithCancelCause(s.ctx)
	h := s.h
	s.mu.Unlock()
	s.ln.SetDeadline(time.Time{})
	if h != nil {
		go s.Serve(h)
	}
}

// Restore takes back the control server an earlier image handed over in
// st. Nothing of st is closed until st.Commit. Serve answers the carried
// requests first.
func Restore(st *upgrade.State) (*Server, error) {
	var cs controlState
	if err := st.Get("control", &cs); err != nil {
		return nil, err
	}
	f := st.File("control/listener")
	if f == nil {
		return nil, errors.New("control socket: the state carries no listener")
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", cs.Path, err)
	}
	st.CloseLater(f) // ln holds a duplicate
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: not a unix socket", cs.Path)
	}
	s := newServer(cs.Path, ul, cs.Dev, cs.Ino)
	now := time.Now()
	for i, r := range cs.Requests {
		f := st.File(fmt.Sprintf("control/conn/%d", i))
		if f == nil {
			return nil, fmt.Errorf("control socket: the state carries no connection %d", i)
		}
		c, err := net.FileConn(f)
		if err != nil {
			return nil, fmt.Errorf("control socket: connection %d: %w", i, err)
		}
		st.CloseLater(f)
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("control socket: connection %d is not a unix socket", i)
		}
		cr := carried{conn: uc, partial: r.Partial}
		if r.Cmd != "" {
			cr.req = request{cmd: r.Cmd, binary: r.Binary, timeout: r.Timeout, caller: r.Caller}
			cr.deadline = now.Add(r.Left)
		}
		s.carry(cr)
	}
	return s, nil
}

// resumeConn answers a connection carried from another image.
func (s *Server) resumeConn(cr carried, h Handler) {
	// The peer was authorized by the image that accepted it; its
	// credentials only label the log lines.
	log := s.logger()
	if cred, err := unixsock.PeerCred(cr.conn); err == nil {
		log = log.With("peer_pid", cred.Pid, "peer_uid", cred.Uid)
	}
	if !s.serve(cr, log, h, nil) {
		cr.conn.Close()
	}
}
