// Package load sends gRPC load at the echo service of examples/grpc and
// counts what the application sees, for the example's end-to-end test and
// for the benchmark (cmd/grpcload).
//
// The clients are plain grpc-go clients with no retry policy
// (grpc.WithDisableRetry): an RPC that fails is counted as failed, never
// sent again. gRPC's transparent retry, which every grpc-go client does
// and no option turns off, still resends an RPC that never reached a
// server's application (a stream refused by a GOAWAY it crossed); the load
// counts those apart (Result.TransparentRetries).
//
// Four kinds of worker, each a closed loop bounded by Options.Duration:
//
//   - unary: a long-lived channel each, calling Say;
//   - fresh: a new channel (so a new connection) for every Say, as a
//     short-lived CLI or a client behind a connection-per-request proxy;
//   - streams: finite Count streams back to back; one that the server ends
//     early with UNAVAILABLE and a resume point (as it drains) is followed
//     by a stream for the rest, from that point;
//   - watches: one endless Count stream each, which the server ends with
//     UNAVAILABLE and a resume point when it drains; the worker opens the
//     next one from there and checks that no number is skipped or repeated.
//
// A stream that ends any other way (a transport error: UNAVAILABLE without
// the resume point, or another code) is a failure.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hitless/hitless/examples/grpc/echopb"
	"github.com/hitless/hitless/internal/harness"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Options size the load.
type Options struct {
	Addr        string        // host:port of the server
	Unary       int           // unary workers, a long-lived channel each
	UnaryDelay  time.Duration // server time asked of each Say
	Fresh       int           // unary workers with a new channel per call
	Streams     int           // workers opening finite streams back to back
	StreamLen   int           // messages per finite stream (default 10)
	StreamEvery time.Duration // between messages (default 20ms)
	Watches     int           // workers holding an endless stream each
	WatchEvery  time.Duration // between messages of endless streams (default 20ms)
	Duration    time.Duration // bound on the whole load (default 5m)
	Timeout     time.Duration // per Say, and per message of a stream (default 10s)
}

func (o Options) withDefaults() Options {
	if o.StreamLen <= 0 {
		o.StreamLen = 10
	}
	if o.StreamEvery <= 0 {
		o.StreamEvery = 20 * time.Millisecond
	}
	if o.WatchEvery <= 0 {
		o.WatchEvery = 20 * time.Millisecond
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return o
}

// Result is what the load counted. Failures are keyed by gRPC code, with
// the first message of each in Examples.
type Result struct {
	Unary       int64             `json:"unary"`        // Say calls answered
	UnaryFailed int64             `json:"unary_failed"` // Say calls that failed
	Fresh       int64             `json:"fresh"`        // of Unary: on a new channel
	FreshFailed int64             `json:"fresh_failed"` // of UnaryFailed: on a new channel
	UnaryP50    time.Duration     `json:"unary_p50_ns"`
	UnaryP99    time.Duration     `json:"unary_p99_ns"`
	Streams     int64             `json:"streams"`       // finite streams that got every message and ended OK
	Moved       int64             `json:"streams_moved"` // finite streams the server ended early, cleanly, and whose rest a new stream got
	StreamsFail int64             `json:"streams_failed"`
	StreamMsgs  int64             `json:"stream_messages"`
	Watches     int64             `json:"watches"`        // endless streams opened
	WatchMoves  int64             `json:"watch_moves"`    // ended by the server with a resume point
	WatchFailed int64             `json:"watch_failed"`   // ended any other way
	WatchMsgs   int64             `json:"watch_messages"` // messages received on endless streams
	WatchGaps   int64             `json:"watch_gaps"`     // numbers skipped or repeated across a move
	Retries     int64             `json:"transparent_retries"`
	Failures    map[string]int64  `json:"failures,omitempty"`
	Examples    map[string]string `json:"examples,omitempty"`
	Generations []int64           `json:"generations"` // that answered, in order of first answer
}

// Failed is every failure the application saw.
func (r Result) Failed() int64 { return r.UnaryFailed + r.StreamsFail + r.WatchFailed + r.WatchGaps }

func (r Result) String() string {
	s := fmt.Sprintf("unary %d ok, %d failed (fresh channel: %d ok, %d failed); streams %d complete, %d moved, %d failed (%d messages); "+
		"endless streams %d opened, %d moved, %d failed, %d gaps (%d messages); transparent retries %d; generations %v",
		r.Unary, r.UnaryFailed, r.Fresh, r.FreshFailed, r.Streams, r.Moved, r.StreamsFail, r.StreamMsgs,
		r.Watches, r.WatchMoves, r.WatchFailed, r.WatchGaps, r.WatchMsgs, r.Retries, r.Generations)
	for _, k := range slices.Sorted(maps.Keys(r.Failures)) {
		s += fmt.Sprintf("; %s %d (%s)", k, r.Failures[k], r.Examples[k])
	}
	return s
}

// Load is a running load. Stop ends it.
type Load struct {
	o      Options
	ctx    context.Context // done at Stop or at the Duration
	cancel context.CancelFunc
	wg     sync.WaitGroup

	unaryOK, streamsOK progress
	retries            atomic.Int64

	mu      sync.Mutex
	r       Result
	latency []time.Duration
	gens    map[int64]bool
}

// Start starts the load. The workers connect lazily: the first RPC of
// each dials.
func Start(o Options) (*Load, error) {
	o = o.withDefaults()
	if o.Addr == "" {
		return nil, errors.New("load: no address")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Duration)
	l := &Load{o: o, ctx: ctx, cancel: cancel, gens: map[int64]bool{}}
	var clients []*grpc.ClientConn
	dial := func() (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///"+o.Addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDisableRetry(),
			grpc.WithStatsHandler(retryCounter{&l.retries}))
	}
	for range o.Unary + o.Streams + o.Watches {
		cc, err := dial()
		if err != nil {
			for _, c := range clients {
				c.Close()
			}
			cancel()
			return nil, fmt.Errorf("load: %w", err)
		}
		clients = append(clients, cc)
	}
	run := func(cc *grpc.ClientConn, fn func(echopb.EchoClient)) {
		l.wg.Go(func() {
			if cc != nil {
				defer cc.Close()
			}
			fn(echopb.NewEchoClient(cc))
		})
	}
	next := func() *grpc.ClientConn { cc := clients[0]; clients = clients[1:]; return cc }
	for range o.Unary {
		run(next(), l.unary)
	}
	for range o.Fresh {
		l.wg.Go(func() { l.fresh(dial) })
	}
	for range o.Streams {
		run(next(), l.streams)
	}
	for range o.Watches {
		run(next(), l.watch)
	}
	return l, nil
}

