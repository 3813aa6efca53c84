package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// ---- 10: a bad release, with and without a trial ----

// benchTrial reloads, under POST load, into a release whose every start
// crashes 1 s after READY=1: once with hitless's defaults, where the old
// generation drains as soon as the new one is ready and hitless can then
// only restart the bad release, crash after crash; and once with
// --trial, where the crash rolls the reload back and the old generation,
// never signalled, serves on.
func benchTrial(s *scenario) []row {
	p := s.plan
	clients := fastClients()
	var rows []row
	for i, v := range []struct {
		name  string
		flags []string
	}{
		{"Bad release (crashes 1 s after READY=1), no trial", nil},
		{"The same with --trial 30s", []string{"--trial", "30s"}},
	} {
		mode := filepath.Join(s.tmp, fmt.Sprintf("mode-%d", i))
		s.check(os.WriteFile(mode, []byte("serve"), 0o644))
		h := s.startHitless(v.flags, "-mode-file", mode)
		loads := startLoads(clients, h.Addr(), p.trialRun)
		start := time.Now()
		// The load runs a while before the reload, and to its time bound
		// after it: the pause paces the run, it waits for nothing.
		time.Sleep(p.trialRun / 5)
		s.check(os.WriteFile(mode, []byte("crash:1s"), 0o644))
		m := h.Mark()
		t0 := time.Now()
		h.Signal(syscall.SIGHUP)
		tallies := endLoads(loads, (*harness.Load).Wait)
		elapsed := time.Since(start)
		st := h.Status()
		crashes := 0
		var rolledBack time.Duration
		for _, r := range h.Records(m) {
			switch r.Msg() {
			case "serving child died":
				crashes++
			case "reload rolled back":
				rolledBack = r.At.Sub(t0)
			}
		}
		g, serving := st.Serving()
		now := "nothing serves at the end (a restart is pending)"
		if serving {
			now = fmt.Sprintf("generation %d serves at the end", g.Generation)
		}
		var longest time.Duration
		for _, t := range tallies {
			longest = max(longest, t.Latency(100))
		}
		other := fmt.Sprintf("one SIGHUP %v into the run; ", p.trialRun/5)
		if st.ReloadsRolledBack > 0 {
			other += fmt.Sprintf("rolled back %s after it (%d rollback), generation 1 never signalled; ", ms(rolledBack), st.ReloadsRolledBack)
		}
		if crashes > 0 {
			other += fmt.Sprintf("then %d crashes of the serving child, each restarted with the bad release; ", crashes)
		} else {
			other += "no serving child crashed; "
		}
		other += fmt.Sprintf("longest successful request %s; %s", ms(longest), now)
		h.Stop()
		rows = append(rows, clientRows("10", v.name, other, fmt.Sprintf(", %v", p.trialRun), clients, tallies, elapsed)...)
		logTotals(v.name, clients, tallies)
	}
	return rows
}
