package childproc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// events records what happened, in order, from any goroutine.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.list = append(e.list, s)
	e.mu.Unlock()
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// assertOrder checks that each of want occurred, in this order.
func (e *events) assertOrder(t *testing.T, want ...string) {
	t.Helper()
	got := e.get()
	last := -1
	for _, w := range want {
		i := slices.Index(got, w)
		if i < 0 {
			t.Fatalf("event %q missing; events: %q", w, got)
		}
		if i < last {
			t.Fatalf("event %q out of order; events: %q", w, got)
		}
		last = i
	}
}

func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// dupListener returns ln's socket through a descriptor of its own, as a
// supervisor gives each generation the same socket.
func dupListener(t *testing.T, ln net.Listener) net.Listener {
	t.Helper()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	dup, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return dup
}

// runAsync runs lc.Run and returns its result channel.
func runAsync(lc *Lifecycle) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- lc.Run() }()
	return errc
}

func waitErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(testWait):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestDrainOrder(t *testing.T) {
	notify := newNotifyListener(t)
	t.Setenv("NOTIFY_SOCKET", notify.path)
	logger, _ := newLogger(t)
	lc := New(Options{Logger: logger, DrainTimeout: 5 * time.Second, ReadyStatus: "serving"})
	var ev events

	ln := listenLocal(t)
	entered := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-lc.Draining()
		// The request context stays live while requests are answered.
		if r.Context().Err() != nil || lc.Context().Err() != nil {
			t.Error("contexts cancelled while a request was still being served")
		}
		ev.add("handler done")
		io.WriteString(w, "ok")
	})}
	lc.ServeHTTP(srv, ln)

	stopped := make(chan struct{})
	lc.Serve("generic", func() error {
		<-stopped
		ev.add("generic serve returned")
		return nil
	}, func(ctx context.Context) error {
		ev.add("generic stop")
		close(stopped)
		return nil
	})
	if err := lc.Go("worker", func(ctx context.Context) {
		<-ctx.Done()
		ev.add("task saw cancel")
	}); err != nil {
		t.Fatal(err)
	}
	lc.AddCloser("first", func(context.Context) error { ev.add("closer first"); return nil })
	lc.AddCloser("failing", func(context.Context) error { ev.add("closer failing"); return errors.New("boom") })
	lc.AddCloser("last", func(context.Context) error { ev.add("closer last"); return nil })

	errc := runAsync(lc)
	if got := notify.expect(t, "READY=1", testWait); got != "READY=1\nSTATUS=serving" {
		t.Errorf("ready payload %q", got)
	}
	respc := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err == nil {
			resp.Body.Close()
		}
		respc <- err
	}()
	<-entered
	lc.Stop()
	notify.expect(t, "STOPPING=1", testWait)
	if err := <-respc; err != nil {
		t.Errorf("request in flight at the drain: %v", err)
	}
	err := waitErr(t, errc)
	if err == nil || !strings.Contains(err.Error(), "boom") || errors.Is(err, ErrDrainIncomplete) {
		t.Fatalf("Run = %v, want the closer's error only", err)
	}
	ev.assertOrder(t, "handler done", "task saw cancel", "closer last", "closer failing", "closer first")
	ev.assertOrder(t, "generic stop", "task saw cancel")
	ev.assertOrder(t, "generic serve returned", "task saw cancel")
	if err := lc.Go("too late", func(context.Context) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Go after the drain = %v, want ErrClosed", err)
	}
}

func TestTaskStartedDuringDrain(t *testing.T) {
	logger, rec := newLogger(t)
	lc := New(Options{Logger: logger, DrainTimeout: 5 * time.Second})
	var ev events
	entered := make(chan struct{})
	ln := listenLocal(t)
	lc.ServeHTTP(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-lc.Draining()
		// The drain has begun, but this request is still being served:
		// work it hands off must still be tracked.
		err := lc.Go("late", func(ctx context.Context) {
			<-ctx.Done()
			ev.add("late task done")
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})}, ln)
	lc.AddCloser("db", func(context.Context) error { ev.add("closer db"); return nil })
	errc := runAsync(lc)
	rec.waitFor(t, "childproc: serving", testWait)

	respc := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Post("http://"+ln.Addr().String(), "text/plain", nil)
		if err != nil {
			t.Error(err)
			respc <- nil
			return
		}
		resp.Body.Close()
		respc <- resp
	}()
	<-entered
	lc.Stop()
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
	if resp := <-respc; resp == nil || resp.StatusCode != http.StatusAccepted || !resp.Close {
		t.Fatalf("in-flight request: %+v; want 202 with Connection: close", resp)
	}
	ev.assertOrder(t, "late task done", "closer db")
}

