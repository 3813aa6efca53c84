package machine

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// The machine's verdicts, as the supervisor's callers get them (package
// supervisor names each of these as its own).

// Stats counts what happened to reloads.
type Stats struct {
	ReloadsOK         int `json:"reloads_ok"`
	ReloadsFailed     int `json:"reloads_failed"`
	ReloadsRolledBack int `json:"reloads_rolled_back"` // during their trial
	Restarts          int `json:"restarts"`
	WatchdogKills     int `json:"watchdog_kills"`
	UpgradesOK        int `json:"upgrades_ok"`
	UpgradesFailed    int `json:"upgrades_failed"` // refused, failed or rolled back, all told
	// Of those that failed, refused before the swap, and rolled back
	// after it.
	UpgradesRefused    int `json:"upgrades_refused"`
	UpgradesRolledBack int `json:"upgrades_rolled_back"`
	// LastUpgrade is the last upgrade of hitless itself, if any.
	LastUpgrade   *UpgradeResult `json:"last_upgrade,omitempty"`
	LastFailure   string         `json:"last_failure,omitempty"`
	LastFailureAt time.Time      `json:"last_failure_at,omitzero"`
}

// ReloadError says why a new generation did not take over. The serving
// generation, if any, is untouched.
type ReloadError struct {
	Generation int
	PID        int      // 0 if it never started
	Reason     string   // exit status, signal, timeout or start error
	Stderr     []string // the last lines it wrote to stderr
	// RolledBack is set when it was ready but failed its trial: it
	// served beside the old generation for a while, which serves on.
	RolledBack bool
}

func (e *ReloadError) Error() string {
	s := fmt.Sprintf("generation %d", e.Generation)
	if e.PID > 0 {
		s += fmt.Sprintf(" (pid %d)", e.PID)
	}
	s += " failed: " + e.Reason
	if len(e.Stderr) > 0 {
		s += ": last stderr: " + e.Stderr[len(e.Stderr)-1]
	}
	return s
}

// ExitError is returned by Run when the last serving child ended with a
// status other than 0 or hitless's own drain signal; Code is its
// shell-style exit code.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("child exited with code %d", e.Code) }

// ErrStopping is returned to reloads asked for or queued after a stop.
var ErrStopping = errors.New("hitless is stopping")

// ErrNoTrial is returned by Promote and Rollback when no generation is
// on trial.
var ErrNoTrial = errors.New("no generation is on trial")

// ErrNoUpgrade is returned by UpgradeResult when hitless was never
// upgraded.
var ErrNoUpgrade = errors.New("hitless was not upgraded")

// UpgradeResult is the verdict of an upgrade of hitless itself.
type UpgradeResult struct {
	ID int `json:"id"`
	// Result is ok, refused (the new binary failed its check; nothing
	// changed), failed (the exec failed; nothing changed) or rolled_back
	// (the new image could not restore the state and ran the old one
	// again, which serves on with everything).
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
	// Note is what the caller of an upgrade that succeeded should know:
	// settings in the config file that changed since hitless started,
	// which take effect at the next start.
	Note   string    `json:"note,omitempty"`
	At     time.Time `json:"at"`
	Binary string    `json:"binary"`
}

// UpgradeBusyError refuses an upgrade to one binary while an upgrade to
// another is queued or under way: its verdict would not be the caller's.
type UpgradeBusyError struct {
	Binary string // of the upgrade under way
	Asked  string
}

func (e *UpgradeBusyError) Error() string {
	return fmt.Sprintf("an upgrade to %s is under way; ask for %s again once it is over", e.Binary, e.Asked)
}

// UpgradeError is an upgrade that did not happen, and why.
type UpgradeError struct{ UpgradeResult }

func (e *UpgradeError) Error() string {
	return fmt.Sprintf("upgrade %s: %s", strings.ReplaceAll(e.Result, "_", " "), e.Reason)
}
