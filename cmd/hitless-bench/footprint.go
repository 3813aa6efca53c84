package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// footprint is what hitless and its watcher hold, together and apart.
type footprint struct {
	hitless, watcher harness.Usage
}

// readFootprint reads the usage of hitless (pid) and of its watcher, the
// child of hitless started in the watcher's hidden mode.
func readFootprint(pid int) (footprint, error) {
	var fp footprint
	var err error
	if fp.hitless, err = harness.ProcUsage(pid); err != nil {
		return fp, err
	}
	w, err := watcherOf(pid)
	if err != nil {
		return fp, err
	}
	fp.watcher, err = harness.ProcUsage(w)
	return fp, err
}

func (f footprint) pss() int64  { return f.hitless.PSS + f.watcher.PSS }
func (f footprint) anon() int64 { return f.hitless.Anon + f.watcher.Anon }

// String says it for a report: PSS and anonymous memory, together and
// each process's.
func (f footprint) String() string {
	return fmt.Sprintf("PSS %s (hitless %s + watcher %s), of which anonymous %s (%s + %s)",
		mib(f.pss()), mib(f.hitless.PSS), mib(f.watcher.PSS), mib(f.anon()), mib(f.hitless.Anon), mib(f.watcher.Anon))
}

// reloadSteps are the steps of a reload, in the order of hitless's
// "reload steps" debug record (see supervisor/shim.go).
var reloadSteps = []string{"request_to_fork", "fork", "shim_start", "shim", "child_start", "ready_to_serving", "serving_to_signal"}

// stepMedians renders the median of each step over records, "name
// median", in order.
func stepMedians(records []harness.Record) string {
	var parts []string
	for _, name := range append(reloadSteps, "total") {
		var ds []time.Duration
		for _, r := range records {
			ds = append(ds, time.Duration(r.Int(name)))
		}
		parts = append(parts, name+" "+ms(median(ds)))
	}
	return strings.Join(parts, ", ")
}
