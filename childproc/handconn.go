package childproc

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

// This file is the HTTP half of the connection hand-over (see the package
// doc, "Handing connections over", for the rule and its proof): a
// listener that wraps each connection an http.Server accepts, so that the
// drain can tell when one sits at a request boundary, and that merges the
// connections adopted from the previous generation into Accept.

// handConn is a plaintext connection of an http.Server that childproc
// serves. Its Read knows whether net/http holds any byte of a next
// request (see boundaryLocked); the drain hands it over only from such a
// Read, before it reads anything.
type handConn struct {
	net.Conn              // *net.TCPConn or *net.UnixConn: the kernel's socket, nothing read ahead
	raw      syscall.Conn // the same, for its descriptor
	h        *httpServer

	mu sync.Mutex
	// bufSize is len(p) of the connection's first Read: net/http's
	// bufio.Reader filling its whole, empty buffer.
	bufSize  int
	everRead bool // a Read returned bytes
	// idle: net/http reported StateIdle (a response was sent) and no Read
	// has been made since.
	idle   bool
	pinned string // why it can never be handed over; "" if it can
	// want: the drain asked for a hand-over at the next boundary.
	want bool
	// waking: the drain set a past read deadline to end a Read blocked
	// at the boundary; deadline is the one the conn's owner set.
	waking   bool
	deadline time.Time
	inRead   bool // a Read at the boundary is blocked
	handed   bool // handed over: it is not this process's any more
}

func newHandConn(c net.Conn, h *httpServer) net.Conn {
	raw, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		return &handConn{Conn: c, raw: raw, h: h}
	}
	return c
}

// errHanded ends net/http's serving of a connection handed over: io.EOF
// is what net/http takes for a client that left, so it closes its copy
// without a word.
var errHanded = io.EOF

// boundaryLocked reports whether a Read of len(p) made now starts at a
// request boundary with nothing of the next request in this process: the
// connection never returned a byte, or net/http reported it idle and now
// fills its whole, empty buffer.
func (c *handConn) boundaryLocked(n int) bool {
	if c.pinned != "" || c.handed {
		return false
	}
	return !c.everRead || (c.idle && n == c.bufSize)
}

func (c *handConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.handed {
		c.mu.Unlock()
		return 0, errHanded
	}
	if c.bufSize == 0 {
		c.bufSize = len(p)
	}
	at := c.boundaryLocked(len(p))
	c.idle = false
	if at && c.want {
		// Nothing of the next request has been read: it is still in
		// the socket, and goes with it. The connection was busy when
		// the drain asked: its client is likely to send again soon.
		c.mu.Unlock()
		if c.handOver(true) {
			return 0, errHanded
		}
		c.mu.Lock()
		at = false // refused: pinned, served here
	}
	c.inRead = at
	c.mu.Unlock()

	n, err := c.Conn.Read(p)

	c.mu.Lock()
	c.inRead = false
	woken := c.waking
	if woken {
		c.waking = false
		c.Conn.SetReadDeadline(c.deadline) // the owner's deadline, as it was
	}
	if n > 0 {
		// The client's next request came first: served here; the
		// hand-over waits for the next boundary.
		c.everRead = true
		c.mu.Unlock()
		return n, err
	}
	if at && c.want && errors.Is(err, os.ErrDeadlineExceeded) {
		c.mu.Unlock()
		if c.handOver(false) {
			return 0, errHanded
		}
		// Refused: read on, as if nothing happened.
		return c.Read(p)
	}
	c.mu.Unlock()
	return n, err
}

// handOver sends the connection to the next generation, through hitless,
// and reports whether it went; if not, the connection is pinned here.
// busy says that its client has just been served: it goes before the
// idle ones (see handoverClient).
func (c *handConn) handOver(busy bool) bool {
	taken, reason := c.h.handOver(c, busy)
	c.mu.Lock()
	defer c.mu.Unlock()
	if taken {
		c.handed = true
		return true
	}
	c.want = false
	c.pinLocked("hand-over refused: " + reason)
	return false
}

