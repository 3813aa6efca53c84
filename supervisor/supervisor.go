//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/supervisor/internal/hidden"
	"github.com/hitless/hitless/supervisor/internal/machine"
	"github.com/hitless/hitless/supervisor/sockets"
	"github.com/hitless/hitless/upgrade"
)

// Supervisor holds the sockets and runs generations of the child. Create
// it with New, which binds the sockets, then call Run once.
//
// It is the driver of the state machine (package machine): one goroutine
// (Run's) feeds the machine every event in order and carries out the
// actions it returns. Other goroutines only observe (a child's exit, its
// READY=1, a timer) and post what they saw to that goroutine.
type Supervisor struct {
	cfg     Config
	log     *slog.Logger
	sockets []*sockets.Socket
	sigc    chan os.Signal // caught from New on
	// sigCaught: sigc is caught on already (an upgrade's new image takes
	// the channel its first moments caught signals on).
	sigCaught bool
	os        osEnv

	// What the fd store needs, done by Run.
	storePlan sockets.StorePlan

	events   chan machine.Event
	reqs     chan request
	loopDone chan struct{} // closed when the loop has returned
	done     chan struct{} // closed when Run has released everything

	// Owned by Run's goroutine.
	m           *machine.Machine
	started     time.Time // when hitless first started, before any upgrade
	checked     chan checked
	cancelCheck context.CancelFunc // of the check running, if any
	checkID     int                // the upgrade whose check runs
	upgradeBin  *upgrade.Binary    // checked, to exec
	restored    *restoredState     // set by Restore until Run resumes it
	rundir      *rundir            // private notify sockets live here
	relay       *handover.Relay    // connections handed between generations (connhandover.go)
	reaper      *reaper
	watcher     *watcher
	runningDue  <-chan time.Time // when to tell the watcher an image runs again (see runningGrace)
	children    map[int]*child
	timers      map[machine.TimerID]*armed
	callers     map[machine.CallerID]request
	// callerSeq names the callers (NewCaller): any goroutine takes the
	// next number, before it asks.
	callerSeq atomic.Int64
	// orphans are the callers of a reload whose requests are carried to
	// the next image (see RejoinReload), by an earlier image or by this
	// one during an upgrade: the verdict waits here for the carried
	// request to ask for it.
	orphans       map[machine.CallerID]*orphan
	exit          *machine.ActExit
	lingering     []*child       // reaped, but a descendant still holds its output
	standby       *shimProc      // the next generation's process, forked ahead (see standby.go)
	standbyFailed bool           // a standby could not be forked: none is tried before the next start
	steps         *pendingSteps  // a reload that serves, to log once its step's actions are done
	stepAt        int64          // when the last step of the machine began (CLOCK_MONOTONIC, see now)
	bg            sync.WaitGroup // exit watchers, and start messages larger than their pipe (see shimProc.begin)
	readers       sync.WaitGroup // notify readers
	exiting       sync.WaitGroup // exits reaped but not yet fed to the machine
	closeOnce     sync.Once
}

// osEnv is the operating system as the driver uses it: starting a
// generation, signalling a process group, and replacing this image with
// a new binary. Tests replace it to run the driver without children, or
// to hand an upgrade over within one process.
type osEnv struct {
	spawn  func(c *child) error // sets c.pid before anything reads it
	signal func(pgid int, sig syscall.Signal) error
	// mainThread reports whether the loop runs on the main thread, which
	// every child is started from and an upgrade execs from (see
	// Config.Self).
	mainThread func() bool
	// exec replaces the image (upgrade.Self.Exec); it returns only if
	// that failed.
	exec func(bin *upgrade.Binary, st *upgrade.State) error
}

