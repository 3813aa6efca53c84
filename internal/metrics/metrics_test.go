//go:build linux

package metrics

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/internal/metrics/metricstest"
	"github.com/hitless/hitless/supervisor"
)

// source is a Source that answers st, or err.
type source struct {
	st  supervisor.Status
	err error
}

func (s *source) Status(context.Context) (supervisor.Status, error) { return s.st, s.err }

// serve serves m over a unix socket in a new directory until the test
// ends, and returns its path.
func serve(t *testing.T, m *Metrics, src Source) string {
	t.Helper()
	_, path := serveWith(t, m, src, nil)
	return path
}

// serveWith is serve, with the server's limits set by set (if not nil)
// before it serves; it returns the server too.
func serveWith(t *testing.T, m *Metrics, src Source, set func(*Server)) (*Server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hlm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "m.sock")
	srv, err := Listen(path, m.Handler(src, nil))
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(srv)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file after Close: %v", err)
		}
	})
	return srv, path
}

// The counters and gauges are the status's at the scrape; the histograms
// hold what the observer was given.
func TestScrape(t *testing.T) {
	drain := time.Unix(1_700_000_000, 500_000_000)
	src := &source{st: supervisor.Status{
		Generations: []supervisor.GenerationStatus{
			{ID: 4, PID: 400, State: supervisor.Draining, DrainAt: drain, RSS: 1 << 20},
			{ID: 5, PID: 500, State: supervisor.Serving, RSS: 2 << 20},
			{ID: 6, PID: 600, State: supervisor.Trial, RSS: 3 << 20},
		},
		Stats: supervisor.Stats{ReloadsOK: 3, ReloadsFailed: 2, ReloadsRolledBack: 1, Restarts: 4, WatchdogKills: 5,
			UpgradesOK: 6, UpgradesFailed: 4, UpgradesRefused: 2, UpgradesRolledBack: 1},
	}}
	m := New(Options{DrainTimeout: 30 * time.Second, Build: Build{Version: "v1.2.3", Revision: "abc", GoVersion: "go1.26"}})
	m.ReloadServing(1500 * time.Millisecond)
	m.Drained(250 * time.Millisecond)
	m.Drained(750 * time.Millisecond)
	got, err := metricstest.Scrape(serve(t, m, src))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"hitless_reloads_total", []string{"result", "ok"}, 3},
		{"hitless_reloads_total", []string{"result", "failed"}, 2},
		{"hitless_reloads_total", []string{"result", "rolled_back"}, 1},
		{"hitless_restarts_total", nil, 4},
		{"hitless_watchdog_kills_total", nil, 5},
		{"hitless_upgrades_total", []string{"result", "ok"}, 6},
		{"hitless_upgrades_total", []string{"result", "refused"}, 2},
		{"hitless_upgrades_total", []string{"result", "failed"}, 1},
		{"hitless_upgrades_total", []string{"result", "rolled_back"}, 1},
		{"hitless_generations", []string{"state", "serving"}, 1},
		{"hitless_generations", []string{"state", "trial"}, 1},
		{"hitless_generations", []string{"state", "draining"}, 1},
		{"hitless_generations", []string{"state", "starting"}, 0},
		{"hitless_generations", []string{"state", "failed"}, 0},
		{"hitless_generation_resident_memory_bytes", []string{"generation", "6", "pid", "600", "state", "trial"}, 3 << 20},
		{"hitless_generation_drain_start_time_seconds", []string{"generation", "4", "pid", "400", "state", "draining"}, 1_700_000_000.5},
		{"hitless_drain_timeout_seconds", nil, 30},
		{"hitless_build_info", []string{"version", "v1.2.3", "revision", "abc", "goversion", "go1.26"}, 1},
	} {
		if v, ok := got.Value(c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if n := len(got.Samples("hitless_generation_drain_start_time_seconds")); n != 1 {
		t.Errorf("%d drain start times, want one (for the draining generation)", n)
	}
	if n, sum, _ := got.Histogram("hitless_reload_duration_seconds"); n != 1 || sum != 1.5 {
		t.Errorf("reload histogram: count %d, sum %v", n, sum)
	}
	if n, sum, _ := got.Histogram("hitless_drain_duration_seconds"); n != 2 || sum != 1 {
		t.Errorf("drain histogram: count %d, sum %v", n, sum)
	}
	if _, ok := got.Value("process_resident_memory_bytes"); !ok {
		t.Error("no process metrics")
	}
}

// A scrape that cannot get the status fails, rather than show counts
// that are not the supervisor's.
func TestScrapeWithoutStatus(t *testing.T) {
	path := serve(t, New(Options{}), &source{err: supervisor.ErrStopping})
	_, err := metricstest.Scrape(path)
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "hitless is stopping") {
		t.Errorf("scrape: %v, want a 500 saying why", err)
	}
}

