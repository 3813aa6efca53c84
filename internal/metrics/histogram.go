//go:build linux

package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// histogram is a Prometheus histogram whose values can be written down
// and taken back: an upgrade of hitless in place carries them, as it
// carries the counters (prometheus.Histogram cannot be set).
type histogram struct {
	desc    *prometheus.Desc
	mu      sync.Mutex
	st      histogramState
	buckets []float64 // upper bounds, ascending; +Inf implied
}

// histogramState is a histogram's values, as carried across an upgrade:
// the count in each bucket (not cumulative, the last one +Inf), by the
// buckets' upper bounds, which a later build may change.
type histogramState struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"` // len(Bounds)+1
	Sum    float64   `json:"sum"`
	Count  uint64    `json:"count"`
}

func newHistogram(name, help string, buckets []float64) *histogram {
	return &histogram{
		desc:    prometheus.NewDesc(name, help, nil, nil),
		buckets: buckets,
		st:      histogramState{Bounds: buckets, Counts: make([]uint64, len(buckets)+1)},
	}
}

func (h *histogram) Observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, _ := slices.BinarySearch(h.buckets, v) // the first bound >= v
	h.st.Counts[i]++
	h.st.Sum += v
	h.st.Count++
}

func (h *histogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *histogram) Collect(ch chan<- prometheus.Metric) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cum := make(map[float64]uint64, len(h.buckets))
	var n uint64
	for i, b := range h.buckets {
		n += h.st.Counts[i]
		cum[b] = n
	}
	ch <- prometheus.MustNewConstHistogram(h.desc, h.st.Count, h.st.Sum, cum)
}

// state returns a copy of the values.
func (h *histogram) state() histogramState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return histogramState{Bounds: slices.Clone(h.st.Bounds), Counts: slices.Clone(h.st.Counts), Sum: h.st.Sum, Count: h.st.Count}
}

// add adds carried values. A bucket whose bound this build does not have
// goes into the next bound up (its observations were at most its bound),
// and the count and sum stay exact.
func (h *histogram) add(c histogramState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, n := range c.Counts {
		j := len(h.buckets) // +Inf
		if i < len(c.Bounds) {
			j, _ = slices.BinarySearch(h.buckets, c.Bounds[i])
		}
		h.st.Counts[j] += n
	}
	h.st.Sum += c.Sum
	h.st.Count += c.Count
}
