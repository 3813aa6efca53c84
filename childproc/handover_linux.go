package childproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/internal/sdnotify"
)

// handoverClient is this process's end of its channel to hitless (see
// package internal/handover): it sends hellos, queries, connections and
// the report, and reads the answers and the connections adopted.
//
// Connections without state (those of the HTTP servers, most of a drain)
// do not each make a round trip: hand queues them, and a sender
// goroutine sends what is queued, busy connections first, as batches of
// up to handover.MaxBatch in one record (one record each to a hitless
// that speaks version 1), with at most handMaxInFlight unanswered, while
// each caller waits for its own answer. hitless answers a batch at once
// too.
type handoverClient struct {
	log     *slog.Logger
	version int    // what this process writes
	notify  string // NOTIFY_SOCKET, where the channel goes

	mu      sync.Mutex
	ch      *handover.Conn // nil until open, and after it ended
	lastID  uint64
	waiting map[uint64]*waiter
	ended   bool
	// onConn takes the connections of a conn or conns record handed to
	// this generation, one descriptor per connection; it answers with
	// ack, now or later.
	onConn func(m handover.Message, fds []int)
	done   chan struct{} // the reader returned

	// The hand-overs queued for the sender: busy connections (their
	// clients are about to send again) go before idle ones.
	busy, idle []*handItem
	sending    bool // the sender goroutine runs
	sender     sync.WaitGroup
	inflight   int       // hand-overs sent, not answered
	room       broadcast // fired when inflight drops, or the channel ends
}

// waiter is a caller waiting for the answer about id.
type waiter struct {
	ch chan handover.Message // gets the answer; closed if the channel ends first
	// item is the queued hand-over this answers, nil for a call.
	item *handItem
}

// handItem is a connection queued for the sender.
type handItem struct {
	id   uint64
	kind string
	rc   syscall.RawConn
	w    *waiter
	sent bool // it left the queue in a record: only an answer tells its fate
}

// handMaxInFlight bounds the hand-overs a generation has sent and not
// had answered: a few batches, enough to keep hitless and the adopter
// busy, far under hitless's own cap (handover.DefaultMaxInFlight), so
// that a busy connection that comes to its boundary late does not queue
// behind thousands of idle ones.
const handMaxInFlight = 4 * handover.MaxBatch

// handoverFromEnv reads HITLESS_HANDOVER, and removes it from the
// environment as Inherit removes LISTEN_*: it returns nil when hitless
// does not offer the hand-over (another supervisor, an old hitless, none).
func handoverFromEnv(log *slog.Logger) *handoverClient {
	v, ok := os.LookupEnv(handover.EnvVar)
	os.Unsetenv(handover.EnvVar)
	notify := os.Getenv(envNotifySocket)
	if !ok || v == "" || notify == "" {
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < handover.MinVersion {
		log.Warn("childproc: "+handover.EnvVar+" not understood; connections will not be handed over", "value", v)
		return nil
	}
	return &handoverClient{log: log, version: min(n, handover.Version), notify: notify, waiting: make(map[uint64]*waiter)}
}

// open makes the channel, says hello with kinds, and sends hitless its
// end. onConn takes the connections handed to this generation.
func (c *handoverClient) open(kinds []string, onConn func(handover.Message, []int)) error {
	ch, peer, err := handover.Pair()
	if err != nil {
		return err
	}
	defer peer.Close()
	if err := ch.Send(handover.Message{Version: c.version, Type: handover.TypeHello, Kinds: kinds}); err != nil {
		ch.Close()
		return err
	}
	n, err := sdnotify.New(c.notify)
	if err == nil {
		err = n.SendFDs([]int{int(peer.Fd())}, handover.NotifyKey+"="+strconv.Itoa(c.version))
	}
	if err != nil {
		ch.Close()
		return fmt.Errorf("send the hand-over channel to %s: %w", c.notify, err)
	}
	c.mu.Lock()
	c.ch, c.onConn, c.done = ch, onConn, make(chan struct{})
	c.mu.Unlock()
	go c.read(ch)
	return nil
}

func (c *handoverClient) read(ch *handover.Conn) {
	defer close(c.done)
	for {
		m, fds, err := ch.Recv()
		var rerr *handover.RecordError
		if errors.As(err, &rerr) {
			c.log.Warn("childproc: hand-over: bad record ignored", "err", err)
			continue
		}
		if err != nil {
			c.end()
			return
		}
		switch m.Type {
		case handover.TypeConn, handover.TypeConns:
			c.onConn(m, fds)
		case handover.TypeAdopter, handover.TypeTaken, handover.TypeRefused:
			c.deliver(m)
		}
	}
}

// deliver gives each waiter named by answer m its answer.
func (c *handoverClient) deliver(m handover.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	freed := false
	for _, id := range m.Answered() {
		w := c.waiting[id]
		if w == nil || (w.item != nil && !w.item.sent) {
			continue // its caller gave up; or a broken peer answers for what it never got
		}
		delete(c.waiting, id)
		if w.item != nil {
			c.inflight--
			freed = true
		}
		w.ch <- m // buffered: never blocks
	}
	if freed {
		c.room.fire()
	}
}

// end marks the channel ended (hitless closed it, or went away): every
// waiter gets a zero Message.
func (c *handoverClient) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.ended = true
	if c.ch != nil {
		c.ch.Close()
	}
	for id, w := range c.waiting {
		close(w.ch)
		delete(c.waiting, id)
	}
	c.busy, c.idle = nil, nil
	c.room.fire()
}

