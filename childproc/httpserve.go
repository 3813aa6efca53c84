package childproc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hitless/hitless/internal/handover"
)

// httpServer is one http.Server with the bookkeeping the drain needs: the
// state of every connection (from ConnState) and every running handler.
type httpServer struct {
	srv *http.Server
	ln  net.Listener

	// lameDuck is set when the drain begins; from then on every HTTP/1
	// response carries "Connection: close".
	lameDuck atomic.Bool
	// closeSent counts responses sent with "Connection: close" because of
	// the lame duck: each one is a keep-alive client that left cleanly.
	closeSent atomic.Int64

	// The hand-over (handconn.go). hl is the listener served from when
	// this server's connections can be handed over (nil when not: TLS,
	// a listener of the application's own type, no hitless); kind names
	// it to the next generation. handing is set at the drain when the
	// serving generation adopts kind: connections then leave by
	// hand-over, not by "Connection: close".
	hl         *handListener
	kind       string
	ho         *handoverClient
	handing    atomic.Bool
	handed     atomic.Int64
	closedIdle *atomic.Int64 // the Lifecycle's

	mu       sync.Mutex
	conns    map[net.Conn]*connInfo
	inflight map[*inflightReq]struct{}
	changed  broadcast
}

type connInfo struct {
	state http.ConnState
	since time.Time // when it entered state
	// http2 is set at the connection's first HTTP/2 request. The lame
	// duck does not wait for such a connection: it cannot tell it to
	// leave (GOAWAY from Shutdown does), and net/http reports it active
	// for as long as any stream is open, which with a busy client is
	// always.
	http2 bool
}

// connKey is the request context key (set by ConnContext) of the
// connection a request came on: the net.Conn that ConnState reports, for
// HTTP/1, h2c and HTTP/2 over TLS alike.
type connKey struct{}

type inflightReq struct {
	method, uri, remote string
	start               time.Time
	hijacked            atomic.Bool
}

func newHTTPServer(srv *http.Server, ln net.Listener, reqBase context.Context, ho *handoverClient, closedIdle *atomic.Int64) *httpServer {
	h := &httpServer{
		srv:        srv,
		ln:         ln,
		conns:      make(map[net.Conn]*connInfo),
		inflight:   make(map[*inflightReq]struct{}),
		ho:         ho,
		closedIdle: closedIdle,
	}
	if ho != nil && !h.tls() && !unencryptedHTTP2(srv) {
		if hl := newHandListener(ln, h); hl != nil {
			a := ln.Addr()
			h.hl, h.ln, h.kind = hl, hl, handover.HTTPKind(a.Network(), a.String())
		}
	}
	next := srv.Handler
	if next == nil {
		next = http.DefaultServeMux
	}
	srv.Handler = h.wrap(next)

	userState := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		h.connState(c, st)
		if userState != nil {
			userState(c, st)
		}
	}

	// The handler learns which connection a request came on from its
	// context, to mark HTTP/2 connections.
	userConn := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if userConn != nil {
			ctx = userConn(ctx, c)
		}
		return context.WithValue(ctx, connKey{}, c)
	}

	// Request contexts derive from reqBase, which the drain cancels a
	// little before its deadline: a context-aware handler then gives up
	// and answers while the process is still there to send the answer.
	userBase := srv.BaseContext
	srv.BaseContext = func(l net.Listener) context.Context {
		base := context.Background()
		if userBase != nil {
			base = userBase(l)
		}
		ctx, cancel := context.WithCancelCause(base)
		context.AfterFunc(reqBase, func() { cancel(context.Cause(reqBase)) })
		return ctx
	}
	return h
}

func (h *httpServer) name() string { return "http " + h.ln.Addr().String() }

// tls reports whether srv serves TLS (see serve).
func (h *httpServer) tls() bool {
	tc := h.srv.TLSConfig
	return tc != nil && (len(tc.Certificates) > 0 || tc.GetCertificate != nil || tc.GetConfigForClient != nil)
}

// unencryptedHTTP2 reports whether srv takes HTTP/2 with prior knowledge
// on plaintext connections: their first Read is net/http's peek at the
// preface, not its buffer's fill, which the boundary rule counts on.
func unencryptedHTTP2(srv *http.Server) bool {
	return srv.Protocols != nil && srv.Protocols.UnencryptedHTTP2()
}

func (h *httpServer) serve() error {
	if h.tls() {
		return h.srv.ServeTLS(h.ln, "", "")
	}
	return h.srv.Serve(h.ln)
}

// handOver sends c to the next generation; false when hitless refused
// it (c is served here then). busy: see handConn.handOver.
func (h *httpServer) handOver(c *handConn, busy bool) (taken bool, reason string) {
	taken, lost, reason := h.ho.hand(h.kind, c.raw, nil, busy)
	if lost {
		// Maybe gone to the next generation, maybe not: it must not
		// be served here in either case.
		h.closedIdle.Add(1)
		return true, reason
	}
	if taken {
		h.handed.Add(1)
	}
	return taken, reason
}

