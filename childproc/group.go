package childproc

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// broadcast wakes every waiter at once. Its owner's mutex guards it: wait
// returns a channel that fire closes.
type broadcast struct{ ch chan struct{} }

func (b *broadcast) wait() <-chan struct{} {
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) fire() {
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// taskGroup tracks named background goroutines. Unlike a sync.WaitGroup,
// adding after close is an ordinary error, never a panic or a race with
// Wait, which is what a request handler that starts a task while the
// process drains needs.
type taskGroup struct {
	mu      sync.Mutex
	closed  bool
	running map[*task]struct{}
	changed broadcast
}

type task struct {
	name  string
	start time.Time
}

func (g *taskGroup) add(name string) (*task, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, fmt.Errorf("childproc: task %q not started: %w", name, ErrClosed)
	}
	if g.running == nil {
		g.running = make(map[*task]struct{})
	}
	t := &task{name: name, start: time.Now()}
	g.running[t] = struct{}{}
	return t, nil
}

func (g *taskGroup) done(t *task) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.running, t)
	g.changed.fire()
}

// close refuses new tasks and reports how many are running.
func (g *taskGroup) close() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	return len(g.running)
}

// wait blocks until no task runs, or ctx is done; then it returns the
// tasks still running, oldest first.
func (g *taskGroup) wait(ctx context.Context) []string {
	for {
		g.mu.Lock()
		if len(g.running) == 0 {
			g.mu.Unlock()
			return nil
		}
		ch := g.changed.wait()
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return g.describe()
		}
	}
}

func (g *taskGroup) describe() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ts := make([]*task, 0, len(g.running))
	for t := range g.running {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *task) int { return a.start.Compare(b.start) })
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = fmt.Sprintf("task %q (running %s)", t.name, time.Since(t.start).Round(time.Millisecond))
	}
	return out
}

func joinList(list []string) string { return strings.Join(list, "; ") }
