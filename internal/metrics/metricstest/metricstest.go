// Package metricstest reads what "hitless run --metrics" serves, for
// tests and tools: Scrape gets /metrics over TCP or a unix socket and
// parses the Prometheus text format as a Prometheus server would, and
// Metrics finds a sample by name and labels.
//
// Limits: the text format only (not protobuf or OpenMetrics), and one
// scrape per call, with a fixed timeout of 20 s.
package metricstest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of hitless's /metrics, parsed: the metric
// families by name.
type Metrics map[string]*dto.MetricFamily

// Scrape gets /metrics from addr, host:port or a unix socket path, and
// parses it as the Prometheus text format, as a Prometheus server would.
func Scrape(addr string) (Metrics, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	url := "http://" + addr + "/metrics"
	if strings.Contains(addr, "/") {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}
		url = "http://unix/metrics"
	}
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("scrape %s: %s: %s", url, resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return fams, nil
}

// Value returns the value of the counter, gauge or untyped sample of the
// family name whose labels include labels, given as name, value pairs;
// ok is false when there is none.
func (m Metrics) Value(name string, labels ...string) (v float64, ok bool) {
	mt := m.find(name, labels)
	switch {
	case mt == nil:
		return 0, false
	case mt.Counter != nil:
		return mt.Counter.GetValue(), true
	case mt.Gauge != nil:
		return mt.Gauge.GetValue(), true
	case mt.Untyped != nil:
		return mt.Untyped.GetValue(), true
	}
	return 0, false
}

// Histogram returns the count and sum of the histogram name whose labels
// include labels; ok is false when there is none.
func (m Metrics) Histogram(name string, labels ...string) (count uint64, sum float64, ok bool) {
	mt := m.find(name, labels)
	if mt == nil || mt.Histogram == nil {
		return 0, 0, false
	}
	return mt.Histogram.GetSampleCount(), mt.Histogram.GetSampleSum(), true
}

// Samples returns the label sets of the family name, one map per sample.
func (m Metrics) Samples(name string) []map[string]string {
	f := m[name]
	if f == nil {
		return nil
	}
	var out []map[string]string
	for _, mt := range f.Metric {
		l := map[string]string{}
		for _, p := range mt.Label {
			l[p.GetName()] = p.GetValue()
		}
		out = append(out, l)
	}
	return out
}

func (m Metrics) find(name string, labels []string) *dto.Metric {
	f := m[name]
	if f == nil {
		return nil
	}
	for _, mt := range f.Metric {
		if hasLabels(mt, labels) {
			return mt
		}
	}
	return nil
}

func hasLabels(mt *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		if !slices.ContainsFunc(mt.Label, func(p *dto.LabelPair) bool {
			return p.GetName() == labels[i] && p.GetValue() == labels[i+1]
		}) {
			return false
		}
	}
	return true
}