// requestHandOver asks for the connection to be handed over at its next
// request boundary: at once if a Read is blocked there (a past read
// deadline ends it), else when net/http next reads at one.
func (c *handConn) requestHandOver() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pinned != "" || c.handed || c.want {
		return
	}
	c.want = true
	if c.inRead && !c.waking {
		c.waking = true
		c.Conn.SetReadDeadline(aLongTimeAgo)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// movable reports whether the connection may still be handed over: its
// responses need no "Connection: close".
func (c *handConn) movable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pinned == "" && !c.handed
}

func (c *handConn) pin(why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pinLocked(why)
}

func (c *handConn) pinLocked(why string) {
	if c.pinned == "" {
		c.pinned = why
	}
}

// connState follows net/http's reports about the connection.
func (c *handConn) connState(st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateIdle:
		c.idle = true
	case http.StateHijacked:
		c.pinLocked("hijacked")
	}
}

func (c *handConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.waking {
		return nil // set when the woken Read returns
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *handConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	if c.waking {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *handConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	handed := c.handed
	c.mu.Unlock()
	if handed {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps sendfile and splice for responses.
func (c *handConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite lets net/http half-close after a "Connection: close"
// response, as it does on a bare *net.TCPConn.
func (c *handConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SyscallConn gives the socket's descriptor, for socket options.
func (c *handConn) SyscallConn() (syscall.RawConn, error) { return c.raw.SyscallConn() }

// NetConn returns the *net.TCPConn or *net.UnixConn underneath, as
// tls.Conn.NetConn does: a ConnContext or handler that needs it can
// unwrap it. Reading from it directly defeats the hand-over's proof;
// don't, except on a hijacked connection.
func (c *handConn) NetConn() net.Conn { return c.Conn }

// handListener is the listener an http.Server serves from when
// connections are handed over: it wraps each connection it accepts, and
// returns the connections adopted from the previous generation as if it
// had just accepted them.
type handListener struct {
	net.Listener // *net.TCPListener or *net.UnixListener
	h            *httpServer
	deadline     interface{ SetDeadline(time.Time) error }

	mu        sync.Mutex
	queue     []*handConn
	accepting bool // Accept is (about to be) blocked in the kernel
	poked     bool // a past deadline was set to end it
	closed    bool
}

func newHandListener(ln net.Listener, h *httpServer) *handListener {
	dl, ok := ln.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return nil
	}
	switch ln.(type) {
	case *net.TCPListener, *net.UnixListener:
		return &handListener{Listener: ln, h: h, deadline: dl}
	}
	return nil
}

func (l *handListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return c, nil
		}
		l.accepting = true
		l.mu.Unlock()

		c, err := l.Listener.Accept()

		l.mu.Lock()
		l.accepting = false
		poked := l.poked
		if poked {
			l.poked = false
			l.deadline.SetDeadline(time.Time{})
		}
		l.mu.Unlock()
		if err != nil {
			if poked && errors.Is(err, os.ErrDeadlineExceeded) {
				continue // an adopted connection is queued
			}
			return nil, err
		}
		return newHandConn(c, l.h), nil
	}
}

// adopt queues c for Accept; false once the listener is closed.
func (l *handListener) adopt(c *handConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.queue = append(l.queue, c)
	if l.accepting && !l.poked {
		l.poked = true
		l.deadline.SetDeadline(aLongTimeAgo)
	}
	return true
}

// Close closes this process's copy of the listener and returns the
// adopted connections that Accept never returned: the caller hands them
// on or closes them.
func (l *handListener) close() ([]*handConn, error) {
	l.mu.Lock()
	l.closed = true
	q := l.queue
	l.queue = nil
	l.mu.Unlock()
	return q, l.Listener.Close()
}

func (l *handListener) Close() error {
	q, err := l.close()
	for _, c := range q {
		go handOnOrClose(l.h.ho, l.h.closedIdle, l.h.kind, c.Conn, nil)
	}
	return err
}
