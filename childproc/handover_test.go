//go:build linux

package childproc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/internal/sdnotify"
)

// handFixture plays hitless for the hand-over: it holds a listening
// socket that every generation serves (each from a duplicate), reads the
// generations' notifications, and runs the real Relay between their
// channels.
type handFixture struct {
	t      *testing.T
	ln     net.Listener
	notify *sdnotify.Conn
	relay  *handover.Relay
	gens   chan int
	// version is the HITLESS_HANDOVER the generations get: this
	// build's, unless a test plays an older hitless.
	version int
}

func newHandFixture(t *testing.T, opts handover.RelayOptions) *handFixture {
	t.Helper()
	notify, err := sdnotify.Listen(filepath.Join(t.TempDir(), "notify.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f := &handFixture{t: t, ln: listenLocal(t), notify: notify, relay: handover.NewRelay(opts), gens: make(chan int, 8), version: handover.Version}
	done := make(chan struct{})
	go func() {
		defer close(done)
		next := 0
		for {
			m, files, err := notify.ReadFDs()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if _, ok := m.Get(handover.NotifyKey); ok && len(files) == 1 {
				next++
				if err := f.relay.Attach(next, files[0]); err != nil {
					t.Errorf("attach: %v", err)
				}
				f.gens <- next
			}
			for _, file := range files {
				file.Close()
			}
		}
	}()
	t.Cleanup(func() {
		notify.Close()
		<-done
		f.relay.Close()
		f.ln.Close()
	})
	return f
}

// gen is one generation: a Lifecycle serving the fixture's socket.
type gen struct {
	id   int
	lc   *Lifecycle
	rec  *logRecorder
	errc <-chan error
}

// start runs a generation named name whose handler answers with its
// name, unless h is given; more registers anything else before Run.
func (f *handFixture) start(name string, opts Options, h http.Handler, more func(*Lifecycle)) *gen {
	t := f.t
	t.Helper()
	t.Setenv(envNotifySocket, f.notify.Path())
	t.Setenv(handover.EnvVar, strconv.Itoa(f.version))
	logger, rec := newLogger(t)
	opts.Logger = logger
	lc := New(opts)
	ln := dupListener(t, f.ln)
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, name)
		})
	}
	lc.ServeHTTP(&http.Server{Handler: h}, ln)
	if more != nil {
		more(lc)
	}
	errc := make(chan error, 1)
	g := &gen{lc: lc, rec: rec, errc: errc}
	done := make(chan struct{})
	go func() {
		err := lc.Run()
		close(done)
		errc <- err
	}()
	if !opts.DisableHandOver {
		select {
		case g.id = <-f.gens:
		case <-time.After(testWait):
			t.Fatalf("generation %s sent no hand-over channel", name)
		}
	}
	rec.waitFor(t, "childproc: serving", testWait)
	t.Cleanup(func() { lc.Stop(); <-done })
	return g
}

func (g *gen) drain(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	g.lc.Stop()
	if err := waitErr(t, g.errc); err != nil {
		t.Fatalf("drain: %v", err)
	}
	return time.Since(start)
}

// client is one keep-alive connection, spoken to by hand.
type client struct {
	c  net.Conn
	br *bufio.Reader
}

func dialClient(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, br: bufio.NewReader(c)}
}

func (c *client) send(req string) error {
	_, err := io.WriteString(c.c, req)
	return err
}

// read reads a response; body is its text.
func (c *client) read() (resp *http.Response, body string, err error) {
	c.c.SetReadDeadline(time.Now().Add(testWait))
	resp, err = http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

func (c *client) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	if err := c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, body, err := c.read()
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp, body
}

func (f *handFixture) counts(gen int) handover.Counts {
	c, _ := f.relay.Counts(gen)
	return c
}

// Idle keep-alive connections move to the next generation: each one's
// next request, on the same connection, is answered there; none is closed,
// and the old generation is gone at once.
func TestHandOverIdleConnections(t *testing.T) {
	f := newHandFixture(t, handover.RelayOptions{})
	a := f.start("A", Options{}, nil, nil)
	clients := dialServed(t, f.ln.Addr().String(), 20, "A")
	b := f.start("B", Options{}, nil, nil)
	f.relay.SetAdopter(b.id)
	took := a.drain(t)
	t.Logf("generation A drained in %v", took)
	servedOnSame(t, clients, "B")
	// B's answers reach the relay on their own time: wait for them.
	waitUntil(t, func() bool { return f.counts(b.id).Adopted == 20 })
	if ca, cb := f.counts(a.id), f.counts(b.id); ca.Handed != 20 || cb.Adopted != 20 || ca.Closed != 0 || ca.Refused != 0 {
		t.Errorf("counts: A %+v, B %+v", ca, cb)
	}
	a.rec.waitFor(t, "handed_over=20", testWait)
	if took > 10*time.Second {
		t.Errorf("the drain waited %v: the connections did not leave by hand-over", took)
	}
}

