package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Class
	}{
		{&net.OpError{Op: "dial", Err: &net.AddrError{}}, Other},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), Refused},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), Reset},
		{fmt.Errorf("write: %w", syscall.EPIPE), Reset},
		{fmt.Errorf("Post: %w", io.EOF), EOF},
		{io.ErrUnexpectedEOF, EOF},
		{errors.New("net/http: HTTP/1.x transport connection broken: http: server closed idle connection"), EOF},
		{errors.New("Post: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"), Timeout},
		{errors.New(`Post "http://127.0.0.1:1/work": dial tcp 127.0.0.1:1: connect: connection refused`), Refused},
		{fmt.Errorf("POST: %w", &StatusError{Code: 503, Status: "503 Service Unavailable"}), BadStatus},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{50: 50, 99: 99, 100: 100, 1: 1} {
		if got := Percentile(d, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty")
	}
}

func TestWorkURL(t *testing.T) {
	if got := WorkURL("127.0.0.1:1", 0); got != "http://127.0.0.1:1/work" {
		t.Errorf("no delay: %s", got)
	}
	if got := WorkURL("127.0.0.1:1", 50*time.Millisecond); got != "http://127.0.0.1:1/work?ms=50" {
		t.Errorf("50ms: %s", got)
	}
}

// server answers POST / with code, and counts the connections it accepted.
func server(t *testing.T, code int) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(code)
		io.WriteString(w, "answer")
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

// The count bound ends the load; keep-alive reuses each worker's
// connection, and without it each request has its own.
func TestLoadCount(t *testing.T) {
	for _, keepAlive := range []bool{true, false} {
		s, conns := server(t, http.StatusOK)
		var results atomic.Int64
		l := StartLoad(context.Background(), LoadOptions{
			URL: s.URL, Workers: 4, KeepAlive: keepAlive, Requests: 200, Duration: time.Minute, Want: http.StatusOK,
			OnResult: func(req *http.Request, err error) { results.Add(1) },
		})
		res := l.Wait()
		if res.OK() != 200 || res.Failed() != 0 || results.Load() != 200 {
			t.Errorf("keepalive=%v: %s, %d results; want 200 ok", keepAlive, res, results.Load())
		}
		if n := conns.Load(); keepAlive && n > 4 || !keepAlive && n != 200 {
			t.Errorf("keepalive=%v: %d connections for 200 requests from 4 workers", keepAlive, n)
		}
		if res.Latency(50) <= 0 || res.Latency(100) < res.Latency(50) {
			t.Errorf("latency p50 %v, p100 %v", res.Latency(50), res.Latency(100))
		}
	}
}

// OnBody gets the body of each successful answer, and of no failure.
func TestLoadOnBody(t *testing.T) {
	for _, code := range []int{http.StatusOK, http.StatusServiceUnavailable} {
		s, _ := server(t, code)
		var bodies, wrong atomic.Int64
		res := StartLoad(context.Background(), LoadOptions{
			URL: s.URL, Workers: 2, KeepAlive: true, Requests: 20,
			OnBody: func(b []byte) {
				bodies.Add(1)
				if string(b) != "answer" {
					wrong.Add(1)
				}
			},
		}).Wait()
		if want := res.OK(); bodies.Load() != want || wrong.Load() != 0 || res.Sent() != 20 {
			t.Errorf("status %d: %s; %d bodies (%d not the answer), want %d", code, res, bodies.Load(), wrong.Load(), want)
		}
	}
}

// The time bound ends a load that the count would not.
func TestLoadDuration(t *testing.T) {
	s, _ := server(t, http.StatusOK)
	start := time.Now()
	res := StartLoad(context.Background(), LoadOptions{URL: s.URL, Workers: 2, Duration: 200 * time.Millisecond}).Wait()
	if took := time.Since(start); took < 200*time.Millisecond || took > 10*time.Second {
		t.Errorf("a load of 200ms took %v", took)
	}
	if res.OK() == 0 || res.Failed() != 0 {
		t.Errorf("%s", res)
	}
}

// Rate paces the requests: 20 at 100 a second take about 200ms.
func TestLoadRate(t *testing.T) {
	s, _ := server(t, http.StatusOK)
	start := time.Now()
	res := StartLoad(context.Background(), LoadOptions{URL: s.URL, Workers: 4, Requests: 20, Rate: 100}).Wait()
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("20 requests at 100/s took %v", took)
	}
	if res.OK() != 20 {
		t.Errorf("%s", res)
	}
}

// Failures are counted by class, whatever the phase; a status other than
// the one wanted is a failure.
func TestLoadFailures(t *testing.T) {
	s, _ := server(t, http.StatusServiceUnavailable)
	res := StartLoad(context.Background(), LoadOptions{URL: s.URL, Requests: 5}).Wait()
	if res.Count(BadStatus) != 5 || res.OK() != 0 || !strings.Contains(res.String(), "503") {
		t.Errorf("503 answers: %s", res)
	}
	ok, _ := server(t, http.StatusAccepted)
	if res := StartLoad(context.Background(), LoadOptions{URL: ok.URL, Requests: 5, Want: http.StatusOK}).Wait(); res.Count(BadStatus) != 5 {
		t.Errorf("202 where 200 is wanted: %s", res)
	}
	if res := StartLoad(context.Background(), LoadOptions{URL: ok.URL, Requests: 5}).Wait(); res.OK() != 5 {
		t.Errorf("202 where any 2xx is wanted: %s", res)
	}
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	res = StartLoad(context.Background(), LoadOptions{URL: "http://" + addr + "/", Requests: 3}).Wait()
	if res.Count(Refused) != 3 || res.Sent() != 3 {
		t.Errorf("nothing listening: %s", res)
	}
}

// WaitOK waits for progress in the current phase, and a new phase counts
// only what is sent after it begins.
func TestLoadProgressAndPhases(t *testing.T) {
	s, _ := server(t, http.StatusOK)
	l := StartLoad(context.Background(), LoadOptions{URL: s.URL, Workers: 2, KeepAlive: true})
	defer l.Stop()
	if err := l.WaitOK(50, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	first := l.Tally()
	second := l.NextPhase()
	if err := l.WaitOK(50, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Stop()
	if first.OK() < 50 || second.OK() < 50 || l.Tally() != second {
		t.Errorf("first phase %s, second %s", first, second)
	}
	// A load that has ended makes no more progress: WaitOK says so at once.
	start := time.Now()
	if err := l.WaitOK(1, time.Minute); err == nil || time.Since(start) > 10*time.Second {
		t.Errorf("WaitOK after the end: %v after %v", err, time.Since(start))
	}
}

// Install replaces the file at path with a new one (a new inode), and
// SameFile tells the two apart.
func TestInstallSameFile(t *testing.T) {
	dir := t.TempDir()
	src, path := filepath.Join(dir, "src"), filepath.Join(dir, "live")
	if err := os.WriteFile(src, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "old")
	if err := os.Link(path, old); err != nil {
		t.Fatal(err)
	}
	if !SameFile(path, old) {
		t.Fatal("a file and its hard link differ")
	}
	if err := Install(src, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if fi, _ := os.Stat(path); err != nil || string(b) != "new" || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("after Install: %q %v, %v", b, err, fi)
	}
	if SameFile(path, old) || SameFile(path, src) || SameFile(path, filepath.Join(dir, "missing")) {
		t.Error("SameFile of different or missing files")
	}
	if _, err := os.Stat(path + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.new left behind: %v", path, err)
	}
}
