package handover

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults of RelayOptions.
const (
	// DefaultMaxInFlight bounds the connections a Relay holds or has sent
	// to the adopter without an answer yet. Each is a descriptor counted
	// against hitless's user (unix sockets count descriptors in flight
	// against the sender's RLIMIT_NOFILE), so the bound keeps a burst of
	// hand-overs from exhausting it, far below Go's raised soft limit.
	DefaultMaxInFlight = 1024
	// DefaultWait is how long a hand-over waits for room under
	// MaxInFlight before it is refused.
	DefaultWait = 5 * time.Second
)

// Timeouts of the relay's own reads and writes.
const (
	helloTimeout = time.Second     // a channel arrives with its hello already queued
	sendTimeout  = 2 * time.Second // an adopter that does not read its channel
)

// RelayOptions configure a Relay.
type RelayOptions struct {
	// MaxInFlight is the most connections between a draining generation
	// and the adopter at once: received by the relay and not yet answered
	// by the adopter. Default DefaultMaxInFlight. Past it, the relay stops
	// reading that generation's hand-overs until the adopter has answered
	// some: the connections wait in the old generation (a request their
	// clients send meanwhile waits in the kernel), and one that waits
	// longer than Wait is refused, so that the old generation serves it
	// and closes it after its next response.
	MaxInFlight int
	// Wait: see MaxInFlight. Default DefaultWait.
	Wait   time.Duration
	Logger *slog.Logger
}

// Counts are what happened to one generation's connections, or (Relay's
// Totals) to every generation's since hitless started.
type Counts struct {
	// Handed: connections the generation handed over, passed on to the
	// adopter.
	Handed int `json:"handed"`
	// Adopted: connections the generation took from an earlier one.
	Adopted int `json:"adopted"`
	// Refused: hand-overs the relay turned down (no adopter, no room):
	// the generation kept those connections, and closed them after a
	// response.
	Refused int `json:"refused"`
	// Lost: connections passed on to this generation that it never
	// adopted: it closed them, or exited with them queued.
	Lost int `json:"lost"`
	// Closed: connections the generation closed during its drain rather
	// than hand over (as it reported), ClosedIdle of them while idle, the
	// rest after a response.
	Closed     int `json:"closed"`
	ClosedIdle int `json:"closed_idle"`
}

func (c *Counts) add(d Counts) {
	c.Handed += d.Handed
	c.Adopted += d.Adopted
	c.Refused += d.Refused
	c.Lost += d.Lost
	c.Closed += d.Closed
	c.ClosedIdle += d.ClosedIdle
}

// A Relay is hitless's side of the protocol: it holds each generation's
// channel, answers their queries, and passes every connection a
// generation hands over to the adopter, the generation SetAdopter named
// (the serving one), if it adopts that kind; it counts what happens.
// Each channel has a goroutine of the Relay's that reads it; Detach and
// Close end them.
type Relay struct {
	opts RelayOptions
	log  *slog.Logger

	mu       sync.Mutex
	peers    map[int]*peer
	adopter  int
	inflight int
	pending  map[uint64]route
	lastID   uint64
	totals   Counts
	changed  chan struct{} // closed when room frees, the adopter changes, or the relay pauses
	paused   bool
	closed   bool
	readers  sync.WaitGroup
	stopRead chan struct{} // closed by Pause: readers return, channels kept
}

// peer is one generation's channel.
type peer struct {
	gen     int
	ch      *Conn
	version int
	kinds   []string
	counts  Counts
	gone    bool          // its channel ended or was closed
	done    chan struct{} // closed when its reader returned
}

// route is a connection passed on and not yet answered.
type route struct {
	src, dst int
}

