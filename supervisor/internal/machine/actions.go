package machine

import (
	"log/slog"
	"time"
)

// Actions, carried out by the driver in the order given.
type (
	// Action is one of the Act types.
	Action interface{ isAction() }

	// ActStart: spawn generation gen; answer with EvSpawned or
	// EvSpawnFailed before anything else.
	ActStart struct {
		Gen  int
		Kind StartKind
	}
	// ActSignal: send sig to the process group of pid.
	ActSignal struct {
		Gen, PID int
		Sig      Signal
	}
	// ActArm: fire EvTimer{id} after the duration. gen is the generation
	// the timer belongs to (0 for none), whose stderr the event carries.
	ActArm struct {
		ID    TimerID
		Kind  TimerKind
		Gen   int
		After time.Duration
	}
	// ActDisarm: stop timer ID; if it fired already, its EvTimer is stale.
	ActDisarm struct{ ID TimerID }
	// ActReply: the verdict for caller: nil, *ReloadError or ErrStopping.
	ActReply struct {
		Caller CallerID
		Err    error
	}
	// ActStatus: answer caller with the machine's view.
	ActStatus struct {
		Caller CallerID
		View   View
	}
	// ActNotify: tell the service manager.
	ActNotify struct {
		What NotifyKind
		Text string
	}
	// ActLog: write a log record.
	ActLog struct {
		Level slog.Level
		Msg   string
		Attrs []any
	}
	// ActForget: the generation exited; release what the driver holds
	// for it.
	ActForget struct{ Gen int }
	// ActRelease: a stop began; close hitless's copies of the sockets, so
	// that late clients are refused instead of queued behind nobody.
	ActRelease struct{}
	// ActExit: every generation has exited; Run returns err. The stop
	// callers get their reply once hitless has released everything.
	ActExit struct {
		Err     error
		Callers []CallerID
	}
	// ActObserve: a measurement for the metrics (and, for a reload, the
	// debug log's steps of generation Gen).
	ActObserve struct {
		What     ObserveKind
		Gen      int
		Duration time.Duration
	}
	// ActCheckUpgrade: run the new binary's check; answer with
	// EvUpgradeChecked.
	ActCheckUpgrade struct {
		ID     int
		Binary string
	}
	// ActExecUpgrade: replace this image with the checked binary, handing
	// the state over; if that fails, answer with EvUpgradeDone. The
	// callers' answer comes from the new image.
	ActExecUpgrade struct{ ID int }
	// ActCancelCheck: kill the check of upgrade id; its EvUpgradeChecked
	// will be stale.
	ActCancelCheck struct{ ID int }
)

// ObserveKind says what a measurement is of.
type ObserveKind int

const (
	ObserveReload ObserveKind = iota // from the reload's request to the new generation serving
	ObserveDrain                     // from the drain signal to the exit
)

func (ActStart) isAction()        {}
func (ActSignal) isAction()       {}
func (ActArm) isAction()          {}
func (ActDisarm) isAction()       {}
func (ActReply) isAction()        {}
func (ActStatus) isAction()       {}
func (ActNotify) isAction()       {}
func (ActLog) isAction()          {}
func (ActForget) isAction()       {}
func (ActRelease) isAction()      {}
func (ActExit) isAction()         {}
func (ActObserve) isAction()      {}
func (ActCheckUpgrade) isAction() {}
func (ActExecUpgrade) isAction()  {}
func (ActCancelCheck) isAction()  {}

// NotifyKind says what to tell the service manager.
type NotifyKind int

const (
	NotifyReady     NotifyKind = iota // READY=1, with STATUS=text
	NotifyReloading                   // RELOADING=1 and MONOTONIC_USEC
	NotifyStopping                    // STOPPING=1
	NotifyStatus                      // STATUS=text
	NotifyWatchdog                    // WATCHDOG=1
)

// View is what the machine knows for Status.
type View struct {
	Gens                               []GenView
	Stopping, Upgrading, UpgradeQueued bool
	ReloadQueued                       bool
	Stats                              Stats
}

// GenView is a generation in View.
type GenView struct {
	ID, PID                   int
	State                     State
	Started, ReadyAt, DrainAt time.Time
	TrialEnds                 time.Time
	Watchdog                  time.Duration // 0 when not enforced
}

func (m *Machine) view() View {
	v := View{Stopping: m.stopping, Upgrading: m.upgrading, UpgradeQueued: m.upgradeQueued, ReloadQueued: m.pending, Stats: m.stats}
	for _, g := range m.gens {
		gv := GenView{ID: g.id, PID: g.pid, State: g.state, Started: g.started, ReadyAt: g.readyAt, DrainAt: g.drainAt, TrialEnds: g.trialEnds}
		if g.watchdog != 0 {
			gv.Watchdog = g.wdInterval
		}
		v.Gens = append(v.Gens, gv)
	}
	return v
}