// dialServed opens n keep-alive connections to addr, each with a request
// answered by generation name.
func dialServed(t *testing.T, addr string, n int, name string) []*client {
	t.Helper()
	var clients []*client
	for range n {
		c := dialClient(t, addr)
		if _, body := c.get(t, "/"); body != name {
			t.Fatalf("before the reload: %q, want %s", body, name)
		}
		clients = append(clients, c)
	}
	return clients
}

// servedOnSame checks that each client's next request is answered by
// generation name, on the same connection, which stays open.
func servedOnSame(t *testing.T, clients []*client, name string) {
	t.Helper()
	for i, c := range clients {
		resp, body := c.get(t, "/")
		if body != name || resp.Close {
			t.Errorf("client %d after the reload: %q close=%v, want %s on the same connection", i, body, resp.Close, name)
		}
	}
}

// Clients that send their next request at any moment around the
// hand-over, back and forth between two generations, never see an error.
func TestHandOverRacingRequests(t *testing.T) {
	f := newHandFixture(t, handover.RelayOptions{})
	addr := f.ln.Addr().String()
	var gens []*gen
	gens = append(gens, f.start("g1", Options{}, nil, nil))
	const workers = 16
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, workers)
	var mu sync.Mutex
	served := map[string]int{}
	for w := range workers {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			cl := &client{c: c, br: bufio.NewReader(c)}
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for ctx.Err() == nil {
				body := strings.Repeat("x", r.IntN(3000))
				req := fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				if err := cl.send(req); err != nil {
					errs <- err
					return
				}
				resp, who, err := cl.read()
				if err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
				if resp.Close {
					errs <- fmt.Errorf("worker %d: Connection: close from %s", w, who)
					return
				}
				mu.Lock()
				served[who]++
				mu.Unlock()
				time.Sleep(time.Duration(r.IntN(2000)) * time.Microsecond)
			}
		})
	}
	// Every worker's connection is open, and each generation has served
	// a few requests, before the next reload: each reload hands over
	// every connection.
	servedBy := func(name string, n int) {
		t.Helper()
		deadline := time.Now().Add(testWait)
		for {
			mu.Lock()
			got := served[name]
			mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s served %d requests, want %d", name, got, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	servedBy("g1", workers)
	const reloads = 10
	for i := 2; i <= reloads+1; i++ {
		name := fmt.Sprintf("g%d", i)
		next := f.start(name, Options{}, nil, nil)
		f.relay.SetAdopter(next.id)
		gens[len(gens)-1].drain(t)
		gens = append(gens, next)
		servedBy(name, workers)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tot := f.relay.Totals()
	t.Logf("served %v; relay totals %+v", served, tot)
	if tot.Closed != 0 || tot.Lost != 0 || tot.Handed != reloads*workers {
		t.Errorf("relay totals %+v: want %d handed, none closed or lost", tot, reloads*workers)
	}
}

// A connection is never handed over but at a request boundary: with part
// of a request read, or its response being written, it stays, and moves
// at its next boundary.
func TestHandOverWaitsForTheBoundary(t *testing.T) {
	f := newHandFixture(t, handover.RelayOptions{})
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	a := f.start("A", Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "A")
	}), nil)
	partial := dialClient(t, f.ln.Addr().String())
	partial.get(t, "/")
	slow := dialClient(t, f.ln.Addr().String())
	slow.get(t, "/")

	// A request half sent, and a response on its way.
	if err := partial.send("GET / HTTP/1.1\r\nHo"); err != nil {
		t.Fatal(err)
	}
	slow.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	b := f.start("B", Options{}, nil, nil)
	f.relay.SetAdopter(b.id)
	a.lc.Stop()
	a.rec.waitFor(t, "childproc: handing connections over", testWait)
	if got := f.counts(a.id).Handed; got != 0 {
		t.Fatalf("%d connections handed over in the middle of a request", got)
	}
	partial.send("st: x\r\n\r\n")
	for _, c := range []*client{partial, slow} {
		if c == slow {
			close(release)
		}
		resp, body, err := c.read()
		if err != nil || body != "A" || resp.Close {
			t.Fatalf("the request in progress: %q close=%v %v; want A's answer, keep-alive", body, resp != nil && resp.Close, err)
		}
		moves(t, c, "/")
	}
	if err := waitErr(t, a.errc); err != nil {
		t.Fatal(err)
	}
}