// Stop ends the load and returns what was counted: Cancel, then Wait.
func (l *Load) Stop() Result {
	l.Cancel()
	return l.Wait()
}

// Cancel ends the load without waiting: each worker finishes the RPC in
// hand (an endless stream is cancelled, which is not counted as a
// failure).
func (l *Load) Cancel() { l.cancel() }

// Wait waits until the load has ended (its Duration passed, or Cancel)
// and returns what was counted.
func (l *Load) Wait() Result {
	l.wg.Wait()
	l.cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.r
	r.Retries = l.retries.Load()
	r.UnaryP50, r.UnaryP99 = harness.Percentile(l.latency, 50), harness.Percentile(l.latency, 99)
	return r
}

// Snapshot is what was counted so far.
func (l *Load) Snapshot() Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.r
	r.Retries = l.retries.Load()
	r.Generations = slices.Clone(r.Generations)
	return r
}

// WaitUnary waits until n more Say calls have been answered, for at most d.
func (l *Load) WaitUnary(n int64, d time.Duration) error {
	return l.unaryOK.wait(n, d, l.ctx.Done())
}

// WaitStreams waits until n more finite streams have completed, for at
// most d.
func (l *Load) WaitStreams(n int64, d time.Duration) error {
	return l.streamsOK.wait(n, d, l.ctx.Done())
}

func (l *Load) seen(o *echopb.Origin) {
	if o == nil || l.gens[o.Generation] {
		return
	}
	l.gens[o.Generation] = true
	l.r.Generations = append(l.r.Generations, o.Generation)
}

func (l *Load) fail(err error) {
	st := status.Convert(err)
	k := st.Code().String()
	if l.r.Failures == nil {
		l.r.Failures, l.r.Examples = map[string]int64{}, map[string]string{}
	}
	l.r.Failures[k]++
	if _, ok := l.r.Examples[k]; !ok {
		l.r.Examples[k] = st.Message()
	}
}

func (l *Load) say(c echopb.EchoClient, fresh bool) {
	ctx, cancel := context.WithTimeout(context.Background(), l.o.Timeout)
	defer cancel()
	start := time.Now()
	rep, err := c.Say(ctx, &echopb.SayRequest{Text: "hello", DelayMs: int32(l.o.UnaryDelay / time.Millisecond)})
	took := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.r.UnaryFailed++
		if fresh {
			l.r.FreshFailed++
		}
		l.fail(err)
		return
	}
	l.r.Unary++
	if fresh {
		l.r.Fresh++
	}
	l.latency = append(l.latency, took)
	l.seen(rep.Origin)
	l.unaryOK.add()
}

func (l *Load) unary(c echopb.EchoClient) {
	for l.ctx.Err() == nil {
		l.say(c, false)
	}
}

func (l *Load) fresh(dial func() (*grpc.ClientConn, error)) {
	for l.ctx.Err() == nil {
		cc, err := dial()
		if err != nil {
			l.mu.Lock()
			l.r.UnaryFailed++
			l.r.FreshFailed++
			l.fail(err)
			l.mu.Unlock()
			continue
		}
		l.say(echopb.NewEchoClient(cc), true)
		cc.Close()
	}
}