// A unix socket path that a live server holds is refused; a stale socket
// file is replaced.
func TestListenUnix(t *testing.T) {
	path := serve(t, New(Options{}), &source{})
	if _, err := Listen(path, nil); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("Listen on a live socket: %v", err)
	}
	stale := filepath.Join(filepath.Dir(path), "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	srv, err := Listen(stale, nil)
	if err != nil {
		t.Fatalf("Listen on a stale socket file: %v", err)
	}
	srv.Close()
}

// Every family the Prometheus Go client served before it was replaced is
// still served, with its type and HELP text (testdata/families.txt), and
// nothing else: dashboards and alerts built on them keep working.
func TestFamiliesKept(t *testing.T) {
	b, err := os.ReadFile("testdata/families.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		want[name] = rest
	}
	src := &source{st: supervisor.Status{Generations: []supervisor.GenerationStatus{
		{ID: 1, PID: 100, State: supervisor.Draining, DrainAt: time.Now(), RSS: 1 << 20, HandOver: &handover.Counts{Handed: 1}},
		{ID: 2, PID: 200, State: supervisor.Serving, RSS: 1 << 20},
	}}}
	got, err := metricstest.Scrape(serve(t, New(Options{}), src))
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range got {
		if w, ok := want[name]; !ok {
			t.Errorf("new family %s: add it to testdata/families.txt", name)
		} else if g := strings.ToLower(f.GetType().String()) + " " + f.GetHelp(); g != w {
			t.Errorf("%s: type and help %q, want %q", name, g, w)
		}
	}
	for name := range want {
		if got[name] == nil {
			t.Errorf("%s is no longer served", name)
		}
	}
	// (process_cpu_seconds_total counts 10 ms ticks: a short test may
	// have none.)
	for _, name := range []string{"process_resident_memory_bytes", "process_start_time_seconds", "process_open_fds", "process_max_fds", "go_goroutines", "go_threads", "go_memstats_sys_bytes"} {
		if v, ok := got.Value(name); !ok || v <= 0 {
			t.Errorf("%s = %v (found %v)", name, v, ok)
		}
	}
	if start, _ := got.Value("process_start_time_seconds"); math.Abs(start-float64(time.Now().Unix())) > 3600 {
		t.Errorf("process_start_time_seconds %v is not near now", start)
	}
}

// The text format: label values and HELP escaped, values as Prometheus
// writes them, a histogram's buckets cumulative and "le" inclusive.
func TestText(t *testing.T) {
	h := newHistogram("h", "a histogram", []float64{1, 2.5})
	for _, v := range []float64{0.5, 1, 2, 7} {
		h.Observe(v)
	}
	f := family{name: "x", typ: "gauge", help: "back\\slash\nnewline"}
	f.add(1, "a", "quote\" back\\ nl\n", "b", "")
	f.add(math.Inf(-1))
	var b strings.Builder
	writeText(&b, []family{h.family(), f, {name: "empty", typ: "gauge", help: "none"}})
	want := `# HELP h a histogram
# TYPE h histogram
h_bucket{le="1"} 2
h_bucket{le="2.5"} 3
h_bucket{le="+Inf"} 4
h_sum 10.5
h_count 4
# HELP x back\\slash\nnewline
# TYPE x gauge
x{a="quote\" back\\ nl\n",b=""} 1
x -Inf
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	for v, s := range map[float64]string{0: "0", 1e6: "1e+06", 1444082: "1.444082e+06", 0.25: "0.25", math.NaN(): "NaN", math.Inf(1): "+Inf", 1 << 63: "9.223372036854776e+18"} {
		if got := formatFloat(v); got != s {
			t.Errorf("formatFloat(%v) = %q, want %q", v, got, s)
		}
	}
}

// Close ends the connections that wait, and Serve returns.
func TestServerClose(t *testing.T) {
	dir := t.TempDir()
	srv, err := Listen(filepath.Join(dir, "m.sock"), New(Options{}).Handler(&source{}, nil))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	c, err := net.Dial("unix", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /metrics HTTP/1.1\r\n")) // and never the end of the head
	time.Sleep(50 * time.Millisecond)            // let it be accepted (the close must end it either way)
	srv.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still runs 5s after Close")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("the waiting connection: %d, %v; want it closed", n, err)
	}
}
