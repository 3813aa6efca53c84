package harness

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Status is what `hitless status --json` prints. Its fields mirror the
// JSON, not the supervisor's Go types, so that a test fails when the
// JSON that scripts read changes.
type Status struct {
	PID           int          `json:"pid"`
	Generations   []Generation `json:"generations"`
	Listeners     []Listener   `json:"listeners"`
	Stopping      bool         `json:"stopping"`
	ReloadsOK     int          `json:"reloads_ok"`
	ReloadsFailed int          `json:"reloads_failed"` // starts that failed: reloads, and restarts after a crash
	// ReloadsRolledBack counts reloads that were ready, then failed
	// their trial.
	ReloadsRolledBack int       `json:"reloads_rolled_back"`
	Restarts          int       `json:"restarts"`       // restarts begun after a crash
	WatchdogKills     int       `json:"watchdog_kills"` // serving children aborted by their watchdog
	LastFailure       string    `json:"last_failure"`
	LastFailureAt     time.Time `json:"last_failure_at"`
	// The running image, and its upgrades in place.
	Binary         string    `json:"binary"`
	Version        string    `json:"version"`
	Started        time.Time `json:"started"` // before any upgrade
	UpgradesOK     int       `json:"upgrades_ok"`
	UpgradesFailed int       `json:"upgrades_failed"`
	LastUpgrade    *Upgrade  `json:"last_upgrade"`
	// What waits: an upgrade running or queued behind a reload, a
	// reload queued behind the one in flight (or an upgrade).
	Upgrading     bool `json:"upgrading"`
	UpgradeQueued bool `json:"upgrade_queued"`
	ReloadQueued  bool `json:"reload_queued"`
	// OutputDropped counts the lines hitless could not write to its
	// stdout and stderr (the reader was gone).
	OutputDropped struct {
		Stdout int64 `json:"stdout"`
		Stderr int64 `json:"stderr"`
	} `json:"output_lines_dropped"`
	// HandOver counts connections handed between generations since
	// hitless started.
	HandOver *HandOver `json:"handover"`
	// StandbyPID is the process forked ahead for the next generation; 0
	// when none waits.
	StandbyPID int `json:"standby_pid"`
}

// HandOver counts what happened to connections in hand-overs between
// generations (see package internal/handover's Counts).
type HandOver struct {
	Handed     int `json:"handed"`
	Adopted    int `json:"adopted"`
	Refused    int `json:"refused"`
	Lost       int `json:"lost"`
	Closed     int `json:"closed"`
	ClosedIdle int `json:"closed_idle"`
}

// Upgrade is the verdict of an upgrade of hitless itself.
type Upgrade struct {
	ID     int    `json:"id"`
	Result string `json:"result"` // ok, refused, failed, rolled_back
	Reason string `json:"reason"`
	Binary string `json:"binary"`
}

// Generation is one generation that hitless has not reaped yet.
type Generation struct {
	Generation int       `json:"generation"`
	PID        int       `json:"pid"`
	State      string    `json:"state"` // one of the State constants
	Started    time.Time `json:"started"`
	ReadyAt    time.Time `json:"ready_at"`
	DrainAt    time.Time `json:"drain_at"`
	// TrialEndsAt is when a generation on trial takes over.
	TrialEndsAt  time.Time `json:"trial_ends_at"`
	WatchdogUSec int64     `json:"watchdog_usec"` // its watchdog interval; 0 for none
	Status       string    `json:"status"`        // the child's last STATUS=
	Stopping     bool      `json:"stopping"`
	RSS          int64     `json:"rss_bytes"` // of its whole process group
	// HandOver is nil for a generation that does not take part.
	HandOver *HandOver `json:"handover"`
}

// The states of a generation.
const (
	StateStarting = "starting" // started, not ready yet
	StateTrial    = "trial"    // ready, serving beside the serving one until its trial ends
	StateServing  = "serving"
	StateDraining = "draining" // told to stop, finishing its work
	StateFailed   = "failed"   // did not become ready; being stopped
)

// Listener is one socket hitless holds.
type Listener struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	Address string `json:"address"`
	FD      int    `json:"fd"`
	Source  string `json:"source"` // bound, systemd or store
}

// Serving returns the serving generation, if one serves.
func (s Status) Serving() (Generation, bool) {
	for _, g := range s.Generations {
		if g.State == StateServing {
			return g, true
		}
	}
	return Generation{}, false
}

// Gen returns generation n, if hitless still has it.
func (s Status) Gen(n int) (Generation, bool) {
	for _, g := range s.Generations {
		if g.Generation == n {
			return g, true
		}
	}
	return Generation{}, false
}

// statusPoll is the pause between two polls of the status.
const statusPoll = 10 * time.Millisecond

// Status runs `hitless status --json` against the instance's control
// socket and decodes what it prints.
func (h *Hitless) Status() Status {
	h.t.Helper()
	st, err := h.status()
	if err != nil {
		h.t.Fatalf("%v", err)
	}
	return st
}

func (h *Hitless) status() (Status, error) {
	var st Status
	if h.control == "" {
		return st, fmt.Errorf("hitless status: the control socket is not known")
	}
	r, err := RunCLI(20*time.Second, h.client, "status", "--json", "--control", h.control)
	if err != nil {
		return st, fmt.Errorf("hitless status: %w", err)
	}
	if r.Code != 0 {
		return st, fmt.Errorf("hitless status: exit %d: %s", r.Code, strings.TrimSpace(r.Stderr))
	}
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		return st, fmt.Errorf("hitless status --json: %w\n%s", err, r.Stdout)
	}
	return st, nil
}

// WaitStatus polls the status until pred holds, and returns that status.
// It fails if d passes first, or if hitless exits.
func (h *Hitless) WaitStatus(d time.Duration, pred func(Status) bool) Status {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st, err := h.status()
		if err == nil && pred(st) {
			return st
		}
		select {
		case <-h.exited:
			h.t.Fatalf("hitless exited (%v) before the awaited status", h.state)
		default:
		}
		if time.Now().After(deadline) {
			if err != nil {
				h.t.Fatalf("no awaited status within %v: %v", d, err)
			}
			h.t.Fatalf("no awaited status within %v; the last: %+v", d, st)
		}
		t := time.NewTimer(statusPoll)
		select {
		case <-t.C:
		case <-h.exited:
		}
		t.Stop()
	}
}