// The machine's verdicts and counts, as the callers of a Supervisor get
// them: package machine defines them (see its doc), these are their names
// here.
type (
	// Stats counts what happened to reloads.
	Stats = machine.Stats
	// ReloadError says why a new generation did not take over. The
	// serving generation, if any, is untouched.
	ReloadError = machine.ReloadError
	// ExitError is returned by Run when the last serving child ended
	// with a status other than 0 or hitless's own drain signal; Code is
	// its shell-style exit code.
	ExitError = machine.ExitError
	// UpgradeResult is the verdict of an upgrade of hitless itself.
	UpgradeResult = machine.UpgradeResult
	// UpgradeBusyError refuses an upgrade to one binary while an upgrade
	// to another is queued or under way: its verdict would not be the
	// caller's.
	UpgradeBusyError = machine.UpgradeBusyError
	// UpgradeError is an upgrade that did not happen, and why.
	UpgradeError = machine.UpgradeError
	// State is where a generation is in its life.
	State = machine.State
)

// The states of a generation.
const (
	Starting = machine.Starting // spawned, not yet ready
	Serving  = machine.Serving  // the current generation
	Trial    = machine.Trial    // ready, serving beside the serving one until its trial ends
	Draining = machine.Draining // sent the drain signal, finishing its work
	Failed   = machine.Failed   // did not take over; what is left of it drains
	Exited   = machine.Exited   // reaped
)

var (
	// ErrStopping is returned to reloads asked for or queued after a
	// stop.
	ErrStopping = machine.ErrStopping
	// ErrNoTrial is returned by Promote and Rollback when no generation
	// is on trial.
	ErrNoTrial = machine.ErrNoTrial
	// ErrNoUpgrade is returned by UpgradeResult when hitless was never
	// upgraded.
	ErrNoUpgrade = machine.ErrNoUpgrade
)

type reqKind int

const (
	reqReload reqKind = iota
	reqStop
	reqStatus
	reqPromote
	reqRollback
	reqUpgrade
	reqUpgradeResult
	reqRejoin
	reqLeave
)

type request struct {
	kind   reqKind
	caller machine.CallerID // 0: the loop names it
	reply  chan error
	status chan Status
	binary string // reqUpgrade
	// reqLeave: the caller's context ended because its request is
	// carried to the next image (ErrCarried); ack says whether it was
	// still waiting for its verdict.
	carried bool
	ack     chan bool
}

// New checks cfg (see Config.Validate), takes the sockets systemd passed
// (cfg.Passed) and binds every other socket; see package sockets. Nothing is
// started yet, but from now on SIGHUP, SIGTERM, SIGINT, SIGUSR1 and SIGUSR2
// are caught and kept for Run: a SIGHUP sent as soon as hitless announces
// its pid reloads rather than kills it; and SIGPIPE is ignored (see
// Output). Errors name the offending
// listener; on error nothing stays bound or open, the fd store is
// untouched, and no signal is caught.
func New(cfg Config) (*Supervisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := newSupervisor(cfg.withDefaults())
	s.m, s.started = machine.New(s.machineConfig()), time.Now()
	var err error
	s.sockets, s.storePlan, err = sockets.Open(sockets.Config{Listen: s.cfg.Listen, Passed: s.cfg.Passed, FDStore: s.cfg.FDStore, Logger: s.log})
	if err != nil {
		return nil, err
	}
	s.catchSignals()
	return s, nil
}

func newSupervisor(cfg Config) *Supervisor {
	s := &Supervisor{
		cfg:      cfg,
		log:      cfg.Logger,
		sigc:     make(chan os.Signal, sigBuffer),
		events:   make(chan machine.Event),
		reqs:     make(chan request),
		checked:  make(chan checked, 1),
		loopDone: make(chan struct{}),
		done:     make(chan struct{}),
		children: make(map[int]*child),
		timers:   make(map[machine.TimerID]*armed),
		callers:  make(map[machine.CallerID]request),
		orphans:  make(map[machine.CallerID]*orphan),
	}
	s.relay = s.newRelay()
	s.os = osEnv{
		spawn:      s.spawn,
		signal:     signalGroup,
		mainThread: func() bool { return unix.Gettid() == os.Getpid() },
		exec:       func(bin *upgrade.Binary, st *upgrade.State) error { return s.cfg.Self.Exec(bin, st, s.sigc) },
	}
	return s
}