// NewRelay returns a Relay with no channel.
func NewRelay(opts RelayOptions) *Relay {
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Wait <= 0 {
		opts.Wait = DefaultWait
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Relay{
		opts:     opts,
		log:      opts.Logger,
		peers:    make(map[int]*peer),
		pending:  make(map[uint64]route),
		changed:  make(chan struct{}),
		stopRead: make(chan struct{}),
	}
}

// fireLocked wakes every hand-over waiting for room or for the adopter.
func (r *Relay) fireLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Attach takes f, the channel generation gen sent with its notification,
// reads the hello queued on it, and starts reading it. f is not closed
// (the Relay holds a duplicate). A generation has one channel: a second
// is refused.
func (r *Relay) Attach(gen int, f *os.File) error {
	ch, err := FileConn(f)
	if err != nil {
		return err
	}
	ch.SetReadDeadline(time.Now().Add(helloTimeout))
	m, fds, err := ch.Recv()
	closeFDs(fds)
	ch.SetReadDeadline(time.Time{})
	if err == nil && m.Type != TypeHello {
		err = fmt.Errorf("handover: the channel begins with %q, not a hello", m.Type)
	}
	if err != nil {
		ch.Close()
		return fmt.Errorf("generation %d: %w", gen, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		ch.Close()
		return errors.New("handover: relay closed")
	}
	if old := r.peers[gen]; old != nil && !old.gone {
		ch.Close()
		return fmt.Errorf("handover: generation %d already has a channel; one channel per generation", gen)
	}
	p := &peer{gen: gen, ch: ch, version: m.Version, kinds: m.Kinds, done: make(chan struct{})}
	if old := r.peers[gen]; old != nil {
		p.counts = old.counts
	}
	r.peers[gen] = p
	r.log.Info("handover: generation takes part", "generation", gen, "version", m.Version, "adopts", m.Kinds)
	if !r.paused {
		r.startLocked(p)
	} else {
		close(p.done)
	}
	r.fireLocked()
	return nil
}

func (r *Relay) startLocked(p *peer) {
	p.done = make(chan struct{})
	r.readers.Add(1)
	go func() {
		defer r.readers.Done()
		defer close(p.done)
		r.read(p)
	}()
}

// SetAdopter names the generation that takes connections from now on: the
// one that serves; 0 for none (while hitless stops, or nothing serves).
func (r *Relay) SetAdopter(gen int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.adopter != gen {
		r.adopter = gen
		r.fireLocked()
	}
}

// Counts returns generation gen's counts; ok is false when it has no
// channel (it does not take part).
func (r *Relay) Counts(gen int) (c Counts, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.peers[gen]
	if p == nil {
		return Counts{}, false
	}
	return p.counts, true
}

// Totals returns the counts of every generation since hitless started,
// those that exited included.
func (r *Relay) Totals() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.totals
}

// InFlight returns how many connections are between a generation and the
// adopter.
func (r *Relay) InFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inflight
}

// Detach closes generation gen's channel (it exited) and forgets it; the
// connections passed on to it and not answered count as lost, since the
// kernel closed them with its end of the channel.
func (r *Relay) Detach(gen int) {
	r.mu.Lock()
	p := r.peers[gen]
	if p == nil {
		r.mu.Unlock()
		return
	}
	r.goneLocked(p)
	delete(r.peers, gen)
	r.mu.Unlock()
	<-p.done
}

// goneLocked marks p's channel ended: closed, its reader told to stop,
// and what was passed on to it lost.
func (r *Relay) goneLocked(p *peer) {
	if p.gone {
		return
	}
	p.gone = true
	if p.ch != nil {
		p.ch.Close()
	}
	lost := 0
	for id, rt := range r.pending {
		if rt.dst == p.gen {
			delete(r.pending, id)
			lost++
		}
	}
	if lost > 0 {
		r.inflight -= lost
		p.counts.Lost += lost
		r.totals.Lost += lost
		r.log.Warn("handover: generation's channel ended with connections queued; they are closed", "generation", p.gen, "connections", lost)
	}
	r.fireLocked()
}

// Close closes every channel and waits for the readers.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closed = true
	for _, p := range r.peers {
		r.goneLocked(p)
	}
	r.mu.Unlock()
	r.readers.Wait()
}

