package childproc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/handover"
)

// DefaultAdoptTimeout is how long a connection handed to this generation
// under a name waits for Adopter.Accept.
const DefaultAdoptTimeout = 5 * time.Second

var (
	// ErrHandOverUnavailable is wrapped by HandOver's error when this
	// process has no hand-over channel: not run by hitless (or by one
	// too old), Options.DisableHandOver, or not Linux.
	ErrHandOverUnavailable = errors.New("childproc: connection hand-over unavailable")
	// ErrHandOverRefused is wrapped by HandOver's error when hitless did
	// not take the connection (no serving generation adopts that name, or
	// too many connections are in flight): it is still the caller's.
	ErrHandOverRefused = errors.New("childproc: connection hand-over refused")
)

// HandOver hands conn, a connection this generation serves itself (a
// hijacked WebSocket, an SSE stream, a raw TCP connection), to the next
// generation, through hitless, with state, the application's blob of at
// most 32 KiB that the next generation needs to carry on: a session, a
// sequence number, and any bytes already read from conn and not yet
// processed. The next generation takes it with Adopter(name).Accept.
//
// Call it at a boundary of the application's protocol (between two
// WebSocket frames), with no other goroutine reading or writing conn:
// nothing of conn's own state goes along but the socket and what the
// kernel holds of it. A nil error means the connection is the next
// generation's: conn is closed here, silently (the socket lives on in the
// other process). An error wrapping ErrHandOverRefused means it is still
// this process's, untouched: serve it, or close it as the protocol wants
// (a WebSocket close frame). An error wrapping ErrHandOverUnavailable
// means there is nobody to hand it to at all.
//
// conn must be a plain socket: a *net.TCPConn or *net.UnixConn, or a
// connection childproc's HTTP server hijacked. TLS connections cannot be
// handed over: their session state lives in this process.
func (l *Lifecycle) HandOver(name string, conn net.Conn, state []byte) error {
	if err := handover.CheckKind(handover.StreamKind(name)); err != nil {
		return fmt.Errorf("childproc: hand over %q: %w", name, err)
	}
	if len(state) > handover.MaxState {
		return fmt.Errorf("childproc: hand over %q: state of %d bytes is larger than %d", name, len(state), handover.MaxState)
	}
	var sc syscall.Conn
	switch c := conn.(type) {
	case *handConn:
		sc = c.raw
	case *net.TCPConn, *net.UnixConn:
		sc = c.(syscall.Conn)
	case *tls.Conn:
		return fmt.Errorf("childproc: hand over %q: a TLS connection cannot be handed over (its session lives in this process): %w", name, ErrHandOverRefused)
	default:
		return fmt.Errorf("childproc: hand over %q: a %T is not a plain socket (*net.TCPConn, *net.UnixConn): %w", name, conn, ErrHandOverRefused)
	}
	if !l.ho.usable() {
		return fmt.Errorf("childproc: hand over %q: %w", name, ErrHandOverUnavailable)
	}
	taken, lost, reason := l.ho.hand(handover.StreamKind(name), sc, state, false)
	switch {
	case taken:
		if hc, ok := conn.(*handConn); ok {
			hc.mu.Lock()
			hc.handed = true
			hc.mu.Unlock()
		}
		conn.Close()
		return nil
	case lost:
		conn.Close()
		return fmt.Errorf("childproc: hand over %q: %s; the connection was closed: %w", name, reason, ErrHandOverUnavailable)
	}
	return fmt.Errorf("childproc: hand over %q: %s: %w", name, reason, ErrHandOverRefused)
}

// Adopted is a connection an earlier generation handed over with
// HandOver.
type Adopted struct {
	Conn  net.Conn // a *net.TCPConn or *net.UnixConn
	State []byte   // as the earlier generation gave it
	From  int      // the generation it came from (HITLESS_GENERATION)
}

// An Adopter receives the connections handed over under one name. Get it
// from Lifecycle.Adopter.
type Adopter struct {
	l    *Lifecycle
	name string

	mu      sync.Mutex
	queue   []*adoptItem
	closed  bool
	changed broadcast
}

type adoptItem struct {
	id    uint64
	a     Adopted
	timer *time.Timer
}

