package childproc_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/hitless/hitless/childproc"
)

// The dozen-line server: inherited socket (or its own when run by hand),
// readiness, and an ordered drain on SIGTERM.
func Example() {
	run := func(handler http.Handler, db io.Closer) error {
		socks, err := childproc.Inherit()
		if err != nil {
			return err
		}
		ln, err := socks.Listen("tcp", ":8080")
		if err != nil {
			return err // under a supervisor: lists what was inherited
		}
		lc := childproc.New(childproc.Options{})
		lc.ServeHTTP(&http.Server{Handler: handler}, ln)
		lc.AddCloser("db", func(context.Context) error { return db.Close() })
		return lc.Run()
	}
	_ = run // in main: if err := run(mux, db); err != nil { log.Fatal(err) }
}

func ExampleInherit() {
	socks, err := childproc.Inherit()
	if err != nil {
		log.Fatal(err) // the variables were there, but wrong
	}
	defer socks.Close() // releases what nobody took
	fmt.Println("supervised:", socks.Supervised())
	// Output: supervised: false
}

func ExampleSockets_Listen() {
	socks, err := childproc.Inherit()
	if err != nil {
		log.Fatal(err)
	}
	// Not supervised here, so Listen binds the address itself; under
	// hitless or systemd it returns the inherited socket bound to it.
	ln, err := socks.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	fmt.Println(ln.Addr().Network())
	// Output: tcp
}

func ExampleReady() {
	// After a slow warm-up that Run does not know about; Run also sends
	// READY=1 once its servers are started.
	if err := childproc.Ready("cache warm, serving"); err != nil {
		log.Print(err)
	}
	fmt.Println("ok") // without NOTIFY_SOCKET, Ready does nothing
	// Output: ok
}

// A background writer owned by the lifecycle: it keeps running while
// requests finish, then sees its context cancelled, flushes and returns
// before the database closer runs.
func ExampleLifecycle_Go() {
	lc := childproc.New(childproc.Options{Logger: slog.New(slog.DiscardHandler)})
	queue := make(chan string, 16)
	lc.Go("writer", func(ctx context.Context) {
		for {
			select {
			case item := <-queue:
				fmt.Println("stored", item)
			case <-ctx.Done():
				for len(queue) > 0 {
					fmt.Println("stored", <-queue)
				}
				return
			}
		}
	})
	lc.AddCloser("db", func(context.Context) error { fmt.Println("db closed"); return nil })
	queue <- "order-1"
	lc.Stop() // as SIGTERM would
	if err := lc.Run(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// stored order-1
	// db closed
}

// A server that is not an http.Server and has a stop of its own: here, a
// consumer of a queue that finishes the message in hand when told to stop.
func ExampleLifecycle_Serve() {
	lc := childproc.New(childproc.Options{Logger: slog.New(slog.DiscardHandler)})
	quit := make(chan struct{})
	lc.Serve("consumer", func() error {
		<-quit // consume until told to stop
		return nil
	}, func(ctx context.Context) error {
		close(quit)
		return nil
	})
	lc.Stop() // as SIGTERM would; Run still starts, serves, then drains
	fmt.Println(lc.Run())
	// Output: <nil>
}

// A server that accepts on its listener itself, in the shape of gRPC's
// Serve and GracefulStop (examples/grpc has the real one): childproc
// closes the listener, then stops the server once it holds every
// connection it accepted.
func ExampleLifecycle_ServeListener() {
	lc := childproc.New(childproc.Options{Logger: slog.New(slog.DiscardHandler)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	gracefulStopped := make(chan struct{})
	serve := func(ln net.Listener) error { // like grpc.Server.Serve
		for {
			c, err := ln.Accept()
			if err != nil {
				return err // the drain closed the listener
			}
			c.Close()
		}
	}
	gracefulStop := func() { close(gracefulStopped) } // like GracefulStop
	lc.ServeListener("grpc", ln, serve, func(ctx context.Context) error {
		done := make(chan struct{})
		go func() { gracefulStop(); close(done) }()
		select {
		case <-done:
			return nil
		case <-ctx.Done(): // the drain's deadline: force it (gs.Stop())
			return ctx.Err()
		}
	})
	lc.Stop()
	fmt.Println(lc.Run())
	// Output: <nil>
}

func ExampleOptions() {
	// An einhorn-style worker drains on SIGUSR2; its supervisor kills
	// after 60s, so drain within 50.
	lc := childproc.New(childproc.Options{
		Signals:      []os.Signal{syscall.SIGUSR2},
		DrainTimeout: 50 * time.Second,
		Logger:       slog.Default(),
	})
	_ = lc
}