// TestLameDuckIdleKeepAlive: a keep-alive connection that goes idle just
// before the drain and then sends one more request gets it served, with
// "Connection: close", instead of a connection closed under it.
func TestLameDuckIdleKeepAlive(t *testing.T) {
	logger, rec := newLogger(t)
	// A long quiet period makes the test independent of timing: the lame
	// duck waits for this connection, and ends when it closes.
	lc := New(Options{Logger: logger, LameDuck: 20 * time.Second, LameDuckQuiet: 10 * time.Second})
	ln := listenLocal(t)
	lc.ServeHTTP(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}, ln)
	errc := runAsync(lc)
	rec.waitFor(t, "childproc: serving", testWait)

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	send := func() *http.Response {
		t.Helper()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request on the keep-alive connection: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := send(); resp.Close {
		t.Fatal("Connection: close before the drain")
	}
	start := time.Now()
	lc.Stop()
	rec.waitFor(t, "1 stop accepting", testWait)
	if resp := send(); !resp.Close || resp.StatusCode != http.StatusOK {
		t.Fatalf("request during the lame duck: status %d close=%v; want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("drain took %s: the lame duck did not end when the connection closed", took)
	}
}

// TestLameDuckHTTP2: HTTP/2 connections do not hold up the lame duck. It
// has no "Connection: close" to give them; Shutdown's GOAWAY is what tells
// them to leave, and it lets their streams in flight finish. A client that
// keeps its HTTP/2 connection busy moves to the next generation without a
// failed request, and the lame duck ends long before its bound.
func TestLameDuckHTTP2(t *testing.T) {
	t.Run("h2c", func(t *testing.T) { testLameDuckHTTP2(t, false) })
	t.Run("tls", func(t *testing.T) { testLameDuckHTTP2(t, true) })
}

func testLameDuckHTTP2(t *testing.T, useTLS bool) {
	logger, rec := newLogger(t)
	const lameDuck = 10 * time.Second
	lc := New(Options{Logger: logger, LameDuck: lameDuck, DrainTimeout: 2 * lameDuck})

	var serverProtos, clientProtos http.Protocols
	serverProtos.SetHTTP1(true)
	tr := &http.Transport{Protocols: &clientProtos}
	defer tr.CloseIdleConnections()
	var serverTLS *tls.Config
	scheme := "http"
	if useTLS {
		// Borrow httptest's certificate (for 127.0.0.1) and a client
		// configuration that trusts it.
		ts := httptest.NewTLSServer(http.NotFoundHandler())
		serverTLS = ts.TLS.Clone()
		tr.TLSClientConfig = ts.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		ts.Close()
		serverProtos.SetHTTP2(true)
		clientProtos.SetHTTP2(true)
		scheme = "https"
	} else {
		serverProtos.SetUnencryptedHTTP2(true)
		clientProtos.SetUnencryptedHTTP2(true) // prior knowledge
	}

	ln := listenLocal(t)
	// The next generation accepts from the same socket, through its own
	// descriptor, as under a supervisor.
	ln2 := dupListener(t, ln)
	defer ln2.Close()

	shutdown := make(chan struct{})
	slowEntered := make(chan struct{})
	srv := &http.Server{Protocols: &serverProtos, TLSConfig: serverTLS, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(slowEntered)
			<-shutdown // in flight when Shutdown sends GOAWAY
		}
		io.WriteString(w, "gen1")
	})}
	srv.RegisterOnShutdown(func() { close(shutdown) })
	lc.ServeHTTP(srv, ln)
	errc := runAsync(lc)
	rec.waitFor(t, "childproc: serving", testWait)

	client := &http.Client{Transport: tr, Timeout: testWait}
	get := func(path string) (string, error) {
		resp, err := client.Get(scheme + "://" + ln.Addr().String() + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2) {
			err = fmt.Errorf("%s %s", resp.Proto, resp.Status)
		}
		return string(body), err
	}
	// Only the first generation accepts yet: the client's one HTTP/2
	// connection is to it.
	if body, err := get("/"); err != nil || body != "gen1" {
		t.Fatalf("first request: %q, %v", body, err)
	}
	reachedGen2 := make(chan struct{})
	var once sync.Once
	srv2 := &http.Server{Protocols: &serverProtos, TLSConfig: serverTLS, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(reachedGen2) })
		io.WriteString(w, "gen2")
	})}
	if useTLS {
		go srv2.ServeTLS(ln2, "", "")
	} else {
		go srv2.Serve(ln2)
	}
	defer srv2.Close()

	// A stream in flight across the drain.
	slow := make(chan error, 1)
	go func() {
		body, err := get("/slow")
		if err == nil && body != "gen1" {
			err = fmt.Errorf("answered by %s", body)
		}
		slow <- err
	}()
	<-slowEntered

	// And a request every 20ms, well within LameDuckQuiet: the connection
	// is never quiet.
	stop := make(chan struct{})
	warm := make(chan struct{}) // closed after a few answers from generation 1
	var failures []error
	var served [2]int
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			switch body, err := get("/"); {
			case err != nil:
				failures = append(failures, err)
			case body == "gen1":
				if served[0]++; served[0] == 3 {
					close(warm)
				}
			case body == "gen2":
				served[1]++
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	<-warm

	lc.Stop()
	step2 := rec.waitFor(t, "step=2 lame duck", lameDuck+testWait)
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
	if err := <-slow; err != nil {
		t.Errorf("request in flight at the drain: %v", err)
	}
	select {
	case <-reachedGen2:
	case <-time.After(testWait):
		t.Error("the client never reached the next generation")
	}
	close(stop)
	<-clientDone
	t.Logf("periodic requests: %d answered by generation 1, %d by generation 2", served[0], served[1])
	for _, err := range failures {
		t.Errorf("request failed: %v", err)
	}

	m := regexp.MustCompile(`took=(\S+)`).FindStringSubmatch(step2)
	if m == nil {
		t.Fatalf("no duration in %q", step2)
	}
	took, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lame duck took %s with an HTTP/2 client (bound %s)", took, lameDuck)
	if took > 2*time.Second {
		t.Errorf("lame duck took %s: it waited for the HTTP/2 connection instead of leaving it to GOAWAY", took)
	}
	if !strings.Contains(step2, "http2_connections_left_to_goaway=1") {
		t.Errorf("step 2 did not count the HTTP/2 connection: %s", step2)
	}
}