// Pipelined requests: while bytes of the next request are in the
// process, the connection cannot move. It is served from them, and moves
// at the next boundary that proves nothing is left.
func TestHandOverPipeliningWaits(t *testing.T) {
	f := newHandFixture(t, handover.RelayOptions{})
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	a := f.start("A", Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "A"+r.URL.Path)
	}), nil)
	c := dialClient(t, f.ln.Addr().String())
	c.get(t, "/")
	c.send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	b := f.start("B", Options{}, nil, nil)
	f.relay.SetAdopter(b.id)
	a.lc.Stop()
	a.rec.waitFor(t, "childproc: handing connections over", testWait)
	close(release)
	for _, want := range []string{"A/hold", "A/second"} {
		resp, body, err := c.read()
		if err != nil || body != want || resp.Close {
			t.Fatalf("pipelined response: %q %v, want %q, keep-alive", body, err, want)
		}
	}
	moves(t, c, "/third")
	if err := waitErr(t, a.errc); err != nil {
		t.Fatal(err)
	}
	if ca := f.counts(a.id); ca.Handed != 1 || ca.Closed != 0 {
		t.Errorf("A's counts %+v: want it handed over once the pipeline was served", ca)
	}
}

// A hijacked connection (a WebSocket) is not handed over by the drain:
// the application owns it, and the drain waits for its handler.
func TestHandOverLeavesHijackedConnections(t *testing.T) {
	f := newHandFixture(t, handover.RelayOptions{})
	a := f.start("A", Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		io.WriteString(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		for {
			line, err := rw.ReadString('\n')
			if err != nil || line == "bye\n" {
				return
			}
			rw.WriteString("A:" + line)
			rw.Flush()
		}
	}), nil)
	c := dialClient(t, f.ln.Addr().String())
	c.send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	if resp, _, err := c.read(); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	b := f.start("B", Options{}, nil, nil)
	f.relay.SetAdopter(b.id)
	a.lc.Stop()
	a.rec.waitFor(t, "2 lame duck", testWait)
	c.send("one\n")
	if line, err := c.br.ReadString('\n'); err != nil || line != "A:one\n" {
		t.Fatalf("the hijacked connection during the drain: %q %v", line, err)
	}
	c.send("bye\n")
	if err := waitErr(t, a.errc); err != nil {
		t.Fatal(err)
	}
	if got := f.counts(a.id).Handed; got != 0 {
		t.Errorf("%d handed over", got)
	}
}

// TLS connections stay (their session lives in the process), and so do
// those of a server that takes HTTP/2 with prior knowledge: served, and
// closed after a response.
func TestHandOverExcludesTLSAndH2C(t *testing.T) {
	srv := &http.Server{Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	var closed atomic.Int64
	h := newHTTPServer(srv, listenLocal(t), context.Background(), &handoverClient{}, &closed)
	if h.hl != nil {
		t.Error("a server that takes HTTP/2 with prior knowledge hands connections over")
	}
	h.ln.Close()

	f := newHandFixture(t, handover.RelayOptions{})
	ts := httptest.NewTLSServer(http.NotFoundHandler()) // borrow its certificate
	serverTLS := ts.TLS.Clone()
	ts.Close()
	tlsLn := listenLocal(t)
	a := f.start("A", Options{}, nil, func(lc *Lifecycle) {
		lc.ServeHTTP(&http.Server{
			Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "A-tls") }),
			TLSConfig: serverTLS,
		}, tlsLn)
	})
	tc, err := tls.Dial("tcp", tlsLn.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	c := &client{c: tc, br: bufio.NewReader(tc)}
	c.get(t, "/")
	b := f.start("B", Options{}, nil, nil)
	f.relay.SetAdopter(b.id)
	a.lc.Stop()
	a.rec.waitFor(t, "1 stop accepting", testWait)
	// Idle, it is not closed (past the quiet period of the lame duck):
	// its next request is answered, with Connection: close.
	a.rec.waitFor(t, "connections go to the next generation", testWait)
	time.Sleep(2 * DefaultLameDuckQuiet) // the old rule would have closed it by now
	resp, body := c.get(t, "/")
	if body != "A-tls" || !resp.Close {
		t.Errorf("TLS during the drain: %q close=%v, want A's answer with Connection: close", body, resp.Close)
	}
	if err := waitErr(t, a.errc); err != nil {
		t.Fatal(err)
	}
}