// sigBuffer is how many signals wait for the loop: os/signal drops what a
// full channel cannot take, and a burst of SIGHUPs must not crowd out the
// SIGTERM behind it while the loop is busy (an upgrade's hand-over).
const sigBuffer = 64

func (s *Supervisor) catchSignals() {
	signal.Notify(s.sigc, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	ignorePipe()
}

// ignorePipe keeps a write to a broken pipe from ending hitless: its
// stdout's reader may go away (a "| tee" that exits, a log shipper that
// restarts), and Output counts what is lost. Children still get the
// default: the shim, a Go program itself, installs its own handler, which
// execve resets.
func ignorePipe() { signal.Ignore(syscall.SIGPIPE) }

func (s *Supervisor) machineConfig() machine.Config {
	c := s.cfg
	return machine.Config{
		ReadyDelay: c.ReadyDelay, ReadyTimeout: c.ReadyTimeout, DrainTimeout: c.DrainTimeout,
		BackoffMin: c.BackoffMin, BackoffMax: c.BackoffMax, StableAfter: c.StableAfter, DrainSignal: signalName(c.DrainSignal),
		Trial: c.Trial, Watchdog: c.Watchdog, WatchdogGrace: c.WatchdogGrace,
	}
}

func (s *Supervisor) closeSockets() {
	for _, sock := range s.sockets {
		sock.Close()
	}
	s.sockets = nil
}

// Close releases the sockets of a Supervisor whose Run will not be
// called, removes the unix socket files New created, and stops catching
// signals. Run does this itself when it returns; do not call Close while
// Run runs.
func (s *Supervisor) Close() {
	s.closeOnce.Do(func() {
		signal.Stop(s.sigc)
		signal.Reset(syscall.SIGPIPE)
		s.closeSockets()
	})
}

// Addrs returns the bound address of each socket, in the order of
// Config.Listen.
func (s *Supervisor) Addrs() []string {
	a := make([]string, len(s.sockets))
	for i, sock := range s.sockets {
		a[i] = sock.Addr
	}
	return a
}

// Run starts the first generation and supervises until ctx is done, a
// stop is asked for, or SIGTERM or SIGINT arrives; then it drains every
// child, releases the sockets and everything else it holds, and returns.
// It returns an error if the first child never became ready, and
// *ExitError if the last serving child ended with a status other than 0
// or the drain signal hitless sent it.
//
// Run handles SIGHUP (reload), SIGTERM and SIGINT (graceful stop; a
// second SIGINT kills at once), and forwards SIGUSR1 and SIGUSR2 to the
// serving child's process group.
func (s *Supervisor) Run(ctx context.Context) (err error) {
	defer s.release()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		s.log.Warn("cannot become a subreaper; orphans of children will not be reaped", "err", err)
	}
	// Descriptors hitless inherited without close-on-exec (from a shell,
	// a test runner, a leaky parent) must not reach the children, which
	// get exactly stdio and the sockets.
	if err := closeOnExecFrom(3); err != nil {
		close(s.loopDone)
		return fmt.Errorf("mark descriptors close-on-exec: %w", err)
	}
	if s.restored != nil {
		// Everything was handed over by an earlier image (Restore); the
		// signals are caught already, from the image's first moments, or
		// from now on (a state that came without an exec).
		if !s.sigCaught {
			s.catchSignals()
		}
		ignorePipe()
		s.reaper = newReaper(s.restored.adopt)
		s.log.Info("listening", "sockets", strings.Join(s.Addrs(), " "), "command", strings.Join(s.cfg.Command, " "), "restored", true)
		s.loop(ctx)
		return s.exit.Err
	}
	if s.rundir, err = newRundir(s.log); err != nil {
		close(s.loopDone)
		return fmt.Errorf("create notify socket directory: %w", err)
	}
	s.reaper = newReaper(nil)
	if s.watcher, err = s.startWatcher(); err != nil {
		close(s.loopDone)
		return err
	}

	// What New planned for the fd store (see sockets.StorePlan), once.
	s.storePlan.Apply(s.log)
	s.storePlan = sockets.StorePlan{}
	s.log.Info("listening", "sockets", strings.Join(s.Addrs(), " "), "command", strings.Join(s.cfg.Command, " "))
	s.loop(ctx)
	return s.exit.Err
}

