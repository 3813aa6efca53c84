// Command grpc is a gRPC server (grpc-go) that reloads under hitless
// without failing an RPC: the echo service of echopb, a unary RPC and a
// server-streaming one, each reply naming the generation that answered,
// and gRPC's standard health service for probes.
//
//	hitless run --listen grpc=tcp://127.0.0.1:50051 -- ./grpc -listen 127.0.0.1:50051
//	hitless reload   # new generation on the same socket; the old one drains
//
// It uses childproc as a gRPC server should (docs/grpc.md says why each
// step):
//
//   - the listener is the inherited socket (childproc.Inherit, Listen),
//     or bound here when run by hand;
//   - READY=1 once the server is set up (Lifecycle.Run);
//   - the drain: the health service turns NOT_SERVING, endless streams
//     end at once with UNAVAILABLE and a resume point (their clients open
//     the next stream on the new generation), then GracefulStop, which
//     sends GOAWAY on every connection and waits for the RPCs in flight,
//     with childproc's ServeListener closing the listener first and
//     waiting until the server holds every connection it accepted. Close
//     to the drain deadline, streams still running end the same clean way,
//     and at the deadline Stop cuts what is left.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/hitless/hitless/childproc"
	"github.com/hitless/hitless/examples/grpc/echopb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:50051", "address to serve on: the inherited socket bound to it, or bound here when not supervised")
	drainTimeout := flag.Duration("drain-timeout", childproc.DefaultDrainTimeout, "overall drain deadline; keep it below the supervisor's (hitless's --drain-timeout)")
	flag.Parse()
	gen, _ := strconv.ParseInt(os.Getenv("HITLESS_GENERATION"), 10, 64)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid(), "generation", gen)
	if err := run(*listen, *drainTimeout, gen, log); err != nil {
		log.Error("grpc: exiting", "err", err)
		os.Exit(1)
	}
}

func run(addr string, drainTimeout time.Duration, gen int64, log *slog.Logger) error {
	socks, err := childproc.Inherit()
	if err != nil {
		return err
	}
	defer socks.Close()
	ln, err := socks.Listen("tcp", addr)
	if err != nil {
		return err
	}
	lc := childproc.New(childproc.Options{DrainTimeout: drainTimeout, Logger: log, ReadyStatus: "serving gRPC on " + ln.Addr().String()})

	ending := make(chan struct{}) // closed when the drain's deadline is near
	svc := &echoServer{origin: &echopb.Origin{Generation: gen, Pid: int32(os.Getpid())}, draining: lc.Draining(), ending: ending}
	gs := grpc.NewServer()
	echopb.RegisterEchoServer(gs, svc)
	hs, down := newDrainingHealth() // SERVING until the drain
	healthpb.RegisterHealthServer(gs, hs)

	// Probes see NOT_SERVING from the first moment of the drain, and
	// health watches end.
	lc.Go("health", func(ctx context.Context) {
		select {
		case <-lc.Draining():
			down()
		case <-ctx.Done():
		}
	})
	lc.ServeListener("grpc", ln, gs.Serve, func(ctx context.Context) error {
		return gracefulStop(ctx, gs, ending)
	})
	return lc.Run()
}

// gracefulStop is the stop of a gRPC server under childproc: GracefulStop
// (GOAWAY on every connection, then wait for the RPCs in flight), bounded
// by ctx, the drain's deadline. A little before it, ending is closed so
// that streams still running end with a status the client can act on;
// at the deadline Stop closes what is left.
func gracefulStop(ctx context.Context, gs *grpc.Server, ending chan<- struct{}) error {
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	var endSoon <-chan time.Time
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		t := time.NewTimer(left - min(max(left/10, 100*time.Millisecond), 3*time.Second))
		defer t.Stop()
		endSoon = t.C
	}
	select {
	case <-done:
		return nil
	case <-endSoon:
	case <-ctx.Done(): // a second signal cut the drain short
	}
	close(ending)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		gs.Stop()
		<-done
		return fmt.Errorf("RPCs still running at the drain deadline were cut: %w", context.Cause(ctx))
	}
}

type echoServer struct {
	echopb.UnimplementedEchoServer
	origin   *echopb.Origin
	draining <-chan struct{} // the drain has begun
	ending   <-chan struct{} // the drain's deadline is near
}

func (s *echoServer) Say(ctx context.Context, req *echopb.SayRequest) (*echopb.SayReply, error) {
	if req.DelayMs > 0 {
		t := time.NewTimer(time.Duration(req.DelayMs) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return &echopb.SayReply{Text: req.Text, Origin: s.origin}, nil
}

func (s *echoServer) Count(req *echopb.CountRequest, stream grpc.ServerStreamingServer[echopb.CountReply]) error {
	if req.Count < 0 || req.IntervalMs < 0 {
		return status.Errorf(codes.InvalidArgument, "count %d and interval_ms %d: want 0 or more", req.Count, req.IntervalMs)
	}
	endless := req.Count == 0
	// An endless stream is asked to move as soon as the drain begins; a
	// finite one is finished, unless the deadline comes first.
	leave := s.ending
	if endless {
		leave = s.draining
	}
	tick := time.NewTicker(max(time.Duration(req.IntervalMs)*time.Millisecond, time.Millisecond))
	defer tick.Stop()
	seq := req.From
	for i := 0; endless || i < int(req.Count); i++ {
		if i > 0 {
			select {
			case <-tick.C:
			case <-leave:
				stream.SetTrailer(metadata.Pairs(echopb.ResumeTrailer, strconv.FormatInt(seq, 10)))
				return status.Errorf(codes.Unavailable, "generation %d is draining: resume from %d on a new stream", s.origin.Generation, seq)
			case <-stream.Context().Done():
				return status.FromContextError(stream.Context().Err()).Err()
			}
		}
		if err := stream.Send(&echopb.CountReply{Seq: seq, Origin: s.origin}); err != nil {
			return err
		}
		seq++
	}
	return nil
}