// TestAcceptedUnreadConnection is the reason for the drain's order: a
// connection accepted before the drain whose request arrives after it. With
// the lame duck it is answered; with Shutdown straight away (the lame duck
// off) net/http drops it without a response. This pins the net/http
// behaviour the design works around: if a Go release fixes it, the
// second half fails and says so.
func TestAcceptedUnreadConnection(t *testing.T) {
	for _, lameDuck := range []bool{true, false} {
		t.Run(fmt.Sprintf("lameduck=%v", lameDuck), func(t *testing.T) {
			logger, rec := newLogger(t)
			opts := Options{Logger: logger, DrainTimeout: 5 * time.Second}
			if !lameDuck {
				opts.LameDuck = -1
			}
			lc := New(opts)
			ln := listenLocal(t)
			isNew := make(chan struct{}, 1)
			shutdown := make(chan struct{})
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
				ConnState: func(_ net.Conn, st http.ConnState) {
					if st == http.StateNew {
						isNew <- struct{}{}
					}
				},
			}
			srv.RegisterOnShutdown(func() { close(shutdown) })
			lc.ServeHTTP(srv, ln)
			errc := runAsync(lc)
			rec.waitFor(t, "childproc: serving", testWait)

			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			<-isNew // accepted, nothing read yet
			lc.Stop()
			if lameDuck {
				rec.waitFor(t, "1 stop accepting", testWait)
			} else {
				<-shutdown
			}
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
			resp, err := readResponse(c)
			if lameDuck {
				if err != nil || resp.StatusCode != http.StatusOK || !resp.Close {
					t.Errorf("with the lame duck: %v, %v; want 200 and Connection: close", resp, err)
				}
			} else if err == nil {
				t.Errorf("without the lame duck the request was answered (%d): net/http no longer drops it; revisit the drain order", resp.StatusCode)
			} else if !isConnDrop(err) {
				t.Errorf("without the lame duck: %v, want the connection dropped", err)
			}
			if err := waitErr(t, errc); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDeadlineCancelsRequestsAndCutsShort(t *testing.T) {
	logger, _ := newLogger(t)
	const timeout = 600 * time.Millisecond
	lc := New(Options{Logger: logger, DrainTimeout: timeout, RequestCancelMargin: 200 * time.Millisecond})
	release := make(chan struct{})
	defer close(release)
	lc.Go("stuck", func(context.Context) { <-release }) // ignores its context
	entered := make(chan struct{})
	causes := make(chan error, 1)
	ln := listenLocal(t)
	lc.ServeHTTP(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		causes <- context.Cause(r.Context())
		http.Error(w, "draining", http.StatusServiceUnavailable)
	})}, ln)
	closed := make(chan struct{})
	lc.AddCloser("db", func(context.Context) error { close(closed); return nil })
	errc := runAsync(lc)

	respc := make(chan *http.Response, 1)
	go func() {
		var resp *http.Response
		defer func() { respc <- resp }()
		for {
			var err error
			resp, err = http.Get("http://" + ln.Addr().String())
			if err == nil {
				resp.Body.Close()
				return
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Error(err)
				return
			}
		}
	}()
	<-entered
	start := time.Now()
	lc.Stop()
	if cause := <-causes; !errors.Is(cause, ErrDrainDeadline) {
		t.Errorf("request context cause %v, want ErrDrainDeadline", cause)
	}
	if took := time.Since(start); took >= timeout {
		t.Errorf("request context cancelled after %s, not before the %s deadline", took, timeout)
	}
	if resp := <-respc; resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("the handler's clean answer did not arrive: %+v", resp)
	}
	err := waitErr(t, errc)
	if !errors.Is(err, ErrDrainIncomplete) || !strings.Contains(err.Error(), `task "stuck"`) || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("Run = %v; want ErrDrainIncomplete naming the stuck task and the deadline", err)
	}
	select {
	case <-closed:
	default:
		t.Error("closers did not run after the deadline")
	}
}

