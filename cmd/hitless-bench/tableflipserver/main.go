// Command tableflipserver is what scenario 11 of cmd/hitless-bench
// compares hitless's own upgrade with: an HTTP server that upgrades
// itself the way cloudflare/tableflip's README and http_example_test.go
// show, and nothing more. On SIGHUP, Upgrade starts the binary at
// os.Args[0] again as a child that inherits the listening socket; once
// that child is Ready (it writes its pid to -pid-file), Exit is closed
// here and this process shuts its server down and exits. The service
// goes on in a process with a new pid.
//
// Its only handler has the shape of the test server's (internal/e2e/
// testserver): POST /work?ms=N reads the body, waits N ms and answers
// 200 with "ok pid=P bytes=B", so that a client can tell which process
// answered.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

func main() {
	var (
		listenAddr = flag.String("listen", "localhost:8080", "`Address` to listen on")
		pidFile    = flag.String("pid-file", "", "`Path` to pid file")
	)
	flag.Parse()
	log.SetPrefix(fmt.Sprintf("%d ", os.Getpid()))

	upg, err := tableflip.New(tableflip.Options{
		PIDFile: *pidFile,
	})
	if err != nil {
		panic(err)
	}
	defer upg.Stop()

	// Do an upgrade on SIGHUP.
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		for range sig {
			err := upg.Upgrade()
			if err != nil {
				log.Println("Upgrade failed:", err)
			}
		}
	}()

	// Listen must be called before Ready.
	ln, err := upg.Listen("tcp", *listenAddr)
	if err != nil {
		log.Fatalln("Can't listen:", err)
	}

	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /work", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if ms, _ := strconv.Atoi(r.URL.Query().Get("ms")); ms > 0 {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		fmt.Fprintf(w, "ok pid=%d bytes=%d\n", pid, n)
	})
	server := http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	go func() {
		err := server.Serve(ln)
		if err != http.ErrServerClosed {
			log.Println("HTTP server:", err)
		}
	}()

	log.Printf("ready")
	if err := upg.Ready(); err != nil {
		panic(err)
	}
	<-upg.Exit()

	// Make sure to set a deadline on exiting the process after
	// upg.Exit() is closed. No new upgrades can be performed if the
	// parent doesn't exit.
	time.AfterFunc(30*time.Second, func() {
		log.Println("Graceful shutdown timed out")
		os.Exit(1)
	})

	// Wait for connections to drain.
	server.Shutdown(context.Background())
}
