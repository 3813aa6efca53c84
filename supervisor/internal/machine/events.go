package machine

import "time"

// CallerID names someone waiting for a verdict (a Reload or Stop call);
// 0 is nobody (a signal).
type CallerID int

// Signal is a signal by its name ("SIGTERM"): the machine compares,
// forwards and logs signals, and the driver, which knows the system's
// numbers, turns names into numbers and back.
type Signal string

// The signals the machine acts on or sends itself.
const (
	SIGHUP  Signal = "SIGHUP"  // reload
	SIGINT  Signal = "SIGINT"  // stop; a second one kills
	SIGTERM Signal = "SIGTERM" // stop
	SIGUSR1 Signal = "SIGUSR1" // forwarded to what serves
	SIGUSR2 Signal = "SIGUSR2" // forwarded to what serves
	SIGKILL Signal = "SIGKILL" // at a drain deadline, or after a watchdog's grace
	SIGABRT Signal = "SIGABRT" // when a serving generation's watchdog expires
)

// Exit is how a generation's process ended, as the driver read its wait
// status.
type Exit struct {
	Code   int    // shell style: the exit status, or 128 + the signal's number
	Signal Signal // the signal that ended it; "" if it exited
	Reason string // "exit status 1", "killed by signal SIGKILL"
}

// Events. The driver feeds them in the order they happened.
type (
	// Event is one of the Ev types.
	Event interface{ isEvent() }

	// EvSignal: a signal reached hitless.
	EvSignal struct{ Sig Signal }
	// EvReload: Reload was called; caller waits for the verdict.
	EvReload struct{ Caller CallerID }
	// EvStop: Stop was called, or Run's context ended (caller 0).
	EvStop struct{ Caller CallerID }
	// EvStatus: Status was called.
	EvStatus struct{ Caller CallerID }
	// EvSpawned and EvSpawnFailed answer ActStart, before any other event.
	EvSpawned     struct{ Gen, PID int }
	EvSpawnFailed struct {
		Gen int
		Err string
	}
	// EvReady: the generation (or a descendant) sent READY=1.
	EvReady struct{ Gen int }
	// EvExited: the generation's process was reaped. stderr holds the
	// last lines it wrote there.
	EvExited struct {
		Gen    int
		Exit   Exit
		Stderr []string
	}
	// EvTimer: an armed timer fired. stderr holds the last lines the
	// timer's generation wrote, if it has one.
	EvTimer struct {
		ID     TimerID
		Stderr []string
	}
	// EvTick: the service manager's watchdog interval passed.
	EvTick struct{}
	// EvPromote and EvRollback end the trial in progress early.
	EvPromote  struct{ Caller CallerID }
	EvRollback struct{ Caller CallerID }
	// EvWatchdog: the generation sent WATCHDOG=1, WATCHDOG=trigger, or
	// WATCHDOG_USEC=usec.
	EvWatchdog struct {
		Gen      int
		Kind     WatchdogKind
		Interval time.Duration
	}
	// EvUpgrade: Upgrade was called, to replace hitless with binary.
	EvUpgrade struct {
		Caller CallerID
		Binary string
	}
	// EvUpgradeChecked answers ActCheckUpgrade: err is why the new binary
	// was refused, "" if it passed.
	EvUpgradeChecked struct {
		ID  int
		Err string
	}
	// EvUpgradeDone: upgrade id is over: the exec failed ("failed"), or
	// this is the image it started, which restored the state ("ok"), or
	// the old image again, after the new one gave up ("rolled_back").
	EvUpgradeDone struct {
		ID             int
		Result, Reason string
		Note           string // for an upgrade that succeeded: see UpgradeResult.Note
	}
	// EvUpgradeResult: a caller asks for the verdict of the last upgrade.
	EvUpgradeResult struct{ Caller CallerID }
	// EvCancel: a caller of a reload or an upgrade gave up waiting (its
	// context ended): it gets no verdict, and is forgotten. What it asked
	// for goes on.
	EvCancel struct{ Caller CallerID }
)

// WatchdogKind says what a generation sent about its watchdog.
type WatchdogKind int

const (
	WatchdogPing     WatchdogKind = iota // WATCHDOG=1
	WatchdogTrigger                      // WATCHDOG=trigger: act as if it expired
	WatchdogInterval                     // WATCHDOG_USEC=: a new interval
)

func (EvSignal) isEvent()         {}
func (EvReload) isEvent()         {}
func (EvStop) isEvent()           {}
func (EvStatus) isEvent()         {}
func (EvSpawned) isEvent()        {}
func (EvSpawnFailed) isEvent()    {}
func (EvReady) isEvent()          {}
func (EvExited) isEvent()         {}
func (EvTimer) isEvent()          {}
func (EvTick) isEvent()           {}
func (EvPromote) isEvent()        {}
func (EvRollback) isEvent()       {}
func (EvWatchdog) isEvent()       {}
func (EvUpgrade) isEvent()        {}
func (EvUpgradeChecked) isEvent() {}
func (EvUpgradeDone) isEvent()    {}
func (EvUpgradeResult) isEvent()  {}
func (EvCancel) isEvent()         {}
