// Command wsecho is a WebSocket echo server that keeps its clients across
// reloads: when a generation drains, it hands each WebSocket connection,
// between two frames, to the next generation with childproc's
// Lifecycle.HandOver, and the next generation adopts it with
// Lifecycle.Adopter. The client sees no close frame and loses no message;
// its TCP connection is the same throughout.
//
// It uses github.com/gobwas/ws, which keeps the WebSocket handshake apart
// from the framing: a connection whose handshake was made by an earlier
// process is served from its next frame on, which libraries that own the
// connection's buffers (gorilla/websocket, coder/websocket) have no
// constructor for.
//
//	go build -o wsecho . && hitless run --listen ws=tcp://127.0.0.1:8080 -- ./wsecho -listen 127.0.0.1:8080
//
// The state each connection carries across is small: how many frames it
// echoed (to show it moved) and the bytes already read from the socket
// and not yet processed, the start of the next frame, which the next
// generation reads before the socket.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/hitless/hitless/childproc"
)

// kind is the name connections are handed over under.
const kind = "ws-echo"

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve (inherited under hitless)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid(), "gen", os.Getenv("HITLESS_GENERATION"))
	if err := run(*listen, log); err != nil {
		log.Error("wsecho", "err", err)
		os.Exit(1)
	}
}

func run(addr string, log *slog.Logger) error {
	socks, err := childproc.Inherit()
	if err != nil {
		return err
	}
	ln, err := socks.Listen("tcp", addr)
	if err != nil {
		return err
	}
	lc := childproc.New(childproc.Options{Logger: log})
	gen, _ := strconv.Atoi(os.Getenv("HITLESS_GENERATION"))
	e := &echo{lc: lc, log: log, gen: gen}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		conn, rw, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return // UpgradeHTTP answered the client
		}
		// The handler runs the session: the drain waits for it like
		// any hijacked handler, and it hands the connection over as
		// the drain begins.
		e.serve(&session{conn: conn, br: rw.Reader})
	})
	lc.ServeHTTP(&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln)

	// Connections an earlier generation handed over. The Adopter is
	// declared before Run, so that the generation before knows, when it
	// drains, that this one takes them.
	adopter := lc.Adopter(kind)
	if err := lc.Go("adopt "+kind, func(ctx context.Context) {
		for {
			a, err := adopter.Accept(ctx)
			if err != nil {
				return // the drain began
			}
			s, err := resume(a)
			if err != nil {
				log.Warn("wsecho: bad state; closing", "err", err)
				a.Conn.Close()
				continue
			}
			if err := lc.Go("ws session", func(context.Context) { e.serve(s) }); err != nil {
				a.Conn.Close()
			}
		}
	}); err != nil {
		return err
	}
	return lc.Run()
}

// echo serves WebSocket sessions.
type echo struct {
	lc  *childproc.Lifecycle
	log *slog.Logger
	gen int
}

// session is one WebSocket connection between two frames.
type session struct {
	conn   net.Conn
	br     *bufio.Reader // may hold the start of the next frame
	echoed int64         // frames echoed, by every generation it was served by
}

// state is what a session carries to the next generation.
type state struct {
	Echoed int64 `json:"echoed"`
	// Pending are bytes read from the socket and not yet processed: the
	// next generation reads them before the socket.
	Pending []byte `json:"pending,omitempty"`
}

// resume makes a session of a connection handed over.
func resume(a childproc.Adopted) (*session, error) {
	var st state
	if err := json.Unmarshal(a.State, &st); err != nil {
		return nil, fmt.Errorf("state from generation %d: %w", a.From, err)
	}
	conn := a.Conn
	if len(st.Pending) > 0 {
		conn = &prefixed{Conn: a.Conn, pre: st.Pending}
	}
	return &session{conn: conn, br: bufio.NewReader(conn), echoed: st.Echoed}, nil
}