func (c *handoverClient) usable() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch != nil && !c.ended
}

// call sends m (with sc's descriptor when sc is not nil) under a new id
// and waits for the answer; ok is false when the channel ended first.
func (c *handoverClient) call(ctx context.Context, m handover.Message, sc syscall.Conn) (handover.Message, bool, error) {
	if c == nil {
		return handover.Message{}, false, errors.New("no hand-over channel")
	}
	c.mu.Lock()
	if c.ch == nil || c.ended {
		c.mu.Unlock()
		return handover.Message{}, false, errors.New("no hand-over channel")
	}
	c.lastID++
	m.ID, m.Version = c.lastID, c.version
	w := make(chan handover.Message, 1)
	c.waiting[m.ID] = &waiter{ch: w}
	ch := c.ch
	c.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		// A record is queued whole or not at all: one that could not
		// go by the deadline was not sent.
		ch.SetWriteDeadline(dl)
	}
	var err error
	if sc != nil {
		err = ch.SendConn(m, sc)
	} else {
		err = ch.Send(m)
	}
	if err != nil {
		c.mu.Lock()
		delete(c.waiting, m.ID)
		c.mu.Unlock()
		return handover.Message{}, false, err
	}
	select {
	case a, ok := <-w:
		return a, ok, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, m.ID)
		c.mu.Unlock()
		return handover.Message{}, false, ctx.Err()
	}
}

// hello tells hitless the kinds this generation adopts now.
func (c *handoverClient) hello(kinds []string) {
	c.send(handover.Message{Type: handover.TypeHello, Kinds: kinds})
}

// report tells hitless what the drain closed rather than handed over.
func (c *handoverClient) report(closed, idle int) {
	c.send(handover.Message{Type: handover.TypeReport, Closed: closed, ClosedIdle: idle})
}

// ack answers hitless for connection id: adopted, or closed and why.
func (c *handoverClient) ack(id uint64, adopted bool, reason string) {
	m := handover.Message{Type: handover.TypeClosed, ID: id, Reason: reason}
	if adopted {
		m.Type = handover.TypeAdopted
	}
	c.send(m)
}

// ackMany answers for connections ids at once (adopted, or closed and
// why): in one record from version 2 on, else one each.
func (c *handoverClient) ackMany(ids []uint64, adopted bool, reason string) {
	typ := handover.TypeClosed
	if adopted {
		typ = handover.TypeAdopted
	}
	if c.version < handover.BatchVersion {
		for _, id := range ids {
			c.ack(id, adopted, reason)
		}
		return
	}
	for len(ids) > 0 {
		k := min(len(ids), handover.MaxBatch)
		c.send(handover.Message{Type: typ, IDs: ids[:k], Reason: reason})
		ids = ids[k:]
	}
}

