//go:build linux

package e2e

// hitless run --metrics, scraped and parsed as Prometheus would, and the
// example scrape config and alerting rules in configs/ checked against a
// real scrape.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/hitless/hitless/internal/config"
	"github.com/hitless/hitless/internal/harness"
	"github.com/hitless/hitless/internal/metrics/metricstest"
)

// metricsAddr is where p serves its metrics, as it logged at start.
func metricsAddr(t *testing.T, p *harness.Hitless) string {
	t.Helper()
	return p.WaitFor(10*time.Second, harness.Is("metrics")).Str("addr")
}

func scrape(t *testing.T, addr string) metricstest.Metrics {
	t.Helper()
	m, err := metricstest.Scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// After one reload that serves and one that fails, /metrics counts
// exactly one of each, from the supervisor's own counters; the histograms
// hold that one reload and the one drain; the gauges describe the
// generations, the draining one included while it drains. Then the
// example alerts refer only to metrics that these scrapes have.
func TestMetrics(t *testing.T) {
	modeFile := filepath.Join(t.TempDir(), "mode")
	// Generation 1 ignores the drain signal: it drains for the whole
	// drain timeout, long enough to be seen draining.
	os.WriteFile(modeFile, []byte("ignore-term"), 0o644)
	p := start(t, harness.Options{Args: []string{"--metrics", "127.0.0.1:0", "--ready-timeout", "2s", "--drain-timeout", "2s"},
		Command: failingChild(modeFile)})
	addr := metricsAddr(t, p)
	old, _ := p.Status().Serving()
	os.WriteFile(modeFile, []byte("serve"), 0o644)
	if r := ctl(t, 60*time.Second, p, "reload", "--timeout", "30s"); r.Code != 0 {
		t.Fatalf("reload: %v", r)
	}
	draining := scrape(t, addr)
	g1, _ := p.Status().Gen(1)
	if v, ok := draining.Value("hitless_generations", "state", "draining"); !ok || v != 1 || g1.State != harness.StateDraining {
		t.Errorf("while generation 1 drains (%+v): %v draining (found %v)", g1, v, ok)
	}
	at, ok := draining.Value("hitless_generation_drain_start_time_seconds", "generation", "1", "pid", strconv.Itoa(old.PID), "state", "draining")
	if want := float64(g1.DrainAt.UnixNano()) / 1e9; !ok || at < want-0.001 || at > want+0.001 {
		t.Errorf("drain start of generation 1: %v (found %v), want %v", at, ok, want)
	}

	p.WaitStatus(20*time.Second, gens(1)) // killed at the drain timeout
	os.WriteFile(modeFile, []byte("exit"), 0o644)
	if r := ctl(t, 60*time.Second, p, "reload", "--timeout", "30s"); r.Code != 1 {
		t.Fatalf("failing reload: want exit 1: %v", r)
	}
	st := p.WaitStatus(20*time.Second, gens(1))
	g, _ := st.Serving()

	m := scrape(t, addr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"hitless_reloads_total", []string{"result", "ok"}, 1},
		{"hitless_reloads_total", []string{"result", "failed"}, 1},
		{"hitless_reloads_total", []string{"result", "rolled_back"}, 0},
		{"hitless_restarts_total", nil, 0},
		{"hitless_watchdog_kills_total", nil, 0},
		{"hitless_generations", []string{"state", "serving"}, 1},
		{"hitless_generations", []string{"state", "draining"}, 0},
		{"hitless_drain_timeout_seconds", nil, 2},
	} {
		if v, ok := m.Value(c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if n, _, _ := m.Histogram("hitless_reload_duration_seconds"); n != 1 {
		t.Errorf("reload histogram holds %d reloads, want the one that served", n)
	}
	if n, sum, _ := m.Histogram("hitless_drain_duration_seconds"); n != 1 || sum < 2 {
		t.Errorf("drain histogram holds %d drains of %vs in all, want generation 1's, of the drain timeout (2s)", n, sum)
	}
	if rss, ok := m.Value("hitless_generation_resident_memory_bytes", "generation", "2", "pid", strconv.Itoa(g.PID), "state", "serving"); !ok || rss <= 0 {
		t.Errorf("RSS of generation 2 (pid %d): %v, %v; samples %v", g.PID, rss, ok, m.Samples("hitless_generation_resident_memory_bytes"))
	}
	if s := m.Samples("hitless_build_info"); len(s) != 1 || !strings.HasPrefix(s[0]["goversion"], "go1.") || s[0]["version"] == "" {
		t.Errorf("build info %v", s)
	}
	maps.Copy(m, draining)
	checkAlerts(t, m)
}

// Metrics on a unix socket: served while hitless runs, the file gone when
// it exits.
func TestMetricsUnixSocket(t *testing.T) {
	path := filepath.Join(harness.ShortDir(t), "m.sock")
	p := start(t, harness.Options{Args: []string{"--metrics", path}})
	if got := metricsAddr(t, p); got != path {
		t.Errorf("metrics at %q, want %q", got, path)
	}
	if v, ok := scrape(t, path).Value("hitless_generations", "state", "serving"); !ok || v != 1 {
		t.Errorf("serving generations %v (%v)", v, ok)
	}
	p.Stop()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("metrics socket after hitless exited: %v", err)
	}
}

// A --metrics address that is malformed or cannot be bound is a usage
// error (exit 2) naming the flag, and no child starts.
func TestMetricsBadAddress(t *testing.T) {
	busy := freeListener(t)
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:99999", `--metrics: "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`},
		{"9180", `--metrics: "9180" is not host:port or a path`},
		{busy, "--metrics: listen tcp " + busy + ": bind: address already in use"},
	} {
		p := startRaw(t, nil, "run", "--log-format", "json", "--control", ctlSocket(t), "--metrics", tc.addr,
			"--listen", "tcp://127.0.0.1:0", "--", bin.server)
		if code := p.Wait(30 * time.Second); code != 2 {
			t.Errorf("--metrics %s: exit %d, want 2", tc.addr, code)
		}
		mustContain(t, "hitless's stderr", p.Output(), tc.want)
		if slices.ContainsFunc(p.Records(0), harness.Is("started")) {
			t.Errorf("--metrics %s: a child started", tc.addr)
		}
	}
}

// The alerting rules: the shape of a Prometheus rule file, known keys
// only.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// The scrape config: the part of Prometheus's configuration it uses,
// known keys only.
type scrapeConfig struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// templateFuncs stand for the functions Prometheus gives alert templates,
// so that a template's syntax can be checked.
var templateFuncs = template.FuncMap{}

func init() {
	for _, f := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp",
		"title", "toUpper", "toLower", "first", "label", "value", "query", "reReplaceAll", "match"} {
		templateFuncs[f] = func(...any) string { return "" }
	}
}

// checkAlerts checks configs/prometheus.yml and configs/hitless-alerts.yml
// as Prometheus would load them: valid durations, PromQL expressions and
// templates, a scrape target that is the example config's --metrics
// address; and every metric an expression names is in the scrape m.
func checkAlerts(t *testing.T, m metricstest.Metrics) {
	t.Helper()
	const dir = "../../configs"
	var sc scrapeConfig
	decodeStrict(t, filepath.Join(dir, "prometheus.yml"), &sc)
	for _, d := range []string{sc.Global.ScrapeInterval, sc.Global.EvaluationInterval} {
		if _, err := model.ParseDuration(d); err != nil {
			t.Errorf("prometheus.yml: %v", err)
		}
	}
	// The example config names users this machine may not have: read
	// its metrics address alone.
	var example struct{ Metrics string }
	if b, err := os.ReadFile(filepath.Join(dir, "hitless.yaml")); err != nil || yaml.Unmarshal(b, &example) != nil || example.Metrics == "" {
		t.Fatalf("configs/hitless.yaml: no metrics address (%v)", err)
	}
	if _, err := config.ParseMetrics(example.Metrics); err != nil {
		t.Fatalf("configs/hitless.yaml: %v", err)
	}
	if len(sc.ScrapeConfigs) != 1 || sc.ScrapeConfigs[0].MetricsPath != "/metrics" || len(sc.ScrapeConfigs[0].StaticConfigs) != 1 ||
		!slices.Equal(sc.ScrapeConfigs[0].StaticConfigs[0].Targets, []string{example.Metrics}) {
		t.Errorf("prometheus.yml scrapes %+v, want /metrics on %s, the address of configs/hitless.yaml", sc.ScrapeConfigs, example.Metrics)
	}
	if len(sc.RuleFiles) == 0 {
		t.Fatal("prometheus.yml loads no rule files")
	}

	var exprs, what []string
	for _, name := range sc.RuleFiles {
		e, w := checkRules(t, dir, name)
		exprs, what = append(exprs, e...), append(what, w...)
	}
	for i, r := range promql(t, exprs) {
		if r.Error != "" {
			t.Errorf("%s: %s", what[i], r.Error)
		}
		for _, name := range r.Metrics {
			if m[name] == nil {
				t.Errorf("%s: %s is not a metric hitless serves", what[i], name)
			}
		}
	}
}

// checkRules checks the rule file dir/name as Prometheus would load it,
// but for the expressions, which it returns with the alert each belongs
// to.
func checkRules(t *testing.T, dir, name string) (exprs, what []string) {
	t.Helper()
	var rf ruleFile
	decodeStrict(t, filepath.Join(dir, name), &rf)
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			w := fmt.Sprintf("%s: alert %q", name, r.Alert)
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("%s: a rule without an alert name or an expression", name)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for: %v", w, err)
				}
			}
			for k, text := range r.Annotations {
				// Prometheus defines these variables before the text.
				const vars = "{{$labels := .}}{{$externalLabels := .}}{{$externalURL := .}}{{$value := .}}"
				if _, err := template.New(k).Funcs(templateFuncs).Parse(vars + text); err != nil {
					t.Errorf("%s: annotation %s: %v", w, k, err)
				}
			}
			exprs, what = append(exprs, r.Expr), append(what, w)
		}
	}
	if len(exprs) == 0 {
		t.Errorf("%s: no alerts", name)
	}
	return exprs, what
}

// A promqlResult is what the tool says of one expression, as JSON.
type promqlResult struct {
	Metrics []string // the names of the metrics it selects
	Error   string   // why it does not parse
}

// promql parses exprs with Prometheus's own parser, in the tool of
// testdata/tools, a module of its own so that hitless's does not depend
// on Prometheus: for each, the metrics it selects, or why it does not
// parse.
func promql(t *testing.T, exprs []string) []promqlResult {
	t.Helper()
	tool := filepath.Join(t.TempDir(), "promql")
	if err := harness.Build("testdata/tools", tool, "./promql"); err != nil {
		t.Fatal(err)
	}
	in, err := json.Marshal(exprs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tool)
	cmd.Stdin, cmd.Stderr = bytes.NewReader(in), os.Stderr
	out, err := cmd.Output()
	var results []promqlResult
	if err == nil {
		err = json.Unmarshal(out, &results)
	}
	if err != nil || len(results) != len(exprs) {
		t.Fatalf("promql: %v: %d results for %d expressions: %s", err, len(results), len(exprs), out)
	}
	return results
}
