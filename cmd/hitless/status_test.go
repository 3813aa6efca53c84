//go:build linux

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hitless/hitless/supervisor"
)

// A generation on trial shows the time its trial has left, and the
// watchdog column appears only when a watchdog is enforced.
func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	st := supervisor.Status{PID: 10,
		Generations: []supervisor.GenerationStatus{
			{ID: 2, PID: 200, State: supervisor.Serving, Started: now.Add(-time.Minute), RSS: 8 << 20, WatchdogUSec: 2_000_000},
			{ID: 3, PID: 300, State: supervisor.Trial, Started: now.Add(-2 * time.Second), TrialEndsAt: now.Add(28 * time.Second), RSS: 4 << 20, WatchdogUSec: 2_000_000, Status: "warming"},
		},
		Stats: supervisor.Stats{ReloadsOK: 1, ReloadsFailed: 2, ReloadsRolledBack: 1, Restarts: 3, WatchdogKills: 1},
	}
	var b strings.Builder
	printStatus(&b, "/run/c.sock", st, now)
	want := `hitless pid 10, running, control /run/c.sock
GENERATION  PID  STATE            AGE   RSS      WATCHDOG  STATUS
2           200  serving          1m0s  8.0 MiB  2s        -
3           300  trial, 28s left  2s    4.0 MiB  2s        warming
reloads: 1 ok, 2 failed, 1 rolled back; restarts after a crash: 3; watchdog kills: 1
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}

	st.Generations = st.Generations[:1]
	st.Generations[0].WatchdogUSec = 0
	st.StandbyPID = 201
	b.Reset()
	printStatus(&b, "/run/c.sock", st, now)
	if strings.Contains(b.String(), "WATCHDOG") || !strings.Contains(b.String(), "2           200  serving  1m0s  8.0 MiB  -\n") ||
		!strings.HasPrefix(b.String(), "hitless pid 10, running, standby pid 201, control /run/c.sock\n") {
		t.Errorf("without a watchdog:\n%s", b.String())
	}
}