func (c *handoverClient) send(m handover.Message) {
	if c == nil {
		return
	}
	c.mu.Lock()
	ch, ended := c.ch, c.ended
	c.mu.Unlock()
	if ch == nil || ended {
		return
	}
	m.Version = c.version
	ch.SetWriteDeadline(time.Now().Add(handTimeout)) // calls set their own
	if err := ch.Send(m); err != nil {
		c.log.Warn("childproc: hand-over: send", "type", m.Type, "err", err)
	}
}

// query asks hitless which generation would take connections now, and
// which kinds it adopts.
func (c *handoverClient) query(ctx context.Context) (adopter int, kinds []string, err error) {
	a, ok, err := c.call(ctx, handover.Message{Type: handover.TypeQuery}, nil)
	if err != nil {
		return 0, nil, err
	}
	if !ok {
		return 0, nil, errors.New("the hand-over channel ended")
	}
	return a.Adopter, a.Kinds, nil
}

// handTimeout bounds the wait for hitless's answer to a hand-over: a
// hitless that holds the channel but never reads it (an older image after
// a downgrade in place) must not hang the drain.
const handTimeout = 10 * time.Second

// hand sends the connection sc, of kind, with state, and waits for
// hitless's answer. taken: it is the next generation's now, close this
// copy. Otherwise keep serving it, unless lost: no answer came (the
// channel ended, or handTimeout passed), so it may have gone, and must
// not be served here any more. A connection without state is queued for
// the sender (see handoverClient), busy ones first; one with state goes
// in a record of its own.
func (c *handoverClient) hand(kind string, sc syscall.Conn, state []byte, busy bool) (taken, lost bool, reason string) {
	if state == nil {
		return c.handQueued(kind, sc, busy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), handTimeout)
	defer cancel()
	a, ok, err := c.call(ctx, handover.Message{Type: handover.TypeConn, Kind: kind, State: state}, sc)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return false, true, fmt.Sprintf("hitless did not answer within %v", handTimeout)
	case err != nil:
		return false, false, err.Error()
	case !ok:
		return false, true, "the hand-over channel ended before hitless answered"
	case a.Type == handover.TypeTaken:
		return true, false, ""
	}
	return false, false, a.Reason
}

// handQueued is hand for a connection without state: queued for the
// sender, and answered like a call.
func (c *handoverClient) handQueued(kind string, sc syscall.Conn, busy bool) (taken, lost bool, reason string) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, false, err.Error()
	}
	c.mu.Lock()
	if c.ch == nil || c.ended {
		c.mu.Unlock()
		return false, false, "no hand-over channel"
	}
	c.lastID++
	it := &handItem{id: c.lastID, kind: kind, rc: rc}
	it.w = &waiter{ch: make(chan handover.Message, 1), item: it}
	c.waiting[it.id] = it.w
	if busy {
		c.busy = append(c.busy, it)
	} else {
		c.idle = append(c.idle, it)
	}
	if !c.sending {
		c.sending = true
		c.sender.Go(c.sendQueued)
	}
	c.mu.Unlock()

	t := time.NewTimer(handTimeout)
	defer t.Stop()
	select {
	case a, ok := <-it.w.ch:
		switch {
		case ok && a.Type == handover.TypeTaken:
			return true, false, ""
		case ok:
			return false, false, a.Reason
		}
		c.mu.Lock()
		sent := it.sent
		c.mu.Unlock()
		if !sent {
			return false, false, "the hand-over channel ended"
		}
		return false, true, "the hand-over channel ended before hitless answered"
	case <-t.C:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting[it.id] == nil {
		// Answered as the timer fired.
		a, ok := <-it.w.ch
		if ok && a.Type == handover.TypeTaken {
			return true, false, ""
		}
		return false, !ok && it.sent, a.Reason
	}
	delete(c.waiting, it.id)
	if !it.sent {
		c.busy = slices.DeleteFunc(c.busy, func(x *handItem) bool { return x == it })
		c.idle = slices.DeleteFunc(c.idle, func(x *handItem) bool { return x == it })
		return false, false, fmt.Sprintf("not sent within %v", handTimeout)
	}
	c.inflight--
	c.room.fire()
	return false, true, fmt.Sprintf("hitless did not answer within %v", handTimeout)
}