func TestServerFailureStopsTheRest(t *testing.T) {
	logger, _ := newLogger(t)
	lc := New(Options{Logger: logger})
	ln := listenLocal(t)
	lc.ServeHTTP(&http.Server{}, ln)
	lc.Serve("broken", func() error { return errors.New("port exploded") }, func(context.Context) error { return nil })
	closed := false
	lc.AddCloser("db", func(context.Context) error { closed = true; return nil })
	err := waitErr(t, runAsync(lc))
	if err == nil || !strings.Contains(err.Error(), "broken: port exploded") {
		t.Fatalf("Run = %v, want the broken server's error", err)
	}
	if !closed {
		t.Error("closers did not run")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("the healthy server still accepts after Run returned")
	}
}

func TestHijackedConnectionWaited(t *testing.T) {
	logger, rec := newLogger(t)
	lc := New(Options{Logger: logger, DrainTimeout: 5 * time.Second})
	var ev events
	ln := listenLocal(t)
	goAway := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		<-goAway // what a WebSocket handler does when told to leave
		brw.WriteString("bye\n")
		brw.Flush()
		ev.add("hijacked handler done")
	})}
	srv.RegisterOnShutdown(func() { close(goAway) })
	lc.ServeHTTP(srv, ln)
	lc.AddCloser("db", func(context.Context) error { ev.add("closer"); return nil })
	errc := runAsync(lc)
	rec.waitFor(t, "childproc: serving", testWait)

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "101") {
		t.Fatalf("upgrade: %q, %v", line, err)
	}
	for { // rest of the 101 header
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	lc.Stop()
	if line, err := br.ReadString('\n'); err != nil || line != "bye\n" {
		t.Errorf("hijacked connection got %q, %v; want bye", line, err)
	}
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
	ev.assertOrder(t, "hijacked handler done", "closer")
}

// TestSecondSignalCutsShort sends real signals to a child process: the
// first starts the drain, the second cuts it short, and the child says
// what was still running.
func TestSecondSignalCutsShort(t *testing.T) {
	ln := listenLocal(t)
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	notify := newNotifyListener(t)
	var stderr strings.Builder
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=server", "CHILDPROC_TEST_SETPID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=http",
		"CHILDPROC_TEST_ADDR="+ln.Addr().String(), "CHILDPROC_TEST_STUCK=1", "CHILDPROC_TEST_DRAIN=60s", "NOTIFY_SOCKET="+notify.path)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	notify.expect(t, "READY=1", testWait)
	go func() {
		if resp, err := http.Get("http://" + ln.Addr().String() + "/block"); err == nil {
			resp.Body.Close()
		}
	}()
	notify.expect(t, "STATUS=blocked", testWait)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	notify.expect(t, "STOPPING=1", testWait)
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("exit took %s after the second signal", took)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("child exit: %v; want status 1\n%s", err, stderr.String())
	}
	out := stderr.String()
	for _, want := range []string{"second signal (terminated)", "request GET /block", `task \"stuck\"`} {
		if !strings.Contains(out, want) {
			t.Errorf("child output lacks %q:\n%s", want, out)
		}
	}
}

func TestAddServerAfterRunStarts(t *testing.T) {
	logger, rec := newLogger(t)
	lc := New(Options{Logger: logger})
	errc := runAsync(lc)
	rec.waitFor(t, "childproc: serving", testWait)
	ln := listenLocal(t)
	lc.ServeHTTP(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "late") })}, ln)
	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	lc.Stop()
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
	if err := lc.Run(); err == nil {
		t.Error("second Run succeeded")
	}
}
