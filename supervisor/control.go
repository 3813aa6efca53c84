//go:build linux

package supervisor

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/supervisor/internal/machine"
)

// Status is a snapshot of the supervisor, for `hitless status`.
type Status struct {
	PID int `json:"pid"`
	// Binary is the file hitless runs from ("(deleted)" after it, when a
	// deploy removed it), Version its build; Started is when hitless first
	// started, before any upgrade in place.
	Binary  string    `json:"binary,omitempty"`
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started,omitzero"`
	// Upgrading: an upgrade of hitless is under way (its check, or the
	// hand-over); UpgradeQueued: one was asked for and waits for the
	// reload in flight to end.
	Upgrading     bool `json:"upgrading,omitempty"`
	UpgradeQueued bool `json:"upgrade_queued,omitempty"`
	// ReloadQueued: a reload waits for the one in flight (or for the
	// upgrade) to end.
	ReloadQueued bool               `json:"reload_queued,omitempty"`
	Generations  []GenerationStatus `json:"generations"`
	Listeners    []ListenerStatus   `json:"listeners"`
	Stopping     bool               `json:"stopping"`
	// OutputDropped counts the lines of hitless's log and of its
	// children's output that could not be written to hitless's stdout
	// or stderr (their reader was gone).
	OutputDropped OutputDropped `json:"output_lines_dropped"`
	Stats
	// HandOver counts the connections handed between generations since
	// hitless started, every generation's, exited ones included.
	HandOver *handover.Counts `json:"handover,omitempty"`
	// StandbyPID is the standby's: the next generation's process,
	// forked ahead and waiting to be given its program (see
	// Config.NoStandby); 0 when none waits.
	StandbyPID int `json:"standby_pid,omitempty"`
}

// GenerationStatus describes one generation that has not been reaped.
type GenerationStatus struct {
	ID      int       `json:"generation"`
	PID     int       `json:"pid"`
	State   State     `json:"state"`
	Started time.Time `json:"started"`
	ReadyAt time.Time `json:"ready_at,omitzero"`
	DrainAt time.Time `json:"drain_at,omitzero"`
	// TrialEndsAt is when a generation on trial takes over, unless it is
	// promoted or rolled back first.
	TrialEndsAt time.Time `json:"trial_ends_at,omitzero"`
	// WatchdogUSec is the interval, in microseconds, within which it
	// must send WATCHDOG=1; zero when none is enforced.
	WatchdogUSec int64  `json:"watchdog_usec,omitempty"`
	Status       string `json:"status,omitempty"` // the child's last STATUS=
	Stopping     bool   `json:"stopping,omitempty"`
	// RSS is the resident memory of the generation's whole process
	// group, in bytes: while two generations overlap, memory doubles.
	RSS int64 `json:"rss_bytes"`
	// HandOver counts what happened to this generation's connections in
	// hand-overs; nil when it does not take part (no channel: not
	// childproc, or with the hand-over off).
	HandOver *handover.Counts `json:"handover,omitempty"`
}

// ListenerStatus describes one socket hitless holds.
type ListenerStatus struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	Address string `json:"address"`
	FD      int    `json:"fd"`     // as the child sees it
	Source  string `json:"source"` // where hitless got it: sockets.SourceBound, SourceSystemd or SourceStore
}

// Reload starts a new generation, or joins the reload queued behind the
// one in flight, and waits for its verdict: nil once the new generation
// serves, *ReloadError if it failed (the serving generation is untouched),
// ErrStopping, or ctx's error if ctx ends first. A reload that ctx
// abandons still runs to its end; its caller is forgotten.
func (s *Supervisor) Reload(ctx context.Context) error {
	return s.ReloadAs(ctx, s.NewCaller())
}

// A Caller names one request that waits for a verdict. A program that
// carries its requests across an upgrade of hitless (as the control
// socket does) names each one before it asks (NewCaller, ReloadAs) and
// carries the name with it: in the next image the request takes its own
// place back (RejoinReload), and gets the verdict of its own reload,
// never another's.
type Caller int64

// NewCaller names a request, before it is asked: the name is known even
// if an upgrade cuts the request off on its way. Names are not reused,
// across upgrades included.
func (s *Supervisor) NewCaller() Caller { return Caller(s.callerSeq.Add(1)) }

// ReloadAs is Reload for the request named c. If ctx ends with the cause
// ErrCarried (the request is carried to the next image), c keeps its
// place for RejoinReload there, rather than giving up.
func (s *Supervisor) ReloadAs(ctx context.Context, c Caller) error {
	return s.call(ctx, request{kind: reqReload, caller: machine.CallerID(c)})
}

// RejoinReload is ReloadAs for a request that an earlier image of hitless
// took, and whose connection it handed over (package control does), or
// that this image took before an upgrade that failed: it waits for the
// verdict of the reload that request joined there, and so a request
// carried across an upgrade has one effect. A request that had not
// reached the supervisor yet (it was cut off on its way) reloads as
// ReloadAs does.
func (s *Supervisor) RejoinReload(ctx context.Context, c Caller) error {
	return s.call(ctx, request{kind: reqRejoin, caller: machine.CallerID(c)})
}