// IdleAfter is how long nothing must happen before Config.Idle is
// called.
const IdleAfter = time.Second

func (s *Supervisor) loop(ctx context.Context) {
	defer close(s.loopDone)
	var watchdog <-chan time.Time
	if n := s.cfg.Notifier; n != nil && n.WatchdogInterval() > 0 {
		t := time.NewTicker(n.WatchdogInterval())
		defer t.Stop()
		watchdog = t.C
	}
	if s.restored != nil {
		s.resumeRestored()
	} else {
		s.run(s.m.Begin(s.now()))
	}
	ctxDone := ctx.Done()
	// idle fires IdleAfter after the last thing that happened; the
	// watchdog's ticks do not count.
	idle := time.NewTimer(IdleAfter)
	defer idle.Stop()
	busy := true
	for s.exit == nil {
		woke := true
		select {
		case <-idle.C:
			woke = false
			if busy && s.cfg.Idle != nil {
				s.cfg.Idle()
			}
			busy = false
		case sig := <-s.sigc:
			s.feed(machine.EvSignal{Sig: signalName(sig.(syscall.Signal))})
		case <-ctxDone:
			ctxDone = nil
			s.feed(machine.EvStop{})
		case ev := <-s.events:
			s.feed(ev)
		case <-watchdog:
			s.feed(machine.EvTick{})
			woke = false
		case ws := <-s.watcher.exit:
			s.restartWatcher(ws)
		case <-s.runningDue:
			s.runningDue = nil
			if err := s.watcher.running(); err != nil {
				s.log.Warn("watcher", "err", err)
			}
		case r := <-s.checked:
			s.checkDone(r)
		case req := <-s.reqs:
			s.request(req)
		}
		if woke {
			busy = true
			idle.Reset(IdleAfter)
		}
	}
	for _, t := range s.timers {
		t.Stop()
	}
}

// checkDone feeds the machine the outcome of a new binary's check, and
// keeps the binary that passed it, to exec.
func (s *Supervisor) checkDone(r checked) {
	s.cancelCheck = nil
	if s.upgradeBin != nil {
		s.upgradeBin.Close()
	}
	s.upgradeBin = r.bin
	msg := ""
	if r.err != nil {
		msg = r.err.Error()
	}
	s.feed(machine.EvUpgradeChecked{ID: r.id, Err: msg})
}

// request feeds the machine a caller's request.
func (s *Supervisor) request(req request) {
	switch req.kind {
	case reqRejoin:
		s.rejoin(req)
		return
	case reqLeave:
		s.leave(req)
		return
	}
	id := req.caller
	if id == 0 {
		id = machine.CallerID(s.NewCaller())
	}
	s.callers[id] = req
	switch req.kind {
	case reqReload:
		s.feed(machine.EvReload{Caller: id})
	case reqStop:
		s.feed(machine.EvStop{Caller: id})
	case reqStatus:
		s.feed(machine.EvStatus{Caller: id})
	case reqPromote:
		s.feed(machine.EvPromote{Caller: id})
	case reqRollback:
		s.feed(machine.EvRollback{Caller: id})
	case reqUpgrade:
		s.feed(machine.EvUpgrade{Caller: id, Binary: req.binary})
	case reqUpgradeResult:
		s.feed(machine.EvUpgradeResult{Caller: id})
	}
}

// feed steps the machine with ev and carries out its actions, and those
// of the events the actions themselves produce (a spawn's outcome), before
// anything else happens.
func (s *Supervisor) feed(ev machine.Event) {
	s.run(s.m.Step(s.now(), ev))
}

