//go:build linux

package metrics

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/metrics/metricstest"
	"github.com/hitless/hitless/upgrade"
)

// An upgrade carries the metrics: the listener (the same port, and a
// scrape that connects between the images is answered, not refused) and
// the histograms' values, including what is observed after the server
// handed over, until the exec.
func TestHandoffCarriesMetrics(t *testing.T) {
	src := &source{}
	m := New(Options{})
	srv, err := Listen("127.0.0.1:0", m.Handler(src, nil))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	addr := srv.Addr()
	m.ReloadServing(300 * time.Millisecond)
	m.Drained(20 * time.Millisecond)
	if _, err := metricstest.Scrape(addr); err != nil {
		t.Fatal(err)
	}

	st := upgrade.NewState(1, "test")
	for _, c := range []interface {
		Handoff(context.Context, *upgrade.State) error
	}{m, srv} {
		if err := c.Handoff(context.Background(), st); err != nil {
			t.Fatal(err)
		}
	}
	m.Drained(40 * time.Millisecond) // while the supervisor quiesces
	between := make(chan error, 1)
	go func() { _, err := metricstest.Scrape(addr); between <- err }()

	next, err := upgrade.Loopback(st)
	if err != nil {
		t.Fatal(err)
	}
	srv.ln.Close() // what the exec does to this image's descriptor
	m2 := New(Options{})
	if err := m2.Restore(next); err != nil {
		t.Fatal(err)
	}
	srv2, err := Restore(next, m2.Handler(src, nil))
	if err != nil || srv2 == nil {
		t.Fatalf("Restore: %v, %v", srv2, err)
	}
	next.Commit()
	go srv2.Serve()
	defer srv2.Close()
	if srv2.Addr() != addr {
		t.Errorf("address %s after the hand-over, %s before", srv2.Addr(), addr)
	}
	if err := <-between; err != nil {
		t.Errorf("a scrape between the images: %v", err)
	}
	got, err := metricstest.Scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint64{"hitless_reload_duration_seconds": 1, "hitless_drain_duration_seconds": 2} {
		f := got[name]
		if f == nil || len(f.Metric) != 1 || f.Metric[0].GetHistogram().GetSampleCount() != want {
			t.Errorf("%s after the hand-over: %v, want %d samples", name, f, want)
		}
	}
}

// A hand-over whose exec fails: the same server serves again.
func TestHandoffResume(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", New(Options{}).Handler(&source{}, nil))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	// Serving, as it is long before any upgrade: a hand-over that came
	// before Serve began would find no server to stop.
	if _, err := metricstest.Scrape(srv.Addr()); err != nil {
		t.Fatalf("scrape before the hand-over: %v", err)
	}
	if err := srv.Handoff(context.Background(), upgrade.NewState(1, "test")); err != nil {
		t.Fatal(err)
	}
	srv.Resume()
	if _, err := metricstest.Scrape(srv.Addr()); err != nil {
		t.Errorf("scrape after Resume: %v", err)
	}
}

// Carried values whose buckets this build does not have go into the
// next bucket up; count and sum stay exact.
func TestHistogramCarriesAcrossBuckets(t *testing.T) {
	h := newHistogram("h", "help", []float64{1, 10})
	h.add(histogramState{Bounds: []float64{0.5, 5, 50}, Counts: []uint64{1, 2, 3, 4}, Sum: 100, Count: 10})
	st := h.state()
	if want := []uint64{1, 2, 7}; st.Count != 10 || st.Sum != 100 || st.Counts[0] != want[0] || st.Counts[1] != want[1] || st.Counts[2] != want[2] {
		t.Errorf("after add: %+v", st)
	}
}

// The sections an upgrade carries are a format: a later build reads what
// this one writes, by these names.
func TestStateFormat(t *testing.T) {
	h := newHistogram("h", "help", []float64{1, 10})
	h.Observe(0.5)
	b, _ := json.Marshal(metricsState{Reload: h.state(), Drain: h.state()})
	const want = `{"reload_duration_seconds":{"bounds":[1,10],"counts":[1,0,0],"sum":0.5,"count":1},"drain_duration_seconds":{"bounds":[1,10],"counts":[1,0,0],"sum":0.5,"count":1}}`
	if string(b) != want {
		t.Errorf("metrics section %s, want %s", b, want)
	}
	b, _ = json.Marshal(serverState{Network: "tcp", Addr: "127.0.0.1:9180"})
	if string(b) != `{"network":"tcp","addr":"127.0.0.1:9180"}` {
		t.Errorf("metrics/server section %s", b)
	}
}
