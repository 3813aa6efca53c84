package main

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// drainingHealth is gRPC's standard health service (grpc.health.v1, what
// Kubernetes' gRPC probes and grpc-go's client-side health checks ask)
// with a Watch that ends when the drain begins: it sends NOT_SERVING, then
// ends the stream with UNAVAILABLE, so that the watcher moves to the new
// generation. grpc-go's own Watch streams until the client leaves, and an
// open stream keeps GracefulStop waiting until the drain deadline.
//
// The statuses of this server change only at the drain (SERVING, then
// NOT_SERVING for every service), so Watch sends the status at its start
// and at the drain, nothing in between.
type drainingHealth struct {
	*health.Server
	down <-chan struct{} // closed once Shutdown set every status to NOT_SERVING
}

// newDrainingHealth returns the service, and the function to call when
// the drain begins.
func newDrainingHealth() (*drainingHealth, func()) {
	down := make(chan struct{})
	h := &drainingHealth{Server: health.NewServer(), down: down}
	return h, func() { h.Shutdown(); close(down) }
}

func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	send := func() error {
		st := healthpb.HealthCheckResponse_SERVICE_UNKNOWN
		if r, err := h.Check(stream.Context(), req); err == nil {
			st = r.Status
		}
		return stream.Send(&healthpb.HealthCheckResponse{Status: st})
	}
	if err := send(); err != nil {
		return err
	}
	select {
	case <-h.down:
		if err := send(); err != nil {
			return err
		}
		return status.Error(codes.Unavailable, "this server is draining: watch again, on a new connection")
	case <-stream.Context().Done():
		return status.FromContextError(context.Cause(stream.Context())).Err()
	}
}