// now is the time for a step of the machine; it notes the same instant
// on the clock of the reload steps (stepAt), to which the durations the
// machine reports are relative.
func (s *Supervisor) now() time.Time {
	s.stepAt = hidden.Monotonic()
	return time.Now()
}

func (s *Supervisor) run(acts []machine.Action) {
	for len(acts) > 0 {
		// Before the actions: a generation told to drain asks a Relay
		// that knows who serves now.
		s.setAdopter()
		var next []machine.Event
		for _, a := range acts {
			if ev := s.do(a); ev != nil {
				next = append(next, ev)
			}
		}
		acts = nil
		for _, ev := range next {
			acts = append(acts, s.m.Step(s.now(), ev)...)
		}
	}
	if p := s.steps; p != nil {
		s.steps = nil
		s.logSteps(p)
	}
	s.keepStandby()
}

// do carries out one action; it returns the event that answers it, if any.
// Like the machine's Step, the switch is a table, one case per action:
// its complexity is the number of actions.
func (s *Supervisor) do(a machine.Action) machine.Event {
	switch a := a.(type) {
	case machine.ActStart:
		return s.start(a.Gen)
	case machine.ActSignal:
		if err := s.os.signal(a.PID, signalNum(a.Sig)); err != nil {
			s.log.Error("signal", "generation", a.Gen, "pid", a.PID, "signal", a.Sig, "err", err)
		}
		if p := s.steps; p != nil && p.gen != a.Gen && p.signalled == 0 {
			p.signalled = hidden.Monotonic()
		}
	case machine.ActArm:
		s.arm(a.ID, a.Gen, time.Now().Add(a.After))
	case machine.ActDisarm:
		s.disarm(a.ID)
	case machine.ActReply:
		s.reply(a.Caller, a.Err)
	case machine.ActStatus:
		s.answerStatus(a.Caller, a.View)
	case machine.ActNotify:
		s.notify(a)
	case machine.ActLog:
		s.log.Log(context.Background(), a.Level, a.Msg, a.Attrs...)
	case machine.ActForget:
		s.forget(a.Gen)
	case machine.ActRelease:
		// Let go of hitless's own copies of the sockets: they close once
		// the children have closed theirs, so a client that connects
		// after that is refused at once rather than queued behind a
		// process that will never accept, and reset when hitless exits.
		s.closeSockets()
	case machine.ActExit:
		s.exit = &a
	case machine.ActCheckUpgrade:
		s.checkUpgrade(a.ID, a.Binary)
	case machine.ActExecUpgrade:
		if err := s.execUpgrade(a.ID); err != nil {
			return machine.EvUpgradeDone{ID: a.ID, Result: "failed", Reason: err.Error()}
		}
	case machine.ActCancelCheck:
		if s.cancelCheck != nil && s.checkID == a.ID {
			s.cancelCheck()
		}
	case machine.ActObserve:
		if a.What == machine.ObserveReload {
			// The machine's step that promoted the generation: Duration
			// back from it is the request.
			s.steps = &pendingSteps{gen: a.Gen, requested: s.stepAt - int64(a.Duration), serving: s.stepAt}
		}
		s.observe(a)
	}
	return nil
}

// start spawns generation gen, and answers how that went.
func (s *Supervisor) start(gen int) machine.Event {
	c := &child{id: gen, stderr: &tail{max: stderrKept}}
	if err := s.os.spawn(c); err != nil {
		return machine.EvSpawnFailed{Gen: gen, Err: err.Error()}
	}
	s.children[gen] = c
	return machine.EvSpawned{Gen: gen, PID: c.pid}
}

// disarm stops the machine's timer id.
func (s *Supervisor) disarm(id machine.TimerID) {
	if t := s.timers[id]; t != nil {
		t.Stop()
		delete(s.timers, id)
	}
}

// reply gives caller its verdict: a request waiting for it, or an orphan
// whose request has not rejoined it yet.
func (s *Supervisor) reply(caller machine.CallerID, err error) {
	if req, ok := s.callers[caller]; ok {
		delete(s.callers, caller)
		req.reply <- err
	} else if o := s.orphans[caller]; o != nil {
		o.answered, o.err = true, err
	}
}

