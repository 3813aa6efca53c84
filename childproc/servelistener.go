package childproc

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
)

// ServeListener is Serve for a server that accepts on a listener itself,
// such as a gRPC server: serve gets a listener that stands for ln, and at
// step 1 of the drain childproc closes it (this process's copy of the
// socket, as for an HTTP server) and calls stop only once every
// connection accepted before the close has been taken up by the server:
// read from, written to or closed. The gRPC server, the reference:
//
//	gs := grpc.NewServer()
//	lc.ServeListener("grpc", ln, gs.Serve, func(ctx context.Context) error {
//		done := make(chan struct{})
//		go func() { gs.GracefulStop(); close(done) }()
//		select {
//		case <-done:
//			return nil
//		case <-ctx.Done(): // the drain's deadline
//			gs.Stop()
//			return ctx.Err()
//		}
//	})
//
// Why the wait: grpc-go's GracefulStop closes, without a word, every
// connection its Serve accepted but had not yet begun to handle (it
// checks for the stop before its HTTP/2 handshake), and a client whose
// connection closes before the server's preface fails its RPC as
// UNAVAILABLE. Once the listener is closed no connection is accepted
// any more, and once each accepted one has been read or written the
// server has it: GracefulStop then sends it GOAWAY, like every other,
// and waits for its RPCs.
//
// serve must return once its listener is closed, or once stop was
// called; stop must return when what is in flight finished, or when ctx
// (the drain's deadline) is done, forcing the rest. A connection that
// nobody takes up keeps stop waiting until that deadline.
//
// The connections serve accepts are wrapped, to see when they are taken
// up: a type assertion to *net.TCPConn on one fails (grpc-go then leaves
// TCP_USER_TIMEOUT unset for its keepalive; the keepalive pings still
// work).
func (l *Lifecycle) ServeListener(name string, ln net.Listener, serve func(net.Listener) error, stop func(ctx context.Context) error) {
	t := &acceptTracker{Listener: ln, pending: map[*trackedConn]struct{}{}, settled: make(chan struct{})}
	l.add(&server{name: name, serve: func() error { return serve(t) }, stop: stop, accepts: t})
}

// acceptTracker is the listener ServeListener hands to serve. It knows
// the Accept calls in progress and the connections accepted but not
// yet taken up; settled is closed once the listener is closed and both
// are none.
type acceptTracker struct {
	net.Listener

	mu        sync.Mutex
	accepting int
	pending   map[*trackedConn]struct{}
	closed    bool
	settled   chan struct{}
	closeOnce sync.Once
	closeErr  error
}

func (t *acceptTracker) Accept() (net.Conn, error) {
	t.mu.Lock()
	t.accepting++
	t.mu.Unlock()
	c, err := t.Listener.Accept()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.accepting--
	defer t.settleLocked()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.pending[tc] = struct{}{}
	return tc, nil
}

// Close closes the listener once; later calls (the server's own, from
// its stop) return nil.
func (t *acceptTracker) Close() error {
	t.closeOnce.Do(func() {
		t.closeErr = t.Listener.Close()
		t.mu.Lock()
		t.closed = true
		t.settleLocked()
		t.mu.Unlock()
	})
	return t.closeErr
}

func (t *acceptTracker) settleLocked() {
	if t.closed && t.accepting == 0 && len(t.pending) == 0 {
		select {
		case <-t.settled:
		default:
			close(t.settled)
		}
	}
}

// closeAndWait closes the listener and waits until every connection it
// accepted was taken up, or until ctx is done; it returns how many were
// still untouched then.
func (t *acceptTracker) closeAndWait(ctx context.Context) int {
	t.Close()
	select {
	case <-t.settled:
		return 0
	case <-ctx.Done():
		t.mu.Lock()
		defer t.mu.Unlock()
		return len(t.pending)
	}
}

func (t *acceptTracker) taken(c *trackedConn) {
	t.mu.Lock()
	delete(t.pending, c)
	t.settleLocked()
	t.mu.Unlock()
}

// trackedConn tells its acceptTracker when the server first reads,
// writes or closes it.
type trackedConn struct {
	net.Conn
	t    *acceptTracker
	seen atomic.Bool
}

func (c *trackedConn) take() {
	if !c.seen.Load() && c.seen.CompareAndSwap(false, true) {
		c.t.taken(c)
	}
}

func (c *trackedConn) Read(b []byte) (int, error)  { c.take(); return c.Conn.Read(b) }
func (c *trackedConn) Write(b []byte) (int, error) { c.take(); return c.Conn.Write(b) }
func (c *trackedConn) Close() error                { c.take(); return c.Conn.Close() }
