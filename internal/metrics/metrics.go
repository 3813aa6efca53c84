//go:build linux

package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/upgrade"
)

// ScrapeTimeout bounds the wait for the supervisor's status at a scrape.
const ScrapeTimeout = 5 * time.Second

// Source is what the counters and gauges are read from at each scrape;
// *supervisor.Supervisor is one.
type Source interface {
	Status(ctx context.Context) (supervisor.Status, error)
}

// Options are the figures that do not change while hitless runs.
type Options struct {
	// DrainTimeout is the configured drain deadline, exported so that an
	// alert can compare a drain's age with it.
	DrainTimeout time.Duration
	// Build labels hitless_build_info; the zero value means ReadBuild().
	Build Build
}

// Build is what hitless_build_info says of the running binary.
type Build struct {
	Version   string // the module version ("(devel)" for a build from a checkout)
	Revision  string // the VCS revision, "unknown" when the build did not record one
	GoVersion string
}

// ReadBuild reads the build information of the running binary.
func ReadBuild() Build {
	b := Build{Version: "unknown", Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			b.Revision = s.Value
		}
	}
	return b
}

// Metrics holds the histograms and the figures fixed at start. It is the
// supervisor.Observer to give the supervisor; Handler serves everything.
// It is also a supervisor.Carrier: an upgrade in place carries the
// histograms' values (Restore takes them back).
type Metrics struct {
	reload, drain *histogram
	fixed         []prometheus.Collector
}

var _ supervisor.Observer = (*Metrics)(nil)

// New returns metrics whose histograms are empty.
func New(o Options) *Metrics {
	if o.Build == (Build{}) {
		o.Build = ReadBuild()
	}
	m := &Metrics{
		reload: newHistogram("hitless_reload_duration_seconds",
			"Time from a reload's request (the first, when several joined) to its new generation serving, trial included; reloads that served only.",
			// From a fast child's few milliseconds to a long trial.
			[]float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}),
		drain: newHistogram("hitless_drain_duration_seconds",
			"Time from the drain signal to the exit of a generation that served.",
			// Up to well past the default drain timeout (30s).
			[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "hitless_build_info",
		Help:        "Always 1; the labels say which build of hitless runs.",
		ConstLabels: prometheus.Labels{"version": o.Build.Version, "revision": o.Build.Revision, "goversion": o.Build.GoVersion},
	})
	info.Set(1)
	timeout := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hitless_drain_timeout_seconds",
		Help: "The drain timeout: a generation draining longer has its process group killed.",
	})
	timeout.Set(o.DrainTimeout.Seconds())
	m.fixed = []prometheus.Collector{info, timeout}
	return m
}

// ReloadServing records a reload's duration (supervisor.Observer).
func (m *Metrics) ReloadServing(d time.Duration) { m.reload.Observe(d.Seconds()) }

// Drained records a drain's duration (supervisor.Observer).
func (m *Metrics) Drained(d time.Duration) { m.drain.Observe(d.Seconds()) }

// metricsState is what an upgrade carries of Metrics.
type metricsState struct {
	Reload histogramState `json:"reload_duration_seconds"`
	Drain  histogramState `json:"drain_duration_seconds"`
}

// Handoff puts the histograms' values in st (supervisor.Carrier), written
// at the exec: a drain observed while the supervisor quiesces counts.
func (m *Metrics) Handoff(ctx context.Context, st *upgrade.State) error {
	st.PutAtExec("metrics", func() (any, error) {
		return metricsState{Reload: m.reload.state(), Drain: m.drain.state()}, nil
	})
	return nil
}

// Resume is a no-op: Handoff stops nothing (supervisor.Carrier).
func (m *Metrics) Resume() {}

// Restore adds the values an earlier image carried in st, if any, to the
// histograms.
func (m *Metrics) Restore(st *upgrade.State) error {
	if _, ok := st.Sections["metrics"]; !ok {
		return nil // an image without metrics, or older than this
	}
	var ms metricsState
	if err := st.Get("metrics", &ms); err != nil {
		return err
	}
	m.reload.add(ms.Reload)
	m.drain.add(ms.Drain)
	return nil
}

// Handler serves /metrics: m's histograms and fixed figures, the counters
// and gauges read from src at each scrape, and the process_* and go_*
// metrics of this process. Errors of a scrape are logged to log (nil
// discards them) and fail the scrape.
func (m *Metrics) Handler(src Source, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.reload, m.drain, statusCollector{src},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	reg.MustRegister(m.fixed...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: errorLog{log},
		Registry: reg, // promhttp_metric_handler_errors_total
	}))
	return mux
}

// errorLog is promhttp's logger on slog.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Println(v ...any) { l.log.Warn("metrics: " + fmt.Sprint(v...)) }