// answerStatus gives caller the status: the machine's view, completed.
func (s *Supervisor) answerStatus(caller machine.CallerID, v machine.View) {
	if req, ok := s.callers[caller]; ok {
		delete(s.callers, caller)
		req.status <- s.status(v)
	}
}

// forget lets go of what the driver holds for generation gen, which
// exited.
func (s *Supervisor) forget(gen int) {
	c := s.children[gen]
	if c == nil {
		return
	}
	delete(s.children, gen)
	c.forget()
	s.relay.Detach(gen)
	// Its group got SIGKILL when it exited: nothing for the watcher to
	// kill.
	if err := s.watcher.remove(c.pid); err != nil {
		s.log.Warn("watcher", "err", err)
	}
	if !c.copied {
		s.lingering = append(s.lingering, c)
	}
}

// observe passes a measurement to the metrics.
func (s *Supervisor) observe(a machine.ActObserve) {
	o := s.cfg.Observer
	if o == nil {
		return
	}
	switch a.What {
	case machine.ObserveReload:
		o.ReloadServing(a.Duration)
	case machine.ObserveDrain:
		o.Drained(a.Duration)
	}
}

// orphan is a caller of a reload whose request is carried to the next
// image (by the control socket), which asks for the verdict there
// (RejoinReload): the verdict, once it came, waits here for it.
type orphan struct {
	answered bool
	err      error
}

// rejoin gives req, a reload request carried across an upgrade, the
// place of its own caller (req.caller): the verdict now if it came, else
// when it comes. A caller that has no place (its request never reached
// the machine) reloads anew, under the same name. A request carried by a
// build that did not name its callers (0) takes any place left, as that
// build did.
func (s *Supervisor) rejoin(req request) {
	id := req.caller
	if id == 0 {
		for oid := range s.orphans {
			id = oid
			break
		}
	}
	if id == 0 {
		id = machine.CallerID(s.NewCaller())
	}
	if o := s.orphans[id]; o != nil {
		delete(s.orphans, id)
		if o.answered {
			req.reply <- o.err
		} else {
			s.callers[id] = req
		}
		return
	}
	s.callers[id] = req
	s.feed(machine.EvReload{Caller: id})
}

// leave ends the wait of a caller whose context ended before its
// verdict came, and acks whether it was still waiting (if not, the
// verdict is in its reply channel). A reload whose request is carried to
// the next image keeps its place there, as an orphan: a verdict that
// comes before the exec waits for it, and goes across. Any other caller
// gave up, and the machine forgets it (EvCancel): no request can take its
// verdict.
func (s *Supervisor) leave(req request) {
	w, waiting := s.callers[req.caller]
	if waiting {
		delete(s.callers, req.caller)
		switch {
		case !req.carried:
			s.feed(machine.EvCancel{Caller: req.caller})
		case w.kind == reqReload || w.kind == reqRejoin:
			s.orphans[req.caller] = &orphan{}
		}
		// A carried upgrade asks the next image for the verdict.
	}
	req.ack <- waiting
}

// armed is a timer of the machine's, running.
type armed struct {
	*time.Timer
	gen      int // whose stderr its event carries; 0 for none
	deadline time.Time
}

// arm starts the machine's timer id, to fire at deadline.
func (s *Supervisor) arm(id machine.TimerID, gen int, deadline time.Time) {
	c := s.children[gen]
	t := time.AfterFunc(time.Until(deadline), func() {
		ev := machine.EvTimer{ID: id}
		if c != nil {
			ev.Stderr = c.stderr.Lines(5)
		}
		s.post(ev)
	})
	s.timers[id] = &armed{Timer: t, gen: gen, deadline: deadline}
}