// Adopter declares that this generation takes the connections handed
// over under name (see HandOver), and returns what they arrive on: call
// its Accept in a loop, as with a net.Listener, and serve each one, with
// Lifecycle.Go for instance. Declare it before Run, so that the
// generation before this one knows, when it drains, that this one takes
// them; one declared later is announced then. A connection that no
// Accept takes within Options.AdoptTimeout is closed.
//
// Calling it again with the same name returns the same Adopter.
func (l *Lifecycle) Adopter(name string) *Adopter {
	l.mu.Lock()
	if a := l.adopters[name]; a != nil {
		l.mu.Unlock()
		return a
	}
	a := &Adopter{l: l, name: name}
	if err := handover.CheckKind(handover.StreamKind(name)); err != nil {
		a.closed = true
		l.log.Error("childproc: adopter not declared", "name", name, "err", err)
	}
	l.adopters[name] = a
	announce := l.state == stateRunning
	l.mu.Unlock()
	if announce {
		l.ho.hello(l.kinds())
	}
	return a
}

// Accept waits for the next connection handed over under the Adopter's
// name. It fails with an error wrapping ErrClosed once the drain has
// begun (connections that arrive then go on to the next generation), or
// with ctx's error.
func (a *Adopter) Accept(ctx context.Context) (Adopted, error) {
	for {
		a.mu.Lock()
		if len(a.queue) > 0 {
			it := a.queue[0]
			a.queue = a.queue[1:]
			a.mu.Unlock()
			it.timer.Stop()
			a.l.ho.ack(it.id, true, "")
			return it.a, nil
		}
		if a.closed {
			a.mu.Unlock()
			return Adopted{}, fmt.Errorf("childproc: adopter %q: %w", a.name, ErrClosed)
		}
		ch := a.changed.wait()
		a.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Adopted{}, ctx.Err()
		}
	}
}

// push queues a connection for Accept; false once the Adopter is closed.
func (a *Adopter) push(id uint64, ad Adopted, timeout time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	it := &adoptItem{id: id, a: ad}
	it.timer = time.AfterFunc(timeout, func() {
		a.mu.Lock()
		i := slices.Index(a.queue, it)
		if i >= 0 {
			a.queue = slices.Delete(a.queue, i, i+1)
		}
		a.mu.Unlock()
		if i >= 0 {
			ad.Conn.Close()
			a.l.ho.ack(id, false, fmt.Sprintf("not adopted within %v", timeout))
			a.l.log.Warn("childproc: handed-over connection not adopted in time; closed", "name", a.name, "timeout", timeout)
		}
	})
	a.queue = append(a.queue, it)
	a.changed.fire()
	return true
}

// close ends Accept and returns what is queued.
func (a *Adopter) close() []*adoptItem {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	q := a.queue
	a.queue = nil
	a.changed.fire()
	for _, it := range q {
		it.timer.Stop()
	}
	return q
}

// kinds lists what this generation adopts: each HTTP server's listener it
// merges handed-over connections into, and each Adopter's name.
func (l *Lifecycle) kinds() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.servers {
		if s.http != nil && s.http.hl != nil {
			out = append(out, s.http.kind)
		}
	}
	for name, a := range l.adopters {
		if !a.closed {
			out = append(out, handover.StreamKind(name))
		}
	}
	slices.Sort(out)
	return out
}

// adoptConns takes the connections hitless passed on to this generation
// in one conn or conns record, one descriptor each: each goes into the
// Accept of the HTTP server whose listener it came from, or of the
// Adopter of its name. What nobody here serves any more (the drain
// began) goes on to the next generation, or is closed. The answers go
// back together: one record for the batch, from version 2 on.
func (l *Lifecycle) adoptConns(m handover.Message, fds []int) {
	ids := m.IDs
	if m.Type == handover.TypeConn {
		ids = []uint64{m.ID}
	}
	var adopted []uint64
	closed := map[string][]uint64{}
	for i, fd := range fds {
		switch ok, reason := l.adoptConn(m, ids[i], fd); {
		case ok:
			adopted = append(adopted, ids[i])
		case reason != "":
			closed[reason] = append(closed[reason], ids[i])
		}
	}
	l.ho.ackMany(adopted, true, "")
	for reason, ids := range closed {
		l.ho.ackMany(ids, false, reason)
	}
}

