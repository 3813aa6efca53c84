package childproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/harness"
)

// The test binary doubles as the child processes the tests supervise:
// with CHILDPROC_TEST_HELPER set, TestMain runs that helper instead of
// the tests. This gives real process boundaries (fds from 3, LISTEN_PID,
// signals) without a separate build.
const helperEnv = "CHILDPROC_TEST_HELPER"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(helperEnv); mode {
	case "":
		// Under -race the helpers are race-enabled binaries, which sleep
		// a second as they exit (GORACE's atexit_sleep_ms).
		os.Setenv("GORACE", harness.NoRaceExitSleep())
		os.Exit(m.Run())
	case "inherit":
		helperInherit()
	case "server":
		if err := helperServer(); err != nil {
			fmt.Fprintln(os.Stderr, "helper server:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
		os.Exit(2)
	}
	os.Exit(0)
}

// inheritReport is what the "inherit" helper prints as JSON.
type inheritReport struct {
	Source      string
	Supervised  bool
	Sockets     string
	Env         []string // inherit variables still set afterwards
	CloseOnExec map[int]bool
	Taken       map[string]string // name -> address of the listener/conn
	Errors      map[string]string
}

func helperInherit() {
	if os.Getenv("CHILDPROC_TEST_SETPID") == "1" {
		// What hitless's exec shim does: the pid is known only here.
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	r := inheritReport{CloseOnExec: map[int]bool{}, Taken: map[string]string{}, Errors: map[string]string{}}
	s, err := Inherit()
	if err != nil {
		r.Errors["inherit"] = err.Error()
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	r.Source, r.Supervised, r.Sockets = s.Source(), s.Supervised(), s.String()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || strings.HasPrefix(k, "EINHORN_") || k == "SERVER_STARTER_PORT" {
			r.Env = append(r.Env, k)
		}
	}
	for fd := 3; fd < 3+s.Len(); fd++ {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		r.CloseOnExec[fd] = err == nil && flags&unix.FD_CLOEXEC != 0
	}
	for _, name := range strings.Fields(os.Getenv("CHILDPROC_TEST_TAKE")) {
		kind, arg, _ := strings.Cut(name, ":")
		switch kind {
		case "listener":
			ln, err := s.Listener(arg)
			if err != nil {
				r.Errors[name] = err.Error()
				continue
			}
			r.Taken[name] = ln.Addr().Network() + " " + ln.Addr().String()
		case "packet":
			pc, err := s.PacketConn(arg)
			if err != nil {
				r.Errors[name] = err.Error()
				continue
			}
			r.Taken[name] = pc.LocalAddr().Network() + " " + pc.LocalAddr().String()
		case "listen":
			network, addr, _ := strings.Cut(arg, ",")
			ln, err := s.Listen(network, addr)
			if err != nil {
				r.Errors[name] = err.Error()
				continue
			}
			r.Taken[name] = ln.Addr().Network() + " " + ln.Addr().String()
			ln.Close()
		}
	}
	if err := s.Close(); err != nil {
		r.Errors["close"] = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

// helperServer is a small server in the shape the package documents. It
// serves /fast, /slow (50ms), /block (until released by nothing: for the
// cut-short test) and POST /orders, whose ids a background writer appends
// to $CHILDPROC_TEST_STORE in batches, so a test can compare what was
// acknowledged with what was stored across generations.
func helperServer() error {
	if os.Getenv("CHILDPROC_TEST_SETPID") == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	socks, err := Inherit()
	if err != nil {
		return err
	}
	ln, err := socks.Listen("tcp", os.Getenv("CHILDPROC_TEST_ADDR"))
	if err != nil {
		return err
	}
	opts := Options{Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil))}
	if v := os.Getenv("CHILDPROC_TEST_LAMEDUCK"); v != "" {
		opts.LameDuck, _ = time.ParseDuration(v)
	}
	if v := os.Getenv("CHILDPROC_TEST_DRAIN"); v != "" {
		opts.DrainTimeout, _ = time.ParseDuration(v)
	}
	lc := New(opts)

	orders := make(chan string, 1024)
	storePath := os.Getenv("CHILDPROC_TEST_STORE")
	if storePath != "" {
		store, err := os.OpenFile(storePath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		lc.AddCloser("store", func(context.Context) error { return store.Close() })
		err = lc.Go("writer", func(ctx context.Context) {
			var batch []string
			flush := func() {
				if len(batch) > 0 {
					// One write per batch: O_APPEND keeps lines of two
					// generations from interleaving.
					store.WriteString(strings.Join(batch, "\n") + "\n")
					batch = batch[:0]
				}
			}
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case id := <-orders:
					batch = append(batch, id)
				case <-tick.C:
					flush()
				case <-ctx.Done():
					// Every handler has returned (step 4 comes after
					// step 3), so what is queued is all there is.
					for {
						select {
						case id := <-orders:
							batch = append(batch, id)
						default:
							flush()
							return
						}
					}
				}
			}
		})
		if err != nil {
			return err
		}
	}
	if os.Getenv("CHILDPROC_TEST_STUCK") == "1" {
		lc.Go("stuck", func(context.Context) { select {} })
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		Notify("STATUS=blocked")
		select {}
	})
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("slow") == "1" {
			time.Sleep(50 * time.Millisecond)
		}
		id := r.URL.Query().Get("id")
		select {
		case orders <- id:
			w.WriteHeader(http.StatusAccepted)
		case <-r.Context().Done():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		}
	})
	lc.ServeHTTP(&http.Server{Handler: mux}, ln)
	return lc.Run()
}

// notifyListener is a NOTIFY_SOCKET a test reads: the same channel a
// supervisor uses to learn that a child is ready.
type notifyListener struct {
	path string
	conn *net.UnixConn
	msgs chan string
}

func newNotifyListener(t *testing.T) *notifyListener {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifyListener{path: path, conn: conn, msgs: make(chan string, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(n.msgs)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return n
}

// expect waits for a datagram containing want.
func (n *notifyListener) expect(t *testing.T, want string, within time.Duration) string {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %q", want)
			}
			if strings.Contains(m, want) {
				return m
			}
		case <-timer.C:
			t.Fatalf("no %q on NOTIFY_SOCKET within %s", want, within)
		}
	}
}

// logRecorder is a slog handler that lets a test wait for a log message:
// the drain's steps are events, and their log records are how the tests
// wait for them instead of sleeping.
type logRecorder struct {
	mu      sync.Mutex
	records []string
	changed broadcast
	t       *testing.T
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	r.records = append(r.records, b.String())
	r.changed.fire()
	r.mu.Unlock()
	r.t.Log(b.String())
	return nil
}

func (r *logRecorder) waitFor(t *testing.T, substr string, within time.Duration) string {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	seen := 0
	for {
		r.mu.Lock()
		for ; seen < len(r.records); seen++ {
			if strings.Contains(r.records[seen], substr) {
				rec := r.records[seen]
				r.mu.Unlock()
				return rec
			}
		}
		ch := r.changed.wait()
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no log record containing %q within %s", substr, within)
		}
	}
}

func newLogger(t *testing.T) (*slog.Logger, *logRecorder) {
	r := &logRecorder{t: t}
	return slog.New(r), r
}

// readResponse reads one HTTP response from a raw connection.
func readResponse(c net.Conn) (*http.Response, error) {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

func isConnDrop(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}
