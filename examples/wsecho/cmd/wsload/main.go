// Command wsload runs WebSocket echo clients against wsecho for a while
// and prints what happened to them as JSON (package load's Result): what
// hitless-bench reads, across a process boundary, since the main module
// does not depend on a WebSocket library.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hitless/hitless/examples/wsecho/load"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "wsecho's address")
	clients := flag.Int("clients", 100, "WebSocket connections")
	every := flag.Duration("every", 100*time.Millisecond, "between a client's messages")
	duration := flag.Duration("duration", 10*time.Second, "how long the clients run, at most (SIGINT or SIGTERM ends the run sooner)")
	signalConnected := flag.Bool("signal-connected", false, "write \"connected\" on a line of stderr once every client has dialled")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	o := load.Options{URL: "ws://" + *addr + "/ws", Clients: *clients, Every: *every}
	if *signalConnected {
		o.Connected = func() { fmt.Fprintln(os.Stderr, "connected") }
	}
	res := load.Run(ctx, o)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(1)
	}
}
