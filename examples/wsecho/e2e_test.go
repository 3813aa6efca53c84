package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hitless/hitless/examples/wsecho/load"
	"github.com/hitless/hitless/internal/harness"
)

// bins are the binaries the test runs: hitless (from the main module) and
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
	dir := t.TempDir()
	bins.hitless, bins.server = filepath.Join(dir, "hitless"), filepath.Join(dir, "wsecho")
	if err := harness.Build("../..", bins.hitless, "./cmd/hitless"); err != nil {
		t.Fatalf("building hitless: %v", err)
	}
	if err := harness.Build("", bins.server, "."); err != nil {
		t.Fatalf("building the example: %v", err)
	}
}

// TestReloadsKeepWebSockets is the WebSocket proof: echo clients, each
// sending a numbered message every 20 ms, across 5 reloads. Every
// connection is handed to each new generation between two frames, with
// what it had read: no client gets a close frame, no message is lost or
// out of order, and hitless counts every hand-over adopted.
func TestReloadsKeepWebSockets(t *testing.T) {
	build(t)
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	h := harness.Start(t, harness.Options{
		Hitless: bins.hitless,
		Args:    []string{"--listen", "ws=tcp://" + addr},
		Command: []string{bins.server, "-listen", addr},
	})
	const clients, reloads = 40, 5
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan load.Result, 1)
	connected := make(chan struct{})
	go func() {
		done <- load.Run(ctx, load.Options{URL: "ws://" + addr + "/ws", Clients: clients, Every: 20 * time.Millisecond,
			Connected: func() { close(connected) }})
	}()
	<-connected
	for range reloads {
		h.ReloadDrained()
	}
	st := h.WaitStatus(10*time.Second, func(s harness.Status) bool {
		return s.HandOver != nil && s.HandOver.Adopted >= clients*reloads
	})
	cancel()
	res := <-done
	t.Logf("%+v; hitless: %+v", res, *st.HandOver)
	if res.Connected != clients || res.Failed != 0 || res.CloseFrames != 0 || res.Lost != 0 || res.Echoed == 0 {
		t.Errorf("clients: %+v; want %d connected, none failed, no close frame, nothing lost", res, clients)
	}
	if hv := st.HandOver; hv == nil || hv.Adopted < clients*reloads || hv.Lost != 0 || hv.Refused != 0 {
		t.Errorf("hitless's hand-over counts %+v: want every connection adopted at each of %d reloads", st.HandOver, reloads)
	}
}