// Without a generation that adopts, nothing changes: the drain closes
// idle connections as it always did.
func TestHandOverWithoutAdopter(t *testing.T) {
	f := newHandFixture(t, handover.RelayOptions{})
	a := f.start("A", Options{LameDuckQuiet: time.Millisecond}, nil, nil)
	c := dialClient(t, f.ln.Addr().String())
	c.get(t, "/")
	a.drain(t)
	if _, err := c.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection after the drain: %v, want EOF", err)
	}
	a.rec.waitFor(t, "no generation adopts connections", testWait)
	waitUntil(t, func() bool { return f.counts(a.id).Closed > 0 }) // the report
	if ca := f.counts(a.id); ca.Handed != 0 || ca.Closed != 1 || ca.ClosedIdle != 1 {
		t.Errorf("counts %+v: want one connection closed while idle", ca)
	}
}

// What the relay refuses (here: past its cap, the adopter answering
// nothing) stays with the old generation, which closes it after its next
// response, never while idle.
func TestHandOverRefusedStays(t *testing.T) {
	f := newHandFixture(t, handover.RelayOptions{MaxInFlight: 1, Wait: 100 * time.Millisecond})
	a := f.start("A", Options{}, nil, nil)
	var clients []*client
	for range 3 {
		c := dialClient(t, f.ln.Addr().String())
		c.get(t, "/")
		clients = append(clients, c)
	}
	// An adopter that takes one connection and never answers for it.
	ch, peer, err := handover.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ch.Send(handover.Message{Version: 1, Type: handover.TypeHello, Kinds: []string{handover.HTTPKind("tcp", f.ln.Addr().String())}})
	if err := f.relay.Attach(99, peer); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	f.relay.SetAdopter(99)
	a.lc.Stop()
	waitUntil(t, func() bool { return f.counts(a.id).Refused == 2 })
	m, fds, err := ch.Recv()
	if err != nil || m.Type != handover.TypeConn || len(fds) != 1 {
		t.Fatalf("adopter: %+v %v", m, err)
	}
	fd := os.NewFile(uintptr(fds[0]), "handed")
	moved, _ := net.FileConn(fd)
	fd.Close()
	defer moved.Close()
	var stayed int
	for _, c := range clients {
		if c.c.LocalAddr().String() == moved.RemoteAddr().String() {
			continue // the fake adopter answers nothing
		}
		if err := c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		stayed++
		resp, body, err := c.read()
		if err != nil || body != "A" || !resp.Close {
			t.Errorf("a refused connection: %q %v; want A's answer with Connection: close", body, err)
		}
	}
	if stayed != 2 {
		t.Errorf("%d connections stayed, want 2", stayed)
	}
	if err := waitErr(t, a.errc); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return f.counts(a.id).Closed > 0 }) // the report
	if ca := f.counts(a.id); ca.Handed != 1 || ca.Refused != 2 || ca.Closed != 2 || ca.ClosedIdle != 0 {
		t.Errorf("A's counts %+v", ca)
	}
}

// The long-lived connection API: a stream handed over with its state is
// adopted by the next generation's Adopter; one nobody adopts in time is
// closed.
func TestHandOverStream(t *testing.T) {
	f := newHandFixture(t, handover.RelayOptions{})
	streams := make(chan net.Conn, 2)
	a := f.start("A", Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		streams <- c
	}), nil)
	cl := dialClient(t, f.ln.Addr().String())
	cl.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	conn := <-streams
	cl2 := dialClient(t, f.ln.Addr().String())
	cl2.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	conn2 := <-streams

	// Nobody adopts "echo" yet.
	if err := a.lc.HandOver("echo", conn, []byte("seq=1")); !errors.Is(err, ErrHandOverRefused) {
		t.Fatalf("HandOver with no adopter: %v", err)
	}
	var adopter *Adopter
	b := f.start("B", Options{AdoptTimeout: 100 * time.Millisecond}, nil, func(lc *Lifecycle) { adopter = lc.Adopter("echo") })
	f.relay.SetAdopter(b.id)
	if err := a.lc.HandOver("echo", conn, []byte("seq=1")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	ad, err := adopter.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(ad.State) != "seq=1" || ad.From != a.id {
		t.Errorf("adopted %q from %d", ad.State, ad.From)
	}
	io.WriteString(ad.Conn, "hello from B\n")
	if line, err := cl.br.ReadString('\n'); err != nil || line != "hello from B\n" {
		t.Errorf("client reads %q %v", line, err)
	}
	ad.Conn.Close()

	// A second one, never accepted: closed after AdoptTimeout.
	if err := a.lc.HandOver("echo", conn2, nil); err != nil {
		t.Fatal(err)
	}
	cl2.c.SetReadDeadline(time.Now().Add(testWait))
	if _, err := cl2.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("a stream nobody adopted: %v, want EOF", err)
	}
	waitUntil(t, func() bool { return f.counts(b.id).Lost == 1 })
	if cb := f.counts(b.id); cb.Adopted != 1 {
		t.Errorf("B's counts %+v", cb)
	}
	// TLS cannot go; nor can anything while hand-over is off.
	if err := a.lc.HandOver("echo", tls.Client(conn, &tls.Config{}), nil); !errors.Is(err, ErrHandOverRefused) {
		t.Errorf("a TLS connection: %v", err)
	}
	off := New(Options{DisableHandOver: true})
	_, s := net.Pipe()
	if err := off.HandOver("echo", s, nil); !errors.Is(err, ErrHandOverRefused) && !errors.Is(err, ErrHandOverUnavailable) {
		t.Errorf("hand-over off: %v", err)
	}
}