// requestHandOvers asks every connection to be handed over at its next
// request boundary, the most recently active first: a busy client's next
// request waits in the kernel while its connection moves, an idle one's
// does not.
func (h *httpServer) requestHandOvers() int {
	type conn struct {
		hc    *handConn
		since time.Time
	}
	h.mu.Lock()
	cs := make([]conn, 0, len(h.conns))
	for c, ci := range h.conns {
		if hc, ok := c.(*handConn); ok && !ci.http2 {
			cs = append(cs, conn{hc, ci.since})
		}
	}
	// Asked outside the lock: the first ones leave while the last are
	// asked, and their goroutines report it (connState) under h.mu.
	h.mu.Unlock()
	slices.SortFunc(cs, func(a, b conn) int { return b.since.Compare(a.since) })
	for _, c := range cs {
		c.hc.requestHandOver()
	}
	return len(cs)
}

// idleConns counts the HTTP/1 connections that Shutdown would close
// while idle now.
func (h *httpServer) idleConns() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ci := range h.conns {
		if !ci.http2 && (ci.state == http.StateIdle || ci.state == http.StateNew) {
			n++
		}
	}
	return n
}

func (h *httpServer) connState(c net.Conn, st http.ConnState) {
	if hc, ok := c.(*handConn); ok {
		hc.connState(st)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		// A hijacked connection leaves net/http; its handler (still in
		// h.inflight) is what the drain waits for.
		delete(h.conns, c)
	default:
		ci := h.conns[c]
		if ci == nil {
			ci = &connInfo{}
			h.conns[c] = ci
		}
		ci.state, ci.since = st, time.Now()
	}
	h.changed.fire()
}

func (h *httpServer) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ir := &inflightReq{method: r.Method, uri: r.RequestURI, remote: r.RemoteAddr, start: time.Now()}
		h.mu.Lock()
		h.inflight[ir] = struct{}{}
		if r.ProtoMajor == 2 {
			h.markHTTP2Locked(r.Context())
		}
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			delete(h.inflight, ir)
			h.changed.fire()
			h.mu.Unlock()
		}()
		// HTTP/2 has no Connection header (GOAWAY from Shutdown does that
		// job); only HTTP/1 responses get the lame-duck writer.
		if r.ProtoMajor != 1 {
			next.ServeHTTP(w, r)
			return
		}
		hc, _ := r.Context().Value(connKey{}).(*handConn)
		lw := &lameDuckWriter{ResponseWriter: w, h: h, ir: ir, hc: hc}
		next.ServeHTTP(lw, r)
		lw.handlerReturned()
	})
}

// markHTTP2Locked marks the connection of an HTTP/2 request, so that
// settle stops waiting for it.
func (h *httpServer) markHTTP2Locked(ctx context.Context) {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	if ci := h.conns[c]; ci != nil && !ci.http2 {
		ci.http2 = true
		if hc, ok := c.(*handConn); ok {
			hc.pin("HTTP/2")
		}
		h.changed.fire()
	}
}

// settle waits until no connection is new or active and every idle
// keep-alive connection has been idle for at least quiet; or until ctx is
// done. quiet covers the client that just got a response and is about to
// send its next request on the same connection: it gets one more answer,
// with "Connection: close", instead of a connection closed under it.
// Connections idle for longer are left to Shutdown, and so are HTTP/2
// connections, whatever their state: Shutdown's GOAWAY tells them to
// leave and waits for their streams. It returns what was still busy when
// ctx ended.
//
// patient (while connections are being handed over) waits for every
// HTTP/1 connection, idle or not: each leaves by hand-over at its next
// boundary, or, if it cannot move, after its next response, never while
// idle, until ctx ends.
func (h *httpServer) settle(ctx context.Context, quiet time.Duration, patient bool) []string {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := time.Now()
		var next time.Time
		busy := false
		h.mu.Lock()
		for _, ci := range h.conns {
			if ci.http2 {
				continue
			}
			if patient {
				// One is enough: a drain that hands 10,000
				// connections over wakes this loop at each one
				// that leaves, and must not walk them all each
				// time.
				busy = true
				break
			}
			switch ci.state {
			case http.StateNew, http.StateActive:
				busy = true
			case http.StateIdle:
				if t := ci.since.Add(quiet); now.Before(t) {
					busy = true
					if next.IsZero() || t.Before(next) {
						next = t
					}
				}
			}
		}
		ch := h.changed.wait()
		h.mu.Unlock()
		if !busy {
			return nil
		}
		var tc <-chan time.Time
		if !next.IsZero() {
			if timer == nil {
				timer = time.NewTimer(next.Sub(now))
			} else {
				timer.Reset(next.Sub(now))
			}
			tc = timer.C
		}
		select {
		case <-ch:
		case <-tc:
		case <-ctx.Done():
			return h.describe()
		}
	}
}