// read serves p's channel until it ends, or the relay pauses.
func (r *Relay) read(p *peer) {
	for {
		m, fds, err := p.ch.Recv()
		var rerr *RecordError
		switch {
		case errors.As(err, &rerr):
			r.log.Warn("handover: bad record ignored", "generation", p.gen, "err", err)
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			select {
			case <-r.stopRead:
				return // paused: the channel stays open for the next image
			default:
				continue
			}
		case err != nil:
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				r.log.Warn("handover: channel read", "generation", p.gen, "err", err)
			}
			r.mu.Lock()
			r.goneLocked(p)
			r.mu.Unlock()
			return
		}
		switch m.Type {
		case TypeHello:
			r.mu.Lock()
			p.kinds = m.Kinds
			r.mu.Unlock()
		case TypeQuery:
			r.answerQuery(p, m)
		case TypeConn, TypeConns:
			r.forward(p, m, fds)
		case TypeAdopted, TypeClosed:
			r.settle(p, m)
		case TypeReport:
			d := Counts{Closed: m.Closed, ClosedIdle: m.ClosedIdle}
			r.mu.Lock()
			p.counts.add(d)
			r.totals.add(d)
			r.mu.Unlock()
		default:
			r.log.Debug("handover: message of an unknown type ignored", "generation", p.gen, "type", m.Type)
		}
	}
}

// adopterLocked returns the generation that would take a connection of
// kind from src ("" for any kind), or nil and why none would.
func (r *Relay) adopterLocked(src *peer, kind string) (*peer, string) {
	dst := r.peers[r.adopter]
	switch {
	case r.paused:
		return nil, "hitless is upgrading itself"
	case r.adopter == 0 || dst == nil || dst.gone:
		return nil, "no serving generation adopts connections"
	case dst == src:
		return nil, "the sender is the serving generation"
	case kind != "" && !slices.Contains(dst.kinds, kind):
		return nil, fmt.Sprintf("generation %d does not adopt %q", dst.gen, kind)
	}
	return dst, ""
}

func (r *Relay) answerQuery(p *peer, m Message) {
	r.mu.Lock()
	a := Message{Version: p.version, Type: TypeAdopter, ID: m.ID}
	if dst, _ := r.adopterLocked(p, ""); dst != nil {
		a.Adopter, a.Kinds = dst.gen, slices.Clone(dst.kinds)
	}
	r.mu.Unlock()
	r.reply(p, a)
}

func (r *Relay) reply(p *peer, m Message) {
	p.ch.SetWriteDeadline(time.Now().Add(sendTimeout))
	if err := p.ch.Send(m); err != nil && !errors.Is(err, net.ErrClosed) {
		r.log.Warn("handover: reply", "generation", p.gen, "type", m.Type, "err", err)
	}
}

// forward passes the connections of m, a conn or conns record handed
// over by src with fds (one per connection), to the adopter, and answers
// src: taken, or refused (src keeps serving those). fds are closed here:
// the record sent on holds its own references.
func (r *Relay) forward(src *peer, m Message, fds []int) {
	defer closeFDs(fds)
	ids := m.IDs
	if m.Type == TypeConn {
		ids = []uint64{m.ID}
	}
	var refused []refusal
	refuseLocked := func(ids []uint64, reason string) {
		src.counts.Refused += len(ids)
		r.totals.Refused += len(ids)
		refused = append(refused, refusal{ids, reason})
		r.log.Debug("handover: refused", "generation", src.gen, "kind", m.Kind, "connections", len(ids), "reason", reason)
	}
	deadline := time.Now().Add(r.opts.Wait)
	r.mu.Lock()
	for len(ids) > 0 {
		dst, why := r.adopterLocked(src, m.Kind)
		if dst == nil {
			refuseLocked(ids, why)
			break
		}
		room := r.opts.MaxInFlight - r.inflight
		if room <= 0 {
			wait := time.Until(deadline)
			if wait <= 0 {
				refuseLocked(ids, fmt.Sprintf("%d connections in flight, the most (the adopter did not take any within %v)", r.inflight, r.opts.Wait))
				break
			}
			changed := r.changed
			r.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-changed:
			case <-t.C:
			}
			t.Stop()
			r.mu.Lock()
			continue
		}
		// As many as there is room for go on, under ids of the relay's.
		k := min(room, len(ids))
		routes := make([]uint64, k)
		for i := range routes {
			r.lastID++
			routes[i] = r.lastID
			r.pending[r.lastID] = route{src: src.gen, dst: dst.gen}
		}
		r.inflight += k
		r.mu.Unlock()

		n, err := r.pass(dst, src.gen, m, routes, fds[:k])

		r.mu.Lock()
		src.counts.Handed += n
		r.totals.Handed += n
		if n > 0 {
			// Answered at once: the rest may wait for room.
			r.mu.Unlock()
			r.answer(src, TypeTaken, ids[:n], "")
			r.mu.Lock()
		}
		if n < k {
			// Not passed on: the adopter never got those.
			for _, id := range routes[n:] {
				if _, ok := r.pending[id]; ok {
					delete(r.pending, id)
					r.inflight--
				}
			}
			r.fireLocked()
			refuseLocked(ids[n:k], fmt.Sprintf("passing it to generation %d: %v", dst.gen, err))
		}
		ids, fds = ids[k:], fds[k:]
	}
	r.mu.Unlock()
	for _, rf := range refused {
		r.answer(src, TypeRefused, rf.ids, rf.reason)
	}
}

