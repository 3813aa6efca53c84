// Command grpcload sends gRPC load at the echo service of examples/grpc
// for a while and prints what the application saw, as one JSON object
// (load.Result) on stdout: the benchmark (cmd/hitless-bench, scenario 12)
// runs one per kind of client while it reloads the server under hitless.
//
//	grpcload -addr 127.0.0.1:50051 -unary 4 -duration 30s
//	grpcload -addr 127.0.0.1:50051 -streams 4 -stream-len 10 -stream-every 20ms -duration 30s
//
// It stops at -duration, or at SIGTERM or SIGINT, letting each RPC in
// flight finish; exit status 0 whatever it counted, 2 for bad flags, 1 if
// it could not run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hitless/hitless/examples/grpc/load"
)

func main() {
	var o load.Options
	flag.StringVar(&o.Addr, "addr", "127.0.0.1:50051", "the server's host:port")
	flag.IntVar(&o.Unary, "unary", 0, "unary workers, a long-lived channel each")
	flag.DurationVar(&o.UnaryDelay, "unary-delay", 0, "server time asked of each unary call")
	flag.IntVar(&o.Fresh, "fresh", 0, "unary workers that dial a new channel for every call")
	flag.IntVar(&o.Streams, "streams", 0, "workers opening finite server streams back to back")
	flag.IntVar(&o.StreamLen, "stream-len", 10, "messages per finite stream")
	flag.DurationVar(&o.StreamEvery, "stream-every", 0, "between messages of a stream (default 20ms)")
	flag.IntVar(&o.Watches, "watches", 0, "workers holding an endless stream each, resumed at each drain")
	flag.DurationVar(&o.Duration, "duration", 0, "how long the load runs (default 5m)")
	flag.DurationVar(&o.Timeout, "timeout", 0, "per call, and between messages of a stream (default 10s)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "grpcload: unexpected argument %q (flags only; see -h)\n", flag.Arg(0))
		os.Exit(2)
	}
	if o.Unary+o.Fresh+o.Streams+o.Watches == 0 {
		fmt.Fprintln(os.Stderr, "grpcload: no workers: give -unary, -fresh, -streams or -watches")
		os.Exit(2)
	}
	l, err := load.Start(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcload:", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sigs
		l.Cancel()
	}()
	r := l.Wait()
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "grpcload:", err)
		os.Exit(1)
	}
}