// http2Conns counts the open connections known to be HTTP/2.
func (h *httpServer) http2Conns() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ci := range h.conns {
		if ci.http2 {
			n++
		}
	}
	return n
}

// waitHandlers waits until every handler returned, including those whose
// connection was hijacked (WebSockets), which Shutdown does not wait for.
func (h *httpServer) waitHandlers(ctx context.Context) []string {
	for {
		h.mu.Lock()
		n := len(h.inflight)
		ch := h.changed.wait()
		h.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return h.describe()
		}
	}
}

// describe lists open connections and running handlers.
func (h *httpServer) describe() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var counts [http.StateClosed + 1]int
	h2 := 0
	for _, ci := range h.conns {
		counts[ci.state]++
		if ci.http2 {
			h2++
		}
	}
	var out []string
	if len(h.conns) > 0 {
		of := ""
		if h2 > 0 {
			of = fmt.Sprintf("; %d of them HTTP/2", h2)
		}
		out = append(out, fmt.Sprintf("%s: %d connections open (%d new, %d active, %d idle%s)",
			h.name(), len(h.conns), counts[http.StateNew], counts[http.StateActive], counts[http.StateIdle], of))
	}
	reqs := make([]*inflightReq, 0, len(h.inflight))
	for ir := range h.inflight {
		reqs = append(reqs, ir)
	}
	slices.SortFunc(reqs, func(a, b *inflightReq) int { return a.start.Compare(b.start) })
	const maxListed = 10 // enough to see what hangs, short enough to read
	for i, ir := range reqs {
		if i == maxListed {
			out = append(out, fmt.Sprintf("%s: %d more requests", h.name(), len(reqs)-maxListed))
			break
		}
		hj := ""
		if ir.hijacked.Load() {
			hj = ", hijacked"
		}
		out = append(out, fmt.Sprintf("%s: request %s %s from %s (running %s%s)",
			h.name(), ir.method, ir.uri, ir.remote, time.Since(ir.start).Round(time.Millisecond), hj))
	}
	return out
}

// lameDuckWriter adds "Connection: close" to a response whose header is
// written after the drain began, so that net/http closes the connection
// after it and the client opens its next one to the new generation. It
// checks when the header goes out, not when the handler starts, so that a
// slow handler running across the start of the drain closes its
// connection too. The header goes out when the handler first writes, or,
// if it never does, when it returns (handlerReturned).
//
// It implements what net/http's HTTP/1 response writer implements
// (Flusher, Hijacker, io.ReaderFrom, CloseNotifier) and Unwrap for
// http.ResponseController, so frameworks that type-assert keep working.
type lameDuckWriter struct {
	http.ResponseWriter
	h           *httpServer
	ir          *inflightReq
	hc          *handConn // nil unless connections can be handed over
	wroteHeader bool
}

func (w *lameDuckWriter) beforeHeader() {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	// A connection that will be handed over at its next boundary stays
	// open: the client keeps it, and the next generation answers on it.
	if w.h.lameDuck.Load() && !(w.h.handing.Load() && w.hc != nil && w.hc.movable()) {
		w.ResponseWriter.Header().Set("Connection", "close")
		w.h.closeSent.Add(1)
	}
}

// handlerReturned runs once the handler returned. A handler that wrote
// nothing (an implicit 200, as a HEAD or an empty answer often is) leaves
// the header to net/http, which writes it after this, past the wrapper:
// decide about "Connection: close" now, while the header can still change.
func (w *lameDuckWriter) handlerReturned() {
	if w.ir.hijacked.Load() {
		return // the connection is no longer net/http's; no header follows
	}
	w.beforeHeader()
}

func (w *lameDuckWriter) WriteHeader(code int) {
	// 1xx responses are interim; the final header comes later. (101
	// Switching Protocols is final but must not say "close".)
	if code >= 200 {
		w.beforeHeader()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *lameDuckWriter) Write(p []byte) (int, error) {
	w.beforeHeader()
	return w.ResponseWriter.Write(p)
}

func (w *lameDuckWriter) WriteString(s string) (int, error) {
	w.beforeHeader()
	return io.WriteString(w.ResponseWriter, s)
}

func (w *lameDuckWriter) ReadFrom(r io.Reader) (int64, error) {
	w.beforeHeader()
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

func (w *lameDuckWriter) Flush() {
	w.beforeHeader()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *lameDuckWriter) FlushError() error {
	w.beforeHeader()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *lameDuckWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.ir.hijacked.Store(true)
	}
	return c, rw, err
}

// CloseNotify is deprecated, but frameworks (gin's Stream) still call it
// through a type assertion that panics when it is missing.
func (w *lameDuckWriter) CloseNotify() <-chan bool {
	//lint:ignore SA1019 forwarded for frameworks that still use it
	if cn, ok := w.ResponseWriter.(http.CloseNotifier); ok { //nolint:staticcheck
		return cn.CloseNotify()
	}
	return make(chan bool)
}

func (w *lameDuckWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