type refusal struct {
	ids    []uint64
	reason string
}

// pass sends the connections fds, of kind m.Kind and handed over with
// m by generation from, to dst under ids: in one conns record when dst reads them and there
// is no state to carry, else one conn record each. It returns how many
// went (the first n), and why the rest did not.
func (r *Relay) pass(dst *peer, from int, m Message, ids []uint64, fds []int) (n int, err error) {
	dst.ch.SetWriteDeadline(time.Now().Add(sendTimeout))
	if dst.version >= BatchVersion && len(m.State) == 0 && len(fds) > 1 {
		err := dst.ch.Send(Message{Version: dst.version, Type: TypeConns, IDs: ids, Kind: m.Kind, From: from}, fds...)
		if err != nil {
			return 0, err
		}
		return len(fds), nil
	}
	for i, fd := range fds {
		if err := dst.ch.Send(Message{Version: dst.version, Type: TypeConn, ID: ids[i], Kind: m.Kind, State: m.State, From: from}, fd); err != nil {
			return i, err
		}
	}
	return len(fds), nil
}

// answer tells p what became of the connections ids it handed over (or
// was passed): in one record when p reads them, else one per id.
func (r *Relay) answer(p *peer, typ Type, ids []uint64, reason string) {
	if len(ids) == 0 {
		return
	}
	if p.version >= BatchVersion {
		for len(ids) > 0 {
			k := min(len(ids), MaxBatch)
			r.reply(p, Message{Version: p.version, Type: typ, IDs: ids[:k], Reason: reason})
			ids = ids[k:]
		}
		return
	}
	for _, id := range ids {
		r.reply(p, Message{Version: p.version, Type: typ, ID: id, Reason: reason})
	}
}

// settle records the adopter's answer for connections passed on to it.
func (r *Relay) settle(p *peer, m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range m.Answered() {
		rt, ok := r.pending[id]
		if !ok || rt.dst != p.gen {
			r.log.Warn("handover: answer for a connection not passed on to this generation ignored", "generation", p.gen, "id", id)
			continue
		}
		delete(r.pending, id)
		r.inflight--
		if m.Type == TypeAdopted {
			p.counts.Adopted++
			r.totals.Adopted++
			continue
		}
		p.counts.Lost++
		r.totals.Lost++
		r.log.Warn("handover: the adopter closed a connection", "generation", p.gen, "from", rt.src, "reason", m.Reason)
	}
	r.fireLocked()
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Pause stops every reader without closing its channel, for an upgrade
// of hitless: what the children send meanwhile waits in the channels.
// Hand-overs waiting for room are refused. Resume undoes it.
func (r *Relay) Pause() {
	r.mu.Lock()
	if r.paused {
		r.mu.Unlock()
		return
	}
	r.paused = true
	close(r.stopRead)
	past := time.Unix(1, 0)
	for _, p := range r.peers {
		if !p.gone {
			p.ch.SetReadDeadline(past)
		}
	}
	r.fireLocked()
	r.mu.Unlock()
	r.readers.Wait()
}

// Resume starts reading again, after Pause, or on a Relay that Import
// made.
func (r *Relay) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.paused {
		return
	}
	r.paused = false
	r.stopRead = make(chan struct{})
	for _, p := range r.peers {
		if !p.gone {
			p.ch.SetReadDeadline(time.Time{})
			r.startLocked(p)
		}
	}
	r.fireLocked()
}

