package harness

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Tally counts the outcomes of requests: successes with their latency,
// failures by class with the first error of each class as an example. Its
// zero value is ready to use, and it is safe for concurrent use.
type Tally struct {
	mu       sync.Mutex
	ok       int64
	failures map[Class]int
	examples map[Class]string
	latency  []time.Duration
	waiters  []*okWaiter
}

type okWaiter struct {
	ok      int64 // wake when the successes reach this
	reached chan struct{}
}

// AddOK counts a success that took latency.
func (t *Tally) AddOK(latency time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ok++
	t.latency = append(t.latency, latency)
	t.waiters = slices.DeleteFunc(t.waiters, func(w *okWaiter) bool {
		if t.ok < w.ok {
			return false
		}
		close(w.reached)
		return true
	})
}

// AddFailure counts a failure and returns its class.
func (t *Tally) AddFailure(err error) Class {
	c := Classify(err)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failures == nil {
		t.failures, t.examples = map[Class]int{}, map[Class]string{}
	}
	t.failures[c]++
	if _, ok := t.examples[c]; !ok {
		t.examples[c] = err.Error()
	}
	return c
}

// OK is the number of successes.
func (t *Tally) OK() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ok
}

// Failed is the number of failures.
func (t *Tally) Failed() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, k := range t.failures {
		n += k
	}
	return int64(n)
}

// Sent is the number of requests counted, successes and failures.
func (t *Tally) Sent() int64 { return t.OK() + t.Failed() }

// Count is the number of failures of class c.
func (t *Tally) Count(c Class) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failures[c]
}

// Failures returns the failures by class (nil for none).
func (t *Tally) Failures() map[Class]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.failures)
}

// Latency returns the p-th percentile (0 < p <= 100) of the successes'
// latency.
func (t *Tally) Latency(p float64) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Percentile(t.latency, p)
}

// String is "ok=N failed=N", then each class that failed with its count
// and first error.
func (t *Tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var s strings.Builder
	n := 0
	for _, k := range t.failures {
		n += k
	}
	fmt.Fprintf(&s, "ok=%d failed=%d", t.ok, n)
	for _, c := range Classes {
		if k := t.failures[c]; k > 0 {
			fmt.Fprintf(&s, "; %s %d (%s)", c, k, t.examples[c])
		}
	}
	return s.String()
}

// waitOK waits until there are more successes than now, for at most d, or
// until stop is closed.
func (t *Tally) waitOK(more int64, d time.Duration, stop <-chan struct{}) error {
	t.mu.Lock()
	w := &okWaiter{ok: t.ok + more, reached: make(chan struct{})}
	if more <= 0 {
		t.mu.Unlock()
		return nil
	}
	t.waiters = append(t.waiters, w)
	t.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	var why string
	select {
	case <-w.reached:
		return nil
	case <-timer.C:
		why = fmt.Sprintf("not within %v", d)
	case <-stop:
		why = "the load ended first"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ok >= w.ok {
		return nil
	}
	t.waiters = slices.DeleteFunc(t.waiters, func(x *okWaiter) bool { return x == w })
	return fmt.Errorf("%d more successful requests: %s (%d of %d)", more, why, t.ok, w.ok)
}

// Percentile returns the p-th percentile (0 < p <= 100) of d: the
// smallest value that at least p% of d does not exceed; 0 for none.
func Percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}
