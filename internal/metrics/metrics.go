//go:build linux

package metrics

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

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
	fixed         []family
	// Scrapes that failed, by cause: the status could not be had
	// (gathering), or the answer could not be written (encoding).
	gatherErrors, encodeErrors atomic.Uint64
}

var _ supervisor.Observer = (*Metrics)(nil)

// New returns metrics whose histograms are empty.
func New(o Options) *Metrics {
	if o.Build == (Build{}) {
		o.Build = ReadBuild()
	}
	info := family{name: "hitless_build_info", typ: "gauge", help: "Always 1; the labels say which build of hitless runs."}
	info.add(1, "goversion", o.Build.GoVersion, "revision", o.Build.Revision, "version", o.Build.Version)
	return &Metrics{
		reload: newHistogram("hitless_reload_duration_seconds",
			"Time from a reload's request (the first, when several joined) to its new generation serving, trial included; reloads that served only.",
			// From a fast child's few milliseconds to a long trial.
			[]float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}),
		drain: newHistogram("hitless_drain_duration_seconds",
			"Time from the drain signal to the exit of a generation that served.",
			// Up to well past the default drain timeout (30s).
			[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
		fixed: []family{info, one("hitless_drain_timeout_seconds", "gauge",
			"The drain timeout: a generation draining longer has its process group killed.", o.DrainTimeout.Seconds())},
	}
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

// Handler answers the scrapes of /metrics (see Server).
type Handler struct {
	m   *Metrics
	src Source
	log *slog.Logger
}

// Handler serves m's histograms and fixed figures, the counters and
// gauges read from src at each scrape, and the process_* and go_*
// metrics of this process. Errors of a scrape are logged to log (nil
// discards them) and fail the scrape.
func (m *Metrics) Handler(src Source, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{m: m, src: src, log: log}
}

// scrape is one scrape's answer, in the text format.
func (h *Handler) scrape(ctx context.Context) ([]byte, error) {
	fams, err := h.m.gather(ctx, h.src)
	if err != nil {
		h.m.gatherErrors.Add(1)
		h.log.Warn("metrics: scrape failed", "err", err)
		return nil, err
	}
	var buf bytes.Buffer
	writeText(&buf, fams)
	return buf.Bytes(), nil
}

// writeFailed counts an answer that could not be written.
func (h *Handler) writeFailed(err error) {
	h.m.encodeErrors.Add(1)
	h.log.Warn("metrics: writing the scrape", "err", err)
}

// gather reads every family for one scrape.
func (m *Metrics) gather(ctx context.Context, src Source) ([]family, error) {
	status, err := statusFamilies(ctx, src)
	if err != nil {
		return nil, err
	}
	fams := append(status, m.reload.family(), m.drain.family())
	fams = append(fams, m.fixed...)
	errs := family{name: "promhttp_metric_handler_errors_total", typ: "counter",
		help: "Total number of internal errors encountered by the promhttp metric handler."}
	errs.add(float64(m.encodeErrors.Load()), "cause", "encoding")
	errs.add(float64(m.gatherErrors.Load()), "cause", "gathering")
	fams = append(fams, errs)
	fams = append(fams, goFamilies()...)
	return append(fams, processFamilies()...), nil
}

// states are those a generation that has not exited can be in, in the
// order of their names, as the Prometheus client wrote them.
var states = []supervisor.State{supervisor.Draining, supervisor.Failed, supervisor.Serving, supervisor.Starting, supervisor.Trial}

// statusFamilies reads the counters and gauges from src, waiting at most
// ScrapeTimeout for its answer.
func statusFamilies(ctx context.Context, src Source) ([]family, error) {
	ctx, cancel := context.WithTimeout(ctx, ScrapeTimeout)
	defer cancel()
	st, err := src.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("hitless status: %w", err)
	}
	reloads := family{name: "hitless_reloads_total", typ: "counter",
		help: "Reloads by result: ok (the new generation serves), failed (a start that did not serve: reloads, and restarts after a crash), rolled_back (ready, then failed its trial)."}
	reloads.add(float64(st.ReloadsFailed), "result", "failed")
	reloads.add(float64(st.ReloadsOK), "result", "ok")
	reloads.add(float64(st.ReloadsRolledBack), "result", "rolled_back")
	upgrades := family{name: "hitless_upgrades_total", typ: "counter",
		help: "Upgrades of hitless itself in place (hitless upgrade) by result: ok, refused (the new binary failed its check; nothing changed), failed (the exec failed; nothing changed), rolled_back (the new image could not take over and ran the old one again)."}
	upgrades.add(float64(st.UpgradesFailed-st.UpgradesRefused-st.UpgradesRolledBack), "result", "failed")
	upgrades.add(float64(st.UpgradesOK), "result", "ok")
	upgrades.add(float64(st.UpgradesRefused), "result", "refused")
	upgrades.add(float64(st.UpgradesRolledBack), "result", "rolled_back")

	gens := family{name: "hitless_generations", typ: "gauge", help: "Generations of the child that have not exited, by state."}
	rss := family{name: "hitless_generation_resident_memory_bytes", typ: "gauge", help: "Resident memory of each generation's whole process group."}
	drainAt := family{name: "hitless_generation_drain_start_time_seconds", typ: "gauge",
		help: "When each draining (or failed) generation was sent the drain signal, in seconds since the Unix epoch."}
	genHandOvers := family{name: "hitless_generation_handover_connections", typ: "gauge",
		help: "Each generation's connections in hand-overs, by result (as hitless_handover_connections_total); only generations that take part."}
	count := make(map[supervisor.State]int)
	for _, g := range st.Generations {
		count[g.State]++
		labels := []string{"generation", strconv.Itoa(g.ID), "pid", strconv.Itoa(g.PID), "state", string(g.State)}
		rss.add(float64(g.RSS), labels...)
		if !g.DrainAt.IsZero() {
			drainAt.add(float64(g.DrainAt.UnixNano())/1e9, labels...)
		}
		if c := g.HandOver; c != nil {
			for _, r := range handOverResults(*c) {
				genHandOvers.add(float64(r.n), append(slices.Clone(labels), "result", r.result)...)
			}
		}
	}
	for _, s := range states {
		gens.add(float64(count[s]), "state", string(s))
	}
	dropped := family{name: "hitless_output_dropped_lines_total", typ: "counter",
		help: "Lines of hitless's log and of its children's output that could not be written to hitless's stdout or stderr (the reader was gone), by stream."}
	dropped.add(float64(st.OutputDropped.Stderr), "stream", "stderr")
	dropped.add(float64(st.OutputDropped.Stdout), "stream", "stdout")
	var total handover.Counts
	if st.HandOver != nil {
		total = *st.HandOver
	}
	handOvers := family{name: "hitless_handover_connections_total", typ: "counter",
		help: "Connections in hand-overs between generations, every generation's since hitless started, by result: handed (passed on to the serving generation), adopted (taken by it), refused (kept by the old generation, closed after a response), lost (passed on, never adopted), closed (closed by a drain rather than handed over, as the generations reported), closed_idle (of those, closed while idle)."}
	for _, r := range handOverResults(total) {
		handOvers.add(float64(r.n), "result", r.result)
	}
	return []family{reloads, upgrades, gens, rss, drainAt, dropped, handOvers, genHandOvers,
		one("hitless_restarts_total", "counter", "Restarts begun because no generation served (the serving child died).", float64(st.Restarts)),
		one("hitless_watchdog_kills_total", "counter", "Serving children aborted (SIGABRT) because they missed their watchdog.", float64(st.WatchdogKills)),
	}, nil
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