// The series read from the supervisor's status.
var (
	reloadsDesc = prometheus.NewDesc("hitless_reloads_total",
		`Reloads by result: ok (the new generation serves), failed (a start that did not serve: reloads, and restarts after a crash), rolled_back (ready, then failed its trial).`,
		[]string{"result"}, nil)
	restartsDesc = prometheus.NewDesc("hitless_restarts_total",
		"Restarts begun because no generation served (the serving child died).", nil, nil)
	watchdogKillsDesc = prometheus.NewDesc("hitless_watchdog_kills_total",
		"Serving children aborted (SIGABRT) because they missed their watchdog.", nil, nil)
	outputDroppedDesc = prometheus.NewDesc("hitless_output_dropped_lines_total",
		"Lines of hitless's log and of its children's output that could not be written to hitless's stdout or stderr (the reader was gone), by stream.",
		[]string{"stream"}, nil)
	upgradesDesc = prometheus.NewDesc("hitless_upgrades_total",
		`Upgrades of hitless itself in place (hitless upgrade) by result: ok, refused (the new binary failed its check; nothing changed), failed (the exec failed; nothing changed), rolled_back (the new image could not take over and ran the old one again).`,
		[]string{"result"}, nil)
	generationsDesc = prometheus.NewDesc("hitless_generations",
		"Generations of the child that have not exited, by state.", []string{"state"}, nil)
	rssDesc = prometheus.NewDesc("hitless_generation_resident_memory_bytes",
		"Resident memory of each generation's whole process group.", []string{"generation", "pid", "state"}, nil)
	handOverDesc = prometheus.NewDesc("hitless_handover_connections_total",
		`Connections in hand-overs between generations, every generation's since hitless started, by result: handed (passed on to the serving generation), adopted (taken by it), refused (kept by the old generation, closed after a response), lost (passed on, never adopted), closed (closed by a drain rather than handed over, as the generations reported), closed_idle (of those, closed while idle).`,
		[]string{"result"}, nil)
	genHandOverDesc = prometheus.NewDesc("hitless_generation_handover_connections",
		"Each generation's connections in hand-overs, by result (as hitless_handover_connections_total); only generations that take part.", []string{"generation", "pid", "state", "result"}, nil)
	drainStartDesc = prometheus.NewDesc("hitless_generation_drain_start_time_seconds",
		"When each draining (or failed) generation was sent the drain signal, in seconds since the Unix epoch.", []string{"generation", "pid", "state"}, nil)
)

// states are those a generation that has not exited can be in.
var states = []supervisor.State{supervisor.Starting, supervisor.Trial, supervisor.Serving, supervisor.Draining, supervisor.Failed}

// statusCollector reads the counters and gauges from a Source at each
// scrape.
type statusCollector struct{ src Source }

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{reloadsDesc, restartsDesc, watchdogKillsDesc, upgradesDesc, outputDroppedDesc, generationsDesc, rssDesc, drainStartDesc, handOverDesc, genHandOverDesc} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	st, err := c.src.Status(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(reloadsDesc, fmt.Errorf("hitless status: %w", err))
		return
	}
	counter := func(d *prometheus.Desc, n int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(n), labels...)
	}
	counter(reloadsDesc, st.ReloadsOK, "ok")
	counter(reloadsDesc, st.ReloadsFailed, "failed")
	counter(reloadsDesc, st.ReloadsRolledBack, "rolled_back")
	counter(restartsDesc, st.Restarts)
	counter(watchdogKillsDesc, st.WatchdogKills)
	counter(upgradesDesc, st.UpgradesOK, "ok")
	counter(upgradesDesc, st.UpgradesRefused, "refused")
	counter(upgradesDesc, st.UpgradesFailed-st.UpgradesRefused-st.UpgradesRolledBack, "failed")
	counter(upgradesDesc, st.UpgradesRolledBack, "rolled_back")
	counter(outputDroppedDesc, int(st.OutputDropped.Stdout), "stdout")
	counter(outputDroppedDesc, int(st.OutputDropped.Stderr), "stderr")

	count := make(map[supervisor.State]int)
	for _, g := range st.Generations {
		count[g.State]++
		labels := []string{strconv.Itoa(g.ID), strconv.Itoa(g.PID), string(g.State)}
		ch <- prometheus.MustNewConstMetric(rssDesc, prometheus.GaugeValue, float64(g.RSS), labels...)
		if !g.DrainAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(drainStartDesc, prometheus.GaugeValue, float64(g.DrainAt.UnixNano())/1e9, labels...)
		}
		if c := g.HandOver; c != nil {
			for _, r := range handOverResults(*c) {
				ch <- prometheus.MustNewConstMetric(genHandOverDesc, prometheus.GaugeValue, float64(r.n), append(labels, r.result)...)
			}
		}
	}
	for _, s := range states {
		ch <- prometheus.MustNewConstMetric(generationsDesc, prometheus.GaugeValue, float64(count[s]), string(s))
	}
	var total handover.Counts
	if st.HandOver != nil {
		total = *st.HandOver
	}
	for _, r := range handOverResults(total) {
		counter(handOverDesc, r.n, r.result)
	}
}

type handOverResult struct {
	result string
	n      int
}

// handOverResults lists the counts of c by the result label.
func handOverResults(c handover.Counts) []handOverResult {
	return []handOverResult{
		{"handed", c.Handed}, {"adopted", c.Adopted}, {"refused", c.Refused},
		{"lost", c.Lost}, {"closed", c.Closed}, {"closed_idle", c.ClosedIdle},
	}
}