// count runs one Count stream from from, of count messages (0: endless),
// and returns the number received, the resume point if the server ended
// it early and cleanly (or -1), and any other error. ctx ends endless
// streams at Stop.
func (l *Load) count(ctx context.Context, c echopb.EchoClient, from int64, count int, every time.Duration, onMsg func(*echopb.CountReply)) (got int, resume int64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Each message must come within Timeout of the last.
	timer := time.AfterFunc(l.o.Timeout, cancel)
	defer timer.Stop()
	stream, err := c.Count(ctx, &echopb.CountRequest{From: from, Count: int32(count), IntervalMs: int32(every / time.Millisecond)})
	if err != nil {
		return 0, -1, err
	}
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return got, -1, nil
		}
		if err != nil {
			if status.Code(err) == codes.Unavailable {
				if v := stream.Trailer().Get(echopb.ResumeTrailer); len(v) == 1 {
					if n, perr := strconv.ParseInt(v[0], 10, 64); perr == nil {
						return got, n, nil
					}
				}
			}
			return got, -1, err
		}
		timer.Reset(l.o.Timeout)
		got++
		onMsg(m)
	}
}

func (l *Load) streams(c echopb.EchoClient) {
	for l.ctx.Err() == nil {
		moved, err := l.finite(c)
		l.mu.Lock()
		switch {
		case err != nil:
			l.r.StreamsFail++
			l.fail(err)
		case moved:
			l.r.Moved++
		default:
			l.r.Streams++
		}
		l.mu.Unlock()
		if err == nil {
			l.streamsOK.add()
		}
	}
}

// finite gets StreamLen messages, on as many streams as the server's
// drains make it take: moved says it took more than one.
func (l *Load) finite(c echopb.EchoClient) (moved bool, err error) {
	from, left := int64(0), l.o.StreamLen
	for {
		got, resume, err := l.count(context.Background(), c, from, left, l.o.StreamEvery, func(m *echopb.CountReply) {
			l.mu.Lock()
			l.r.StreamMsgs++
			l.seen(m.Origin)
			l.mu.Unlock()
		})
		if err != nil {
			return moved, err
		}
		left -= got
		from += int64(got)
		switch {
		case resume < 0 && left != 0:
			return moved, status.Errorf(codes.DataLoss, "a stream ended OK with %d of %d messages", l.o.StreamLen-left, l.o.StreamLen)
		case resume < 0:
			return moved, nil
		case resume != from:
			return moved, status.Errorf(codes.DataLoss, "told to resume from %d after message %d", resume, from-1)
		}
		moved = true
	}
}

func (l *Load) watch(c echopb.EchoClient) {
	next := int64(0)
	for l.ctx.Err() == nil {
		l.mu.Lock()
		l.r.Watches++
		l.mu.Unlock()
		_, resume, err := l.count(l.ctx, c, next, 0, l.o.WatchEvery, func(m *echopb.CountReply) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.r.WatchMsgs++
			l.seen(m.Origin)
			if m.Seq != next {
				l.r.WatchGaps++
			}
			next = m.Seq + 1
		})
		l.mu.Lock()
		switch {
		case err != nil && l.ctx.Err() != nil && (status.Code(err) == codes.Canceled || status.Code(err) == codes.DeadlineExceeded):
			// The load ended: Cancel, or its Duration.
		case err != nil:
			l.r.WatchFailed++
			l.fail(err)
		case resume >= 0:
			l.r.WatchMoves++
			if resume != next {
				l.r.WatchGaps++
				next = resume
			}
		default:
			l.r.WatchFailed++
			l.fail(status.Error(codes.DataLoss, "an endless stream ended OK"))
		}
		l.mu.Unlock()
	}
}

// retryCounter counts gRPC's transparent retries: attempts of an RPC
// that the library resent because no server had processed it.
type retryCounter struct{ n *atomic.Int64 }

func (r retryCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (r retryCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if b, ok := s.(*stats.Begin); ok && b.IsTransparentRetryAttempt {
		r.n.Add(1)
	}
}
func (r retryCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (r retryCounter) HandleConn(context.Context, stats.ConnStats)                       {}

// progress counts successes and wakes whoever waits for more.
type progress struct {
	mu      sync.Mutex
	n       int64
	waiters []waiter
}

type waiter struct {
	at      int64
	reached chan struct{}
}

func (p *progress) add() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	p.waiters = slices.DeleteFunc(p.waiters, func(w waiter) bool {
		if p.n < w.at {
			return false
		}
		close(w.reached)
		return true
	})
}

func (p *progress) wait(more int64, d time.Duration, stop <-chan struct{}) error {
	p.mu.Lock()
	w := waiter{at: p.n + more, reached: make(chan struct{})}
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.reached:
		return nil
	case <-t.C:
		return fmt.Errorf("%d more not within %v", more, d)
	case <-stop:
		return errors.New("the load ended first")
	}
}