// RelayState is a paused Relay, written down for the next image of
// hitless (its channels go with it as descriptors, see Channels).
type RelayState struct {
	Peers   []PeerState  `json:"peers"`
	Pending []RouteState `json:"pending,omitempty"`
	LastID  uint64       `json:"last_id"`
	Adopter int          `json:"adopter"`
	Totals  Counts       `json:"totals"`
}

// PeerState is one generation's channel, written down.
type PeerState struct {
	Gen     int      `json:"gen"`
	Version int      `json:"version"`
	Kinds   []string `json:"kinds,omitempty"`
	Counts  Counts   `json:"counts"`
	Gone    bool     `json:"gone,omitempty"` // its channel ended: nothing to carry
}

// RouteState is a connection passed on to Dst and not yet answered.
type RouteState struct {
	ID  uint64 `json:"id"`
	Src int    `json:"src"`
	Dst int    `json:"dst"`
}

// Export writes down a paused Relay. The channels to carry are Channels'.
func (r *Relay) Export() RelayState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := RelayState{LastID: r.lastID, Adopter: r.adopter, Totals: r.totals}
	for _, p := range r.peers {
		st.Peers = append(st.Peers, PeerState{Gen: p.gen, Version: p.version, Kinds: p.kinds, Counts: p.counts, Gone: p.gone})
	}
	slices.SortFunc(st.Peers, func(a, b PeerState) int { return a.Gen - b.Gen })
	for id, rt := range r.pending {
		st.Pending = append(st.Pending, RouteState{ID: id, Src: rt.src, Dst: rt.dst})
	}
	slices.SortFunc(st.Pending, func(a, b RouteState) int { return int(a.ID) - int(b.ID) })
	return st
}

// Channels returns the open channel of each generation, to carry across
// an exec.
func (r *Relay) Channels() map[int]syscall.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[int]syscall.Conn)
	for gen, p := range r.peers {
		if !p.gone {
			out[gen] = p.ch
		}
	}
	return out
}

// Import makes a paused Relay of what an earlier image exported, and of
// the channels it carried (channel(gen) returns each; nil when it is
// missing, which counts it gone). The files are not closed: the Relay
// holds duplicates. Resume starts it.
func Import(st RelayState, channel func(gen int) *os.File, opts RelayOptions) (*Relay, error) {
	r := NewRelay(opts)
	r.paused = true
	close(r.stopRead)
	r.lastID, r.adopter, r.totals = st.LastID, st.Adopter, st.Totals
	for _, ps := range st.Peers {
		p := &peer{gen: ps.Gen, version: ps.Version, kinds: ps.Kinds, counts: ps.Counts, gone: true, done: make(chan struct{})}
		close(p.done)
		if f := channel(ps.Gen); f != nil && !ps.Gone {
			ch, err := FileConn(f)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("handover: generation %d: %w", ps.Gen, err)
			}
			p.ch, p.gone = ch, false
		}
		r.peers[p.gen] = p
	}
	for _, rt := range st.Pending {
		r.pending[rt.ID] = route{src: rt.Src, dst: rt.Dst}
		r.inflight++
	}
	// What was passed on to a generation whose channel did not come
	// along is lost, as if it had exited.
	for _, p := range r.peers {
		if p.gone {
			p.gone = false
			p.ch = nil
			r.goneLocked(p)
		}
	}
	return r, nil
}
