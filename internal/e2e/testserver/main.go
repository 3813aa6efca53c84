// Command testserver is the child that the end-to-end tests run under
// hitless. It serves HTTP with childproc, reports what it inherited on
// GET /info, and misbehaves on demand: the behaviour of each start is
// read from -mode-file, so a test can make the next generation fail.
//
// Modes: serve (default), exit (exit 3 at start), hang (never ready),
// ignore-term (ready, but ignores SIGTERM), crash (ready, then exits 4),
// orphan (serve, after starting a grandchild that outlives its parent).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hitless/hitless/childproc"
)

type info struct {
	PID        int               `json:"pid"`
	PPID       int               `json:"ppid"`
	PGID       int               `json:"pgid"`
	Generation string            `json:"generation"`
	Env        map[string]string `json:"env"`
	Inode      uint64            `json:"inode"` // of fd 3, the first socket
	FDs        []string          `json:"fds"`   // open at start, with their targets
}

func main() {
	modeFile := flag.String("mode-file", "", "file holding this start's mode; missing means serve")
	name := flag.String("listener", "", "take the listener by this LISTEN_FDNAMES name (default: the first)")
	lameDuck := flag.Duration("lame-duck", 0, "childproc lame-duck window; negative turns it off")
	flag.Parse()
	mode := "serve"
	if *modeFile != "" {
		if b, err := os.ReadFile(*modeFile); err == nil {
			mode = strings.TrimSpace(string(b))
		}
	}
	in := snapshot()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", in.PID, "gen", in.Generation)
	if err := run(mode, *name, *lameDuck, in, log); err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
}

func run(mode, name string, lameDuck time.Duration, in info, log *slog.Logger) error {
	switch mode {
	case "exit":
		return fmt.Errorf("mode exit: failing at start on purpose")
	case "orphan":
		// A grandchild whose parent exits at once: it is re-parented to
		// hitless, the subreaper, which must reap it.
		p, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "sleep 0.2 & exit 0"}, &os.ProcAttr{})
		if err != nil {
			return err
		}
		p.Wait()
	}
	socks, err := childproc.Inherit()
	if err != nil {
		return err
	}
	var ln net.Listener
	if name != "" {
		ln, err = socks.Listener(name)
	} else {
		ln, err = socks.ListenerAt(0)
	}
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(in)
	})
	mux.HandleFunc("POST /work", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if ms, _ := strconv.Atoi(r.URL.Query().Get("ms")); ms > 0 {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		fmt.Fprintf(w, "ok gen=%s pid=%d bytes=%d\n", in.Generation, in.PID, n)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	switch mode {
	case "hang":
		// Holds the listener without accepting, as a server stuck in its
		// start-up would: the queue is shared, so the serving
		// generation keeps taking every connection.
		select {}
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		go srv.Serve(ln)
		if err := childproc.Ready("ignoring SIGTERM"); err != nil {
			return err
		}
		select {}
	case "crash":
		go srv.Serve(ln)
		if err := childproc.Ready("about to crash"); err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
		os.Exit(4)
	}
	lc := childproc.New(childproc.Options{Logger: log, LameDuck: lameDuck})
	lc.ServeHTTP(srv, ln)
	return lc.Run()
}

// snapshot records what the process inherited before childproc reads and
// unsets it.
func snapshot() info {
	in := info{PID: os.Getpid(), PPID: os.Getppid(), PGID: syscall.Getpgrp(), Env: map[string]string{}}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || strings.HasPrefix(k, "EINHORN_") || strings.HasPrefix(k, "SERVER_STARTER_") ||
			strings.HasPrefix(k, "HITLESS_") || k == "NOTIFY_SOCKET" || k == "WATCHDOG_USEC" || k == "E2E_MARK" {
			in.Env[k] = v
		}
	}
	in.Generation = in.Env["HITLESS_GENERATION"]
	var st syscall.Stat_t
	if syscall.Fstat(3, &st) == nil {
		in.Inode = st.Ino
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		in.FDs = append(in.FDs, e.Name()+" -> "+target)
	}
	return in
}