// serve echoes each data frame until the client closes, or, when the
// drain begins, hands the connection over between two frames.
func (e *echo) serve(s *session) {
	w := newWaker(s.conn, e.lc.Draining())
	defer w.stop()
	for {
		// Wait for the first byte of the next frame, or for the drain.
		if w.draining() {
			e.handOver(s)
			return
		}
		_, err := w.peek(s.br)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // the drain woke us, between two frames
		}
		if err != nil {
			s.conn.Close() // the client went away
			return
		}
		// A frame has begun: read it whole, whatever the drain does.
		f, err := readFrame(s.br)
		if err != nil {
			s.conn.Close()
			return
		}
		if f.Header.Masked {
			f = ws.UnmaskFrameInPlace(f)
		}
		switch op := f.Header.OpCode; {
		case op == ws.OpClose:
			ws.WriteFrame(s.conn, ws.NewCloseFrame(f.Payload))
			s.conn.Close()
			return
		case op == ws.OpPing:
			err = ws.WriteFrame(s.conn, ws.NewPongFrame(f.Payload))
		case op.IsData() || op == ws.OpContinuation:
			err = ws.WriteFrame(s.conn, ws.NewFrame(op, f.Header.Fin, f.Payload))
			s.echoed++
		}
		if err != nil {
			s.conn.Close()
			return
		}
	}
}

// handOver gives the session to the next generation; if there is none
// that takes it, it says goodbye with a close frame (1001, going away).
func (e *echo) handOver(s *session) {
	// What the reader holds comes first in the stream, then what it has
	// not pulled from an earlier generation's pending bytes yet.
	st := state{Echoed: s.echoed}
	if n := s.br.Buffered(); n > 0 {
		b, _ := s.br.Peek(n)
		st.Pending = append(st.Pending, b...)
	}
	if p, ok := s.conn.(*prefixed); ok {
		st.Pending = append(st.Pending, p.pre...)
	}
	blob, _ := json.Marshal(st)
	conn := s.conn
	if p, ok := conn.(*prefixed); ok {
		conn = p.Conn
	}
	err := e.lc.HandOver(kind, conn, blob)
	if err == nil {
		return
	}
	e.log.Info("wsecho: no hand-over; closing the connection", "err", err)
	if errors.Is(err, childproc.ErrHandOverRefused) || errors.Is(err, childproc.ErrHandOverUnavailable) {
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "server restarting")))
	}
	conn.Close()
}

// waker ends a wait for the next frame when the drain begins: a past read
// deadline, set only while the session waits between two frames, so that
// a frame already begun is read whole.
type waker struct {
	conn    net.Conn
	mu      sync.Mutex
	waiting bool
	drain   bool
	stopped chan struct{}
}

func newWaker(conn net.Conn, draining <-chan struct{}) *waker {
	w := &waker{conn: conn, stopped: make(chan struct{})}
	go func() {
		select {
		case <-draining:
		case <-w.stopped:
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.drain = true
		if w.waiting {
			w.conn.SetReadDeadline(time.Unix(1, 0))
		}
	}()
	return w
}

func (w *waker) draining() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.drain
}

// peek waits for a byte of the next frame.
func (w *waker) peek(br *bufio.Reader) ([]byte, error) {
	w.mu.Lock()
	if w.drain {
		w.mu.Unlock()
		return nil, os.ErrDeadlineExceeded
	}
	w.waiting = true
	w.mu.Unlock()
	b, err := br.Peek(1)
	w.mu.Lock()
	w.waiting = false
	w.conn.SetReadDeadline(time.Time{}) // the rest of a frame begun is read whole
	w.mu.Unlock()
	return b, err
}

func (w *waker) stop() { close(w.stopped) }

// prefixed reads pre before the connection: bytes an earlier generation
// had read and not processed.
type prefixed struct {
	net.Conn
	pre []byte
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// maxFrame bounds a frame's payload: the length is the peer's word.
const maxFrame = 64 << 10

// readFrame reads one frame whole, its payload at most maxFrame bytes.
func readFrame(r io.Reader) (ws.Frame, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length > maxFrame {
		return ws.Frame{}, fmt.Errorf("frame of %d bytes, more than %d", h.Length, maxFrame)
	}
	f := ws.Frame{Header: h, Payload: make([]byte, h.Length)}
	_, err = io.ReadFull(r, f.Payload)
	return f, err
}