// release lets go of everything Run holds, then answers the Stop calls:
// a caller that sees Stop return finds the sockets closed and the notify
// directory gone.
func (s *Supervisor) release() {
	<-s.loopDone
	if s.cancelCheck != nil {
		s.cancelCheck() // a check cancelled by the stop, still ending
	}
	s.bg.Wait()
	select {
	case r := <-s.checked:
		if r.bin != nil {
			r.bin.Close()
		}
	default:
	}
	if s.upgradeBin != nil {
		s.upgradeBin.Close()
	}
	s.readers.Wait()
	s.relay.Close()
	for _, c := range s.lingering {
		c.closeOutput()
	}
	if s.watcher != nil {
		if s.runningDue != nil {
			// Within runningGrace of a restore, a stop is no death in
			// an exec: what is left is killed, not drained, and the
			// watcher does not say hitless died.
			s.watcher.running()
		}
		s.watcher.stop()
	}
	if s.reaper != nil {
		s.reaper.stop()
	}
	if s.rundir != nil {
		if err := s.rundir.remove(); err != nil {
			s.log.Warn("remove notify socket directory", "err", err)
		}
	}
	s.Close()
	if s.exit != nil {
		for _, id := range s.exit.Callers {
			if req, ok := s.callers[id]; ok {
				req.reply <- nil
			}
		}
	}
	close(s.done)
}

func (s *Supervisor) notify(a machine.ActNotify) {
	n := s.cfg.Notifier
	if n == nil {
		return
	}
	var err error
	switch a.What {
	case machine.NotifyReady:
		err = n.Ready(a.Text)
	case machine.NotifyReloading:
		err = n.Reloading()
	case machine.NotifyStopping:
		err = n.Stopping()
	case machine.NotifyStatus:
		err = n.Status(a.Text)
	case machine.NotifyWatchdog:
		err = n.Watchdog()
	}
	if err != nil {
		s.log.Warn("notify service manager", "err", err)
	}
}

// restartWatcher replaces a watcher that died (someone killed it) and
// tells the new one every process group it must know of.
func (s *Supervisor) restartWatcher(ws unix.WaitStatus) {
	s.log.Error("the watcher that kills the children if hitless dies exited; starting another", "status", exitReason(ws))
	w, err := s.startWatcher()
	if err != nil {
		s.log.Error("watcher", "err", err)
		// Keep the old one's channel out of the select: it has fired.
		s.watcher.exit = nil
		return
	}
	s.watcher.w.Close()
	s.watcher = w
	var outs []outPipe
	for _, c := range s.children {
		if err := w.add(c.pid); err != nil {
			s.log.Warn("watcher", "err", err)
		}
		outs = append(outs, c.outs...)
	}
	if s.runningDue != nil {
		// Still within runningGrace of a restore: a death drains.
		if err := w.upgrading(outs, s.cfg.DrainSignal, s.cfg.DrainTimeout); err != nil {
			s.log.Warn("watcher", "err", err)
		}
	}
}

// post hands an event to the loop, or drops it once the loop is gone.
func (s *Supervisor) post(ev machine.Event) {
	select {
	case s.events <- ev:
	case <-s.loopDone:
	}
}

// signalGroup sends sig to the process group pgid; a group that is gone
// is not an error.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 0 {
		return nil
	}
	err := unix.Kill(-pgid, sig)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// signalName is sig as the machine names signals: "SIGTERM", or "SIG34"
// for a number the system has no name for (a real-time signal).
func signalName(sig syscall.Signal) machine.Signal {
	if name := unix.SignalName(sig); name != "" {
		return machine.Signal(name)
	}
	return machine.Signal("SIG" + strconv.Itoa(int(sig)))
}

// signalNum is the number of a signal the machine named (signalName).
func signalNum(sig machine.Signal) syscall.Signal {
	if n := unix.SignalNum(string(sig)); n != 0 {
		return n
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(string(sig), "SIG"))
	return syscall.Signal(n)
}

// exitOf is how the machine sees a wait status.
func exitOf(ws unix.WaitStatus) machine.Exit {
	x := machine.Exit{Code: exitCode(ws), Reason: exitReason(ws)}
	if ws.Signaled() {
		x.Signal = signalName(ws.Signal())
	}
	return x
}