// adoptConn takes connection id of m, on descriptor fd: ok if it is
// adopted now; a reason if it was closed; neither if an Adopter queued
// it, and answers when Accept takes it, or at its timeout.
func (l *Lifecycle) adoptConn(m handover.Message, id uint64, fd int) (ok bool, reason string) {
	nc, err := adoptedConn(fd)
	if err != nil {
		return false, "not a connection: " + err.Error()
	}
	if name, isStream := strings.CutPrefix(m.Kind, "stream "); isStream {
		l.mu.Lock()
		a := l.adopters[name]
		l.mu.Unlock()
		if a != nil && a.push(id, Adopted{Conn: nc, State: m.State, From: m.From}, l.opts.AdoptTimeout) {
			return false, "" // answered when Accept takes it, or at its timeout
		}
		go handOnOrClose(l.ho, &l.closedIdle, m.Kind, nc, m.State)
		return true, ""
	}
	var h *httpServer
	l.mu.Lock()
	for _, s := range l.servers {
		if s.http != nil && s.http.hl != nil && s.http.kind == m.Kind {
			h = s.http
		}
	}
	l.mu.Unlock()
	if h == nil {
		nc.Close()
		return false, "no server here for " + m.Kind
	}
	hc, isHand := newHandConn(nc, h).(*handConn)
	if isHand && h.hl.adopt(hc) {
		return true, ""
	}
	go handOnOrClose(l.ho, &l.closedIdle, m.Kind, nc, nil)
	return true, ""
}

// handOnOrClose hands a connection that this generation took but will not
// serve (it drains) on to the next one, or closes it, counting it in
// closedIdle.
func handOnOrClose(ho *handoverClient, closedIdle *atomic.Int64, kind string, nc net.Conn, state []byte) {
	if sc, ok := nc.(syscall.Conn); ok && ho.usable() {
		if taken, _, _ := ho.hand(kind, sc, state, false); taken {
			nc.Close()
			return
		}
	}
	closedIdle.Add(1)
	nc.Close()
}

// openHandOver opens the channel to hitless, if it offered one, before
// READY=1: the hello names what this generation adopts.
func (l *Lifecycle) openHandOver() {
	if l.ho == nil {
		return
	}
	if err := l.ho.open(l.kinds(), l.adoptConns); err != nil {
		l.log.Warn("childproc: no connection hand-over", "err", err)
	}
}

// handOverQueryTimeout bounds the drain's question to hitless: without an
// answer, the drain goes on as if nobody adopted.
const handOverQueryTimeout = time.Second

// adoptedKinds, as the drain begins, asks hitless which generation
// serves (0: none) and which kinds it adopts: the connections of those
// kinds go to it.
func (l *Lifecycle) adoptedKinds() (adopter int, kinds []string) {
	if !l.ho.usable() {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), handOverQueryTimeout)
	defer cancel()
	gen, kinds, err := l.ho.query(ctx)
	switch {
	case err != nil:
		l.log.Warn("childproc: hand-over: no answer from hitless; connections will not be handed over", "err", err)
		return 0, nil
	case gen == 0:
		l.log.Info("childproc: no generation adopts connections; the drain closes them")
		return 0, nil
	}
	l.log.Info("childproc: connections go to the next generation", "generation", gen, "kinds", kinds)
	return gen, kinds
}

// closeAdopters stops the Adopters as the drain begins; what they hold
// goes on to the next generation, or is closed.
func (l *Lifecycle) closeAdopters() {
	l.mu.Lock()
	adopters := make([]*Adopter, 0, len(l.adopters))
	for _, a := range l.adopters {
		adopters = append(adopters, a)
	}
	l.mu.Unlock()
	for _, a := range adopters {
		for _, it := range a.close() {
			l.ho.ack(it.id, true, "")
			go handOnOrClose(l.ho, &l.closedIdle, handover.StreamKind(a.name), it.a.Conn, it.a.State)
		}
	}
}

// reportHandOver tells hitless, once the HTTP servers are shut down, how
// many connections this drain closed rather than handed over.
func (l *Lifecycle) reportHandOver(hs []*httpServer) {
	if !l.ho.usable() {
		return
	}
	closed := l.closedIdle.Load()
	for _, h := range hs {
		closed += h.closeSent.Load() + int64(h.http2Conns())
	}
	l.ho.report(int(closed), int(l.closedIdle.Load()))
}
