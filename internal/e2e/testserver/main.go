// Command testserver is the child that the end-to-end tests run under
// hitless. It serves HTTP with childproc, reports what it inherited on
// GET /info, and misbehaves on demand: the behaviour of each start is
// read from -mode-file, so a test can make the next generation fail.
//
// Modes: serve (default), exit (exit 3 at start), hang (never ready),
// ignore-term (ready, but ignores SIGTERM), crash (ready, then says so on
// stderr and exits 4 after 200ms; crash:DURATION waits DURATION instead),
// unhealthy (serves, but its childproc health check fails, so it sends no
// watchdog pings; unhealthy:DURATION passes the check for DURATION after
// the start, then fails it), orphan (serve,
// after starting a grandchild that outlives its parent), notify-junk
// (sends malformed and oversized datagrams to NOTIFY_SOCKET, then serves),
// exit-loud (writes 32 KiB to stderr, then exits 1 at start), silent
// (serves and drains, but never sends READY=1), handover-v1 (serves, its
// childproc speaking version 1 of the hand-over protocol, as a childproc
// built before version 2 does).
//
// Endpoints: GET /info, POST /work?ms=N, GET /events?n=N&every=DURATION
// (server-sent events: N events, then the response ends), GET /hijack
// (a WebSocket-style hijacked connection that echoes each line it reads
// with "gen=G pid=P " in front; with ?goodbye=1 it writes "goodbye" and
// closes when the server shuts down).
//
// Run without a supervisor (for the benchmark's baseline and its naive
// stop-then-start restart), -addr binds the address itself; -h2c also
// serves HTTP/2 over cleartext (prior knowledge); -timing-file appends
// one line per start: "GEN PID MAIN_NS READY_NS", the Unix times in
// nanoseconds at which main began and at which the server was about to
// report READY=1. -no-handover turns childproc's hand-over of
// connections off; -tls serves HTTPS with a certificate made at start.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
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

// mainStart is taken before main runs: the child's own start-up time is
// measured from here.
var mainStart = time.Now()

var opt struct {
	addr          string
	h2c           bool
	timingFile    string
	lameDuckQuiet time.Duration
	noHandOver    bool
	tls           bool
}

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
	flag.DurationVar(&opt.lameDuckQuiet, "lame-duck-quiet", 0, "childproc LameDuckQuiet (0: its default)")
	flag.StringVar(&opt.addr, "addr", "", "when not supervised: bind this TCP address itself")
	flag.BoolVar(&opt.h2c, "h2c", false, "also serve HTTP/2 over cleartext (prior knowledge)")
	flag.StringVar(&opt.timingFile, "timing-file", "", "append \"GEN PID MAIN_NS READY_NS\" to this file at each start")
	flag.BoolVar(&opt.noHandOver, "no-handover", false, "turn childproc's hand-over of connections off")
	flag.BoolVar(&opt.tls, "tls", false, "serve HTTPS, with a self-signed certificate made at start")
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
	case "silent":
		// Serves and drains like "serve", but never says it is ready: a
		// server run with the wrong --ready.
		os.Unsetenv("NOTIFY_SOCKET")
	case "exit":
		return fmt.Errorf("mode exit: failing at start on purpose")
	case "exit-loud":
		// 32 KiB of stderr in one write, then exit 1.
		os.Stderr.WriteString(strings.Repeat(strings.Repeat("x", 127)+"\n", 256))
		return fmt.Errorf("mode exit-loud: failing at start on purpose")
	case "handover-v1":
		// childproc speaks the lower of its version and the one hitless
		// offers: offered 1, it is a childproc of version 1 on the wire.
		if _, ok := os.LookupEnv("HITLESS_HANDOVER"); ok {
			os.Setenv("HITLESS_HANDOVER", "1")
		}
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
	switch {
	case !socks.Supervised() && opt.addr != "":
		ln, err = socks.Listen("tcp", opt.addr)
	case name != "":
		ln, err = socks.Listener(name)
	default:
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
	if opt.tls {
		cert, err := selfSigned()
		if err != nil {
			return err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	if opt.h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	shutdown := make(chan struct{})
	srv.RegisterOnShutdown(func() { close(shutdown) })
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		every, _ := time.ParseDuration(r.URL.Query().Get("every"))
		n, every = max(n, 1), max(every, time.Millisecond)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := range n {
			if i > 0 {
				select {
				case <-t.C:
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "id: %d\ndata: gen=%s pid=%d\n\n", i, in.Generation, in.PID)
			if err := rc.Flush(); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /hijack", func(w http.ResponseWriter, r *http.Request) {
		goodbye := r.URL.Query().Get("goodbye") == "1"
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(brw.Reader)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		for {
			var bye <-chan struct{}
			if goodbye {
				bye = shutdown
			}
			select {
			case line, ok := <-lines:
				if !ok {
					return
				}
				fmt.Fprintf(conn, "gen=%s pid=%d %s\n", in.Generation, in.PID, line)
			case <-bye:
				io.WriteString(conn, "goodbye\n")
				return
			}
		}
	})

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
	case "notify-junk":
		// Malformed, oversized and binary datagrams first: hitless must
		// ignore them and still take the READY=1 that Run sends.
		for _, junk := range []string{
			"READY", "=1", "READY=1=2\x00\xff", "\xff\xfe\x00garbage\n\n\n",
			strings.Repeat("X", 1<<20), "STATUS=" + strings.Repeat("s", 60<<10),
		} {
			// Sent raw: childproc refuses to send what no receiver accepts.
			if err := sendRaw(os.Getenv("NOTIFY_SOCKET"), junk); err != nil {
				log.Info("notify-junk: send refused", "len", len(junk), "err", err)
			}
		}
	}
	if d, ok := strings.CutPrefix(mode, "crash"); ok {
		after := 200 * time.Millisecond
		if d, ok := strings.CutPrefix(d, ":"); ok {
			if after, err = time.ParseDuration(d); err != nil {
				return err
			}
		}
		go srv.Serve(ln)
		if err := childproc.Ready("about to crash"); err != nil {
			return err
		}
		time.Sleep(after)
		fmt.Fprintf(os.Stderr, "testserver: mode crash: exiting 4, %v after READY=1, on purpose\n", after)
		os.Exit(4)
	}
	var healthy func(context.Context) error
	if d, ok := strings.CutPrefix(mode, "unhealthy"); ok {
		var after time.Duration
		if d, ok := strings.CutPrefix(d, ":"); ok {
			if after, err = time.ParseDuration(d); err != nil {
				return err
			}
		}
		sick := mainStart.Add(after)
		healthy = func(context.Context) error {
			if time.Now().Before(sick) {
				return nil
			}
			return errors.New("mode unhealthy: failing the health check on purpose")
		}
	}
	lc := childproc.New(childproc.Options{Logger: log, LameDuck: lameDuck, LameDuckQuiet: opt.lameDuckQuiet, Healthy: healthy, DisableHandOver: opt.noHandOver})
	lc.ServeHTTP(srv, ln)
	if opt.timingFile != "" {
		f, err := os.OpenFile(opt.timingFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		// One write, so that lines of concurrent generations never mix.
		gen := in.Generation
		if gen == "" {
			gen = "0"
		}
		fmt.Fprintf(f, "%s %d %d %d\n", gen, in.PID, mainStart.UnixNano(), time.Now().UnixNano())
		f.Close()
	}
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

// sendRaw sends one datagram to the notify socket at path, whatever it
// holds.
func sendRaw(path, msg string) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}

// selfSigned makes a certificate for 127.0.0.1, for -tls.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "testserver"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