// moves checks that c's next requests go to generation B, on the same
// connection, with no "Connection: close". One more may still be
// answered by A: a request sent right after a response can race
// net/http's background read, which takes its first byte; then the
// connection is not at a proven boundary, and moves at the next one.
func moves(t *testing.T, c *client, path string) {
	t.Helper()
	for i := 0; ; i++ {
		resp, body := c.get(t, path)
		if resp.Close {
			t.Fatalf("%s: %q with Connection: close", path, body)
		}
		if body == "B" {
			return
		}
		if i == 1 {
			t.Fatalf("%s: %q twice, want B's answer", path, body)
		}
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A new childproc under an older hitless (HITLESS_HANDOVER=1) speaks
// version 1 only: one conn record per connection, answers by id. The
// fixture's Relay answers each generation in its hello's version; the
// records the generations write are checked on the way (version 1, and
// only the types version 1 has).
func TestHandOverUnderVersion1(t *testing.T) {
	f := newHandFixture(t, handover.RelayOptions{})
	f.version = 1
	a := f.startSpied("A")
	clients := dialServed(t, f.ln.Addr().String(), 20, "A")
	b := f.startSpied("B")
	f.relay.SetAdopter(b.id)
	a.drain(t)
	servedOnSame(t, clients, "B")
	waitUntil(t, func() bool { return f.counts(b.id).Adopted == 20 })
	if ca := f.counts(a.id); ca.Handed != 20 || ca.Refused != 0 || ca.Closed != 0 {
		t.Errorf("A's counts %+v", ca)
	}
}

// startSpied starts a generation whose channel passes through a spy
// that checks every record it writes is of f.version and of a type that
// version has, before the Relay reads it.
func (f *handFixture) startSpied(name string) *gen {
	t := f.t
	t.Helper()
	// The spy sits between the generation and the Relay: the fixture
	// attaches the spy's far end, and the spy copies records both ways.
	real := f.notify
	spyNotify, err := sdnotify.Listen(filepath.Join(t.TempDir(), "spy.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spyNotify.Close() })
	f.notify = spyNotify
	defer func() { f.notify = real }()
	go func() {
		m, files, err := spyNotify.ReadFDs()
		if err != nil || len(files) != 1 {
			t.Errorf("spy: no channel: %v", err)
			return
		}
		child, err := handover.FileConn(files[0])
		files[0].Close()
		if err != nil {
			t.Errorf("spy: %v", err)
			return
		}
		relaySide, relayPeer, err := handover.Pair()
		if err != nil {
			t.Errorf("spy: %v", err)
			return
		}
		t.Cleanup(func() { child.Close(); relaySide.Close() })
		copyRecords := func(from, to *handover.Conn, check bool) {
			for {
				m, fds, err := from.Recv()
				if err != nil {
					to.Close()
					return
				}
				if check && (m.Version != f.version || !m.Known() || m.IDs != nil) {
					t.Errorf("a generation under version %d wrote %+v", f.version, m)
				}
				to.Send(m, fds...)
				for _, fd := range fds {
					syscall.Close(fd)
				}
			}
		}
		// The hello first, so that the Relay's Attach finds it.
		go copyRecords(child, relaySide, true)
		go copyRecords(relaySide, child, false)
		sn, err := sdnotify.New(real.Path())
		if err == nil {
			v, _ := m.Get(handover.NotifyKey)
			err = sn.SendFDs([]int{int(relayPeer.Fd())}, handover.NotifyKey+"="+v)
		}
		relayPeer.Close()
		if err != nil {
			t.Errorf("spy: %v", err)
		}
	}()
	return f.start(name, Options{}, nil, nil)
}
