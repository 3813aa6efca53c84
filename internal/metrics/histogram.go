//go:build linux

package metrics

import (
	"math"
	"slices"
	"sync"
)

// histogram is a Prometheus histogram with fixed upper bounds, whose
// values can be written down and taken back: an upgrade of hitless in
// place carries them, as it carries the counters. Observe, family, state
// and add may be called from any goroutine.
type histogram struct {
	name, help string
	buckets    []float64 // upper bounds, ascending; +Inf implied

	mu sync.Mutex
	st histogramState
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
	return &histogram{name: name, help: help, buckets: buckets,
		st: histogramState{Bounds: buckets, Counts: make([]uint64, len(buckets)+1)}}
}

func (h *histogram) Observe(v float64) {
	i, _ := slices.BinarySearch(h.buckets, v) // the first bound >= v: buckets are "le"
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.Counts[i]++
	h.st.Sum += v
	h.st.Count++
}

// family is the histogram in the text format: cumulative buckets, the
// sum and the count.
func (h *histogram) family() family {
	st := h.state()
	f := family{name: h.name, help: h.help, typ: "histogram"}
	var n uint64
	for i, c := range st.Counts {
		n += c
		le := math.Inf(+1)
		if i < len(h.buckets) {
			le = h.buckets[i]
		}
		f.samples = append(f.samples, sample{suffix: "_bucket", labels: []string{"le", formatFloat(le)}, value: float64(n)})
	}
	f.samples = append(f.samples,
		sample{suffix: "_sum", value: st.Sum},
		sample{suffix: "_count", value: float64(st.Count)})
	return f
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
