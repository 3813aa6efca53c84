package childproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/internal/sdnotify"
)

// handoverClient is this process's end of its channel to hitless (see
// package internal/handover): it sends hellos, queries, connections and
// the report, and reads the answers and the connections adopted.
type handoverClient struct {
	log     *slog.Logger
	version int    // what this process writes
	notify  string // NOTIFY_SOCKET, where the channel goes

	mu      sync.Mutex
	ch      *handover.Conn // nil until open, and after it ended
	lastID  uint64
	waiting map[uint64]chan handover.Message
	ended   bool
	// onConn takes a connection handed to this generation; it answers
	// with ack, now or later.
	onConn func(m handover.Message, f *os.File)
	done   chan struct{} // the reader returned
}

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
	return &handoverClient{log: log, version: min(n, handover.Version), notify: notify, waiting: make(map[uint64]chan handover.Message)}
}

// open makes the channel, says hello with kinds, and sends hitless its
// end. onConn takes the connections handed to this generation.
func (c *handoverClient) open(kinds []string, onConn func(handover.Message, *os.File)) error {
	ch, peer, err := handover.Pair()
	if err != nil {
		return err
	}
	defer peer.Close()
	if err := ch.Send(handover.Message{Version: c.version, Type: handover.TypeHello, Kinds: kinds}, -1); err != nil {
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
		m, f, err := ch.Recv()
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
		case handover.TypeConn:
			c.onConn(m, f)
		case handover.TypeAdopter, handover.TypeTaken, handover.TypeRefused:
			c.mu.Lock()
			w := c.waiting[m.ID]
			delete(c.waiting, m.ID)
			c.mu.Unlock()
			if w != nil {
				w <- m
			}
		}
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
		close(w)
		delete(c.waiting, id)
	}
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
	c.waiting[m.ID] = w
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
		err = ch.Send(m, -1)
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
	if err := ch.Send(m, -1); err != nil {
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
// not be served here any more.
func (c *handoverClient) hand(kind string, sc syscall.Conn, state []byte) (taken, lost bool, reason string) {
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

// close ends the channel and waits for its reader.
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
}

// adoptedConn makes a connection of the descriptor hitless passed on.
func adoptedConn(f *os.File) (net.Conn, error) {
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return nc, nil
}
