package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// footprint is what hitless holds at rest, together and process by
// process: hitless, its watcher and its standby (the next generation's
// process, forked ahead; zero if none waits).
type footprint struct {
	hitless, watcher, standby harness.Usage
}

// readFootprint reads the usage of hitless (pid) and of its helpers, its
// children in the watcher's and the shim's hidden modes.
func readFootprint(pid int) (footprint, error) {
	var fp footprint
	var err error
	if fp.hitless, err = harness.ProcUsage(pid); err != nil {
		return fp, err
	}
	w, sb, err := helpersOf(pid)
	if err != nil {
		return fp, err
	}
	if fp.watcher, err = harness.ProcUsage(w); err != nil {
		return fp, err
	}
	if sb != 0 {
		// It may be taken by a start as it is read: then none waits.
		if u, err := harness.ProcUsage(sb); err == nil {
			fp.standby = u
		}
	}
	return fp, nil
}

func (f footprint) pss() int64  { return f.hitless.PSS + f.watcher.PSS + f.standby.PSS }
func (f footprint) anon() int64 { return f.hitless.Anon + f.watcher.Anon + f.standby.Anon }

// String says it for a report: PSS and anonymous memory, together and
// each process's.
func (f footprint) String() string {
	return fmt.Sprintf("PSS %s (hitless %s + watcher %s + standby %s), of which anonymous %s (%s + %s + %s)",
		mib(f.pss()), mib(f.hitless.PSS), mib(f.watcher.PSS), mib(f.standby.PSS),
		mib(f.anon()), mib(f.hitless.Anon), mib(f.watcher.Anon), mib(f.standby.Anon))
}

// reloadSteps are the steps of a reload, in the order of hitless's
// "reload steps" debug record (see supervisor/shim.go): a start that
// takes the standby has request_to_begin where one that forks has
// request_to_fork, fork and shim_start.
var reloadSteps = []string{"request_to_fork", "fork", "shim_start", "request_to_begin", "shim", "child_start", "ready_to_serving", "serving_to_signal"}

// stepMedians renders the median of each step over records, "name
// median", in order.
func stepMedians(records []harness.Record) string {
	var parts []string
	for _, name := range append(reloadSteps, "total") {
		var ds []time.Duration
		for _, r := range records {
			if _, ok := r.Fields[name]; ok {
				ds = append(ds, time.Duration(r.Int(name)))
			}
		}
		switch {
		case len(ds) == 0:
		case len(ds) < len(records):
			parts = append(parts, fmt.Sprintf("%s %s (%d of %d reloads)", name, ms(median(ds)), len(ds), len(records)))
		default:
			parts = append(parts, name+" "+ms(median(ds)))
		}
	}
	return strings.Join(parts, ", ")
}