// ErrCarried is the cause (context.Cause) with which a program that
// carries requests across an upgrade (as the control socket does) ends
// their contexts: the callers keep their places, for their requests to
// take back in the next image (RejoinReload), where any other end of the
// context gives the place up.
var ErrCarried = errors.New("the request is carried to the next image")

// Stop drains every generation and waits until Run has released
// everything it holds (sockets, notify sockets) and is about to return.
func (s *Supervisor) Stop(ctx context.Context) error {
	reply := make(chan error, 1)
	if err := s.ask(ctx, request{kind: reqStop, reply: reply}); err != nil {
		if err == ErrStopping {
			return nil // Run has returned
		}
		return err
	}
	select {
	case <-reply:
		return nil
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Promote ends the trial in progress with success: the generation on
// trial serves, the one before it drains. It returns ErrNoTrial when no
// generation is on trial.
func (s *Supervisor) Promote(ctx context.Context) error {
	return s.call(ctx, request{kind: reqPromote})
}

// Rollback ends the trial in progress with a rollback: the generation on
// trial drains, the serving one goes on, and the reload's callers are
// told it was rolled back. It returns ErrNoTrial when no generation is on
// trial.
func (s *Supervisor) Rollback(ctx context.Context) error {
	return s.call(ctx, request{kind: reqRollback})
}

// call sends req to the loop, with a reply channel of its own, and waits
// for the answer: the machine's verdict, ErrStopping once Run has
// returned, or ctx's error if ctx ends first. A caller whose ctx ends
// leaves its place (see leave), unless its verdict came meanwhile: then
// that is the answer. A request the machine answers at once (promote,
// rollback, the verdict of the last upgrade) always gets its answer once
// the loop took it.
func (s *Supervisor) call(ctx context.Context, req request) error {
	reply := make(chan error, 1)
	req.reply = reply
	if req.caller == 0 {
		req.caller = machine.CallerID(s.NewCaller())
	}
	if err := s.ask(ctx, req); err != nil {
		return err
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
	}
	ack := make(chan bool, 1)
	lctx, cancel := context.WithTimeout(context.Background(), handoffTimeout)
	defer cancel()
	leave := request{kind: reqLeave, caller: req.caller, carried: errors.Is(context.Cause(ctx), ErrCarried), ack: ack}
	if s.ask(lctx, leave) == nil && !<-ack {
		return <-reply
	}
	select {
	case err := <-reply:
		return err
	default:
		return ctx.Err()
	}
}

// Status returns a snapshot of the generations and counters.
func (s *Supervisor) Status(ctx context.Context) (Status, error) {
	c := make(chan Status, 1)
	if err := s.ask(ctx, request{kind: reqStatus, status: c}); err != nil {
		return Status{}, err
	}
	select {
	case st := <-c:
		return st, nil
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

func (s *Supervisor) ask(ctx context.Context, req request) error {
	select {
	case s.reqs <- req:
		return nil
	case <-s.done:
		return ErrStopping
	case <-ctx.Done():
		return ctx.Err()
	}
}

// status completes the machine's view with what the driver knows.
func (s *Supervisor) status(v machine.View) Status {
	st := Status{PID: os.Getpid(), Version: s.cfg.Version, Started: s.started, Upgrading: v.Upgrading, Stopping: v.Stopping, Stats: v.Stats,
		UpgradeQueued: v.UpgradeQueued, ReloadQueued: v.ReloadQueued, OutputDropped: s.cfg.Outputs.dropped()}
	st.Binary, _ = os.Readlink("/proc/self/exe")
	pgids := make([]int, len(v.Gens))
	for i, g := range v.Gens {
		pgids[i] = g.PID // each generation leads a process group of its own
	}
	rss := groupsRSS(pgids)
	for _, g := range v.Gens {
		gs := GenerationStatus{
			ID: g.ID, PID: g.PID, State: g.State, Started: g.Started,
			ReadyAt: g.ReadyAt, DrainAt: g.DrainAt, TrialEndsAt: g.TrialEnds, WatchdogUSec: g.Watchdog.Microseconds(),
			RSS: rss[g.PID],
		}
		if c := s.children[g.ID]; c != nil {
			gs.Status, gs.Stopping = c.lastStatus()
		}
		st.Generations = append(st.Generations, gs)
	}
	s.handOverCounts(&st)
	if sh := s.standby; sh != nil && sh.alive() {
		st.StandbyPID = sh.pid
	}
	for i, sock := range s.sockets {
		st.Listeners = append(st.Listeners, ListenerStatus{
			Name: sock.Spec.Name, Network: sock.Spec.Network, Address: sock.Addr, FD: 3 + i, Source: sock.Source,
		})
	}
	return st
}
