package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/examples/grpc/echopb"
	"github.com/hitless/hitless/examples/grpc/load"
	"github.com/hitless/hitless/internal/harness"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// bins are the binaries the tests run: hitless (from the main module) and
// this server, built once.
var bins struct{ hitless, server string }

func TestMain(m *testing.M) {
	os.Setenv("GORACE", harness.NoRaceExitSleep())
	os.Exit(m.Run())
}

func build(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end reloads take a while; run without -short")
	}
	if bins.hitless != "" {
		return
	}
	dir, err := os.MkdirTemp("", "grpc-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	hitless, server := filepath.Join(dir, "hitless"), filepath.Join(dir, "grpc")
	if err := harness.Build("../..", hitless, "./cmd/hitless"); err != nil {
		t.Fatalf("building hitless: %v", err)
	}
	if err := harness.Build("", server, "."); err != nil {
		t.Fatalf("building the example: %v", err)
	}
	bins.hitless, bins.server = hitless, server
}

// start runs the example under hitless on a free loopback port.
func start(t *testing.T, hitlessArgs []string, serverArgs ...string) *harness.Hitless {
	t.Helper()
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return harness.Start(t, harness.Options{
		Hitless: bins.hitless,
		Args:    append([]string{"--listen", "grpc=tcp://" + addr}, hitlessArgs...),
		Command: append([]string{bins.server, "-listen", addr}, serverArgs...),
	})
}

// TestReloadsUnderLoad is the gRPC proof: unary RPCs (on long-lived
// channels, on a new channel per call, fast and 50 ms) and server streams
// (finite ones back to back, and endless ones) across 20 reloads. No RPC
// fails, with no retry policy in the clients; every finite stream gets all
// its messages, on the stream it opened or, when the server ended it
// cleanly as it drained, on the one the client opened from the resume
// point; endless streams move to the new generation with no number lost
// or repeated; hitless stops with exit status 0.
func TestReloadsUnderLoad(t *testing.T) {
	build(t)
	h := start(t, nil)
	fast, err := load.Start(load.Options{Addr: h.Addr(), Unary: 4, Fresh: 2, Streams: 4, StreamLen: 10, StreamEvery: 20 * time.Millisecond, Watches: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Stop()
	slow, err := load.Start(load.Options{Addr: h.Addr(), Unary: 4, UnaryDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Stop()

	progress := func() {
		t.Helper()
		for _, err := range []error{fast.WaitUnary(300, 30*time.Second), fast.WaitStreams(4, 30*time.Second), slow.WaitUnary(20, 30*time.Second)} {
			if err != nil {
				t.Fatalf("load: %v", err)
			}
		}
	}
	progress()
	const reloads = 20
	for range reloads {
		h.Reload()
		progress()
	}
	f, s := fast.Stop(), slow.Stop()
	t.Logf("%d reloads; fast: %v", reloads, f)
	t.Logf("slow (50 ms): %v", s)
	if f.Failed() != 0 || s.Failed() != 0 {
		t.Errorf("the application saw failures: fast %d, slow %d", f.Failed(), s.Failed())
	}
	if f.Fresh == 0 || f.Streams+f.Moved == 0 || f.WatchMsgs == 0 {
		t.Errorf("some kind of client got nothing done: %v", f)
	}
	// Each drain moves every endless stream: 2 watchers, 20 drains.
	if f.WatchMoves < reloads*2 {
		t.Errorf("endless streams moved %d times, want at least %d (each drain ends them)", f.WatchMoves, reloads*2)
	}
	if !slices.Contains(f.Generations, reloads+1) {
		t.Errorf("no answer from the last generation (%d): %v", reloads+1, f.Generations)
	}
	h.Signal(syscall.SIGTERM)
	if code := h.Wait(60 * time.Second); code != 0 {
		t.Errorf("hitless exit status %d after SIGTERM, want 0", code)
	}
}

// A stream longer than the drain deadline is not cut: a little before the
// deadline the server ends it with UNAVAILABLE and the resume point, the
// client goes on from there on the new generation, and the old generation
// exits 0 well within hitless's own drain timeout (it is never killed).
// The health service says NOT_SERVING from the start of the drain.
func TestStreamLongerThanDrain(t *testing.T) {
	build(t)
	h := start(t, []string{"--drain-timeout", "20s"}, "-drain-timeout", "2s")
	cc, err := grpc.NewClient("passthrough:///"+h.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	health, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := health.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before the reload: %v, %v", st, err)
	}
	stream, err := echopb.NewEchoClient(cc).Count(ctx, &echopb.CountRequest{Count: 100, IntervalMs: 50}) // 5 s
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	m := h.Mark()
	reloaded := time.Now()
	h.Reload()
	if st, err := health.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health once the drain began: %v, %v; want NOT_SERVING", st, err)
	}
	if _, err := health.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("the health watch after NOT_SERVING: %v, want it ended with UNAVAILABLE", err)
	}
	got := 1
	for {
		_, err = stream.Recv()
		if err != nil {
			break
		}
		got++
	}
	ended := time.Since(reloaded)
	resume := stream.Trailer().Get(echopb.ResumeTrailer)
	t.Logf("stream of 100 × 50 ms ended after %d messages, %v after the reload: %v; trailer %s=%v", got, ended.Round(time.Millisecond), err, echopb.ResumeTrailer, resume)
	if len(resume) != 1 || resume[0] != strconv.Itoa(got) {
		t.Fatalf("the stream ended without a resume point: %v (trailer %v)", err, resume)
	}
	// Ended by the server, in time: Stop at the deadline would have cut
	// it with a transport error and no trailer, and the old generation's
	// drain would have ended incomplete, not with exit status 0 (below).
	// The rest, on a new stream: from the new generation.
	next, err := echopb.NewEchoClient(cc).Count(ctx, &echopb.CountRequest{From: int64(got), Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := next.Recv(); err != nil || rep.Seq != int64(got) || rep.Origin.Generation != first.Origin.Generation+1 {
		t.Errorf("the resumed stream: %v, %v; want seq %d from generation %d", rep, err, got, first.Origin.Generation+1)
	}
	_, r := h.WaitSince(m, 10*time.Second, harness.IsGen("drained", int(first.Origin.Generation)))
	if exit := r.Str("status"); exit != "exit status 0" {
		t.Errorf("the old generation ended with %q, want exit status 0: %v", exit, r)
	}
}