// sendQueued sends the queued hand-overs, at most handMaxInFlight
// unanswered, until the queue is empty or the channel ends. hand starts
// it; it ends by itself, and close waits for it.
func (c *handoverClient) sendQueued() {
	for {
		c.mu.Lock()
		for c.inflight >= handMaxInFlight && !c.ended {
			room := c.room.wait()
			c.mu.Unlock()
			<-room
			c.mu.Lock()
		}
		if c.ended || len(c.busy)+len(c.idle) == 0 {
			c.sending = false
			c.mu.Unlock()
			return
		}
		most := handover.MaxBatch
		if c.version < handover.BatchVersion {
			most = 1
		}
		most = min(most, handMaxInFlight-c.inflight)
		batch := c.takeLocked(most)
		c.inflight += len(batch)
		ch := c.ch
		c.mu.Unlock()
		c.sendBatch(ch, batch)
	}
}

// takeLocked takes up to most queued hand-overs of one kind, busy ones
// first, and marks them sent.
func (c *handoverClient) takeLocked(most int) []*handItem {
	var batch []*handItem
	kind := ""
	take := func(q []*handItem) []*handItem {
		for len(q) > 0 && len(batch) < most && (kind == "" || q[0].kind == kind) {
			kind = q[0].kind
			q[0].sent = true
			batch = append(batch, q[0])
			q = q[1:]
		}
		return q
	}
	c.busy = take(c.busy)
	c.idle = take(c.idle)
	return batch
}

// sendBatch sends batch, of one kind, in one conns record (or a conn
// record, for one connection or to a hitless of version 1). What could
// not go is answered here as refused: it is still this process's.
func (c *handoverClient) sendBatch(ch *handover.Conn, batch []*handItem) {
	ch.SetWriteDeadline(time.Now().Add(handTimeout))
	failed := map[*handItem]string{}
	if len(batch) == 1 {
		m := handover.Message{Version: c.version, Type: handover.TypeConn, ID: batch[0].id, Kind: batch[0].kind}
		var serr error
		if err := batch[0].rc.Control(func(fd uintptr) { serr = ch.Send(m, int(fd)) }); err != nil {
			serr = err
		}
		if serr != nil {
			failed[batch[0]] = serr.Error()
		}
	} else {
		m := handover.Message{Version: c.version, Type: handover.TypeConns, Kind: batch[0].kind}
		rcs := make([]syscall.RawConn, len(batch))
		for i, it := range batch {
			m.IDs = append(m.IDs, it.id)
			rcs[i] = it.rc
		}
		skipped, err := ch.SendConns(m, rcs)
		for _, i := range skipped {
			failed[batch[i]] = "closed before it was sent"
		}
		if err != nil {
			for _, it := range batch {
				if _, ok := failed[it]; !ok {
					failed[it] = err.Error()
				}
			}
		}
	}
	if len(failed) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for it, why := range failed {
		if c.waiting[it.id] != it.w {
			continue // its caller gave up, or the channel ended
		}
		delete(c.waiting, it.id)
		c.inflight--
		it.w.ch <- handover.Message{Type: handover.TypeRefused, ID: it.id, Reason: "sending it to hitless: " + why}
	}
	c.room.fire()
}

// close ends the channel and waits for its reader and its sender (none
// starts once the channel ended).
func (c *handoverClient) close() {
	if c == nil {
		return
	}
	c.end()
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done != nil {
		<-done
	}
	c.sender.Wait()
}

// adoptedConn makes a connection of the descriptor hitless passed on,
// and closes fd.
func adoptedConn(fd int) (net.Conn, error) {
	// The socket comes in non-blocking mode (the flag belongs to the
	// socket, which every process that held it shares). net.FileConn
	// would put it in blocking mode (File.Fd) and back (on its
	// duplicate) anyway; in blocking mode first, os.NewFile does not
	// register the descriptor with the poller only for Close to take it
	// off again: a third less work for each connection adopted.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "handed connection")
	defer f.Close()
	return net.FileConn(f)
}
