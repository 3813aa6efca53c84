//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/supervisor/sockets"
	"github.com/hitless/hitless/upgrade"
)

// Supervisor holds the sockets and runs generations of the child. Create
// it with New, which binds the sockets, then call Run once.
//
// It is the driver of the state machine in machine.go: one goroutine (Run's)
// feeds the machine every event in order and carries out the actions it
// returns. Other goroutines only observe (a child's exit, its READY=1, a
// timer) and post what they saw to that goroutine.
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

	events   chan event
	reqs     chan request
	loopDone chan struct{} // closed when the loop has returned
	done     chan struct{} // closed when Run has released everything

	// Owned by Run's goroutine.
	m           *machine
	started     time.Time // when hitless first started, before any upgrade
	checked     chan checked
	cancelCheck context.CancelFunc // of the check running, if any
	checkID     int                // the upgrade whose check runs
	upgradeBin  *upgrade.Binary    // checked, to exec
	restored    *restoredState     // set by Restore until Run resumes it
	rundir      *rundir            // private notify sockets live here
	reaper      *reaper
	watcher     *watcher
	runningDue  <-chan time.Time // when to tell the watcher an image runs again (see runningGrace)
	children    map[int]*child
	timers      map[timerID]*armed
	callers     map[callerID]request
	// callerSeq names the callers (NewCaller): any goroutine takes the
	// next number, before it asks.
	callerSeq atomic.Int64
	// orphans are the callers of a reload whose requests are carried to
	// the next image (see RejoinReload), by an earlier image or by this
	// one during an upgrade: the verdict waits here for the carried
	// request to ask for it.
	orphans   map[callerID]*orphan
	exit      *actExit
	lingering []*child       // reaped, but a descendant still holds its output
	bg        sync.WaitGroup // exit watchers
	readers   sync.WaitGroup // notify readers
	exiting   sync.WaitGroup // exits reaped but not yet fed to the machine
	closeOnce sync.Once
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
	caller callerID // 0: the loop names it
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
	s.m, s.started = newMachine(s.machineConfig()), time.Now()
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
		events:   make(chan event),
		reqs:     make(chan request),
		checked:  make(chan checked, 1),
		loopDone: make(chan struct{}),
		done:     make(chan struct{}),
		children: make(map[int]*child),
		timers:   make(map[timerID]*armed),
		callers:  make(map[callerID]request),
		orphans:  make(map[callerID]*orphan),
	}
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

func (s *Supervisor) machineConfig() machineConfig {
	c := s.cfg
	return machineConfig{
		ReadyDelay: c.ReadyDelay, ReadyTimeout: c.ReadyTimeout, DrainTimeout: c.DrainTimeout,
		BackoffMin: c.BackoffMin, BackoffMax: c.BackoffMax, StableAfter: c.StableAfter, DrainSignal: c.DrainSignal,
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
		return s.exit.err
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

	s.storeSockets()
	s.log.Info("listening", "sockets", strings.Join(s.Addrs(), " "), "command", strings.Join(s.cfg.Command, " "))
	s.loop(ctx)
	return s.exit.err
}

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
		s.run(s.m.begin(time.Now()))
	}
	ctxDone := ctx.Done()
	for s.exit == nil {
		select {
		case sig := <-s.sigc:
			s.feed(evSignal{sig: sig.(syscall.Signal)})
		case <-ctxDone:
			ctxDone = nil
			s.feed(evStop{})
		case ev := <-s.events:
			s.feed(ev)
		case <-watchdog:
			s.feed(evTick{})
		case ws := <-s.watcher.exit:
			s.restartWatcher(ws)
		case <-s.runningDue:
			s.runningDue = nil
			if err := s.watcher.running(); err != nil {
				s.log.Warn("watcher", "err", err)
			}
		case r := <-s.checked:
			s.cancelCheck = nil
			if s.upgradeBin != nil {
				s.upgradeBin.Close()
			}
			s.upgradeBin = r.bin
			msg := ""
			if r.err != nil {
				msg = r.err.Error()
			}
			s.feed(evUpgradeChecked{id: r.id, err: msg})
		case req := <-s.reqs:
			s.request(req)
		}
	}
	for _, t := range s.timers {
		t.Stop()
	}
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
		id = callerID(s.NewCaller())
	}
	s.callers[id] = req
	switch req.kind {
	case reqReload:
		s.feed(evReload{caller: id})
	case reqStop:
		s.feed(evStop{caller: id})
	case reqStatus:
		s.feed(evStatus{caller: id})
	case reqPromote:
		s.feed(evPromote{caller: id})
	case reqRollback:
		s.feed(evRollback{caller: id})
	case reqUpgrade:
		s.feed(evUpgrade{caller: id, binary: req.binary})
	case reqUpgradeResult:
		s.feed(evUpgradeResult{caller: id})
	}
}

// feed steps the machine with ev and carries out its actions, and those
// of the events the actions themselves produce (a spawn's outcome), before
// anything else happens.
func (s *Supervisor) feed(ev event) {
	s.run(s.m.step(time.Now(), ev))
}

func (s *Supervisor) run(acts []action) {
	for len(acts) > 0 {
		var next []event
		for _, a := range acts {
			if ev := s.do(a); ev != nil {
				next = append(next, ev)
			}
		}
		acts = nil
		for _, ev := range next {
			acts = append(acts, s.m.step(time.Now(), ev)...)
		}
	}
}

// do carries out one action; it returns the event that answers it, if any.
func (s *Supervisor) do(a action) event {
	switch a := a.(type) {
	case actStart:
		c := &child{id: a.gen, stderr: &tail{max: stderrKept}}
		if err := s.os.spawn(c); err != nil {
			return evSpawnFailed{gen: a.gen, err: err.Error()}
		}
		s.children[a.gen] = c
		return evSpawned{gen: a.gen, pid: c.pid}
	case actSignal:
		if err := s.os.signal(a.pid, a.sig); err != nil {
			s.log.Error("signal", "generation", a.gen, "pid", a.pid, "signal", unix.SignalName(a.sig), "err", err)
		}
	case actArm:
		s.arm(a.id, a.gen, time.Now().Add(a.after))
	case actDisarm:
		if t := s.timers[a.id]; t != nil {
			t.Stop()
			delete(s.timers, a.id)
		}
	case actReply:
		if req, ok := s.callers[a.caller]; ok {
			delete(s.callers, a.caller)
			req.reply <- a.err
		} else if o := s.orphans[a.caller]; o != nil {
			o.answered, o.err = true, a.err
		}
	case actStatus:
		if req, ok := s.callers[a.caller]; ok {
			delete(s.callers, a.caller)
			req.status <- s.status(a.view)
		}
	case actNotify:
		s.notify(a)
	case actLog:
		s.log.Log(context.Background(), a.level, a.msg, a.attrs...)
	case actForget:
		if c := s.children[a.gen]; c != nil {
			delete(s.children, a.gen)
			c.forget()
			// Its group got SIGKILL when it exited: nothing for the
			// watcher to kill.
			if err := s.watcher.remove(c.pid); err != nil {
				s.log.Warn("watcher", "err", err)
			}
			if !c.copied {
				s.lingering = append(s.lingering, c)
			}
		}
	case actRelease:
		// Let go of hitless's own copies of the sockets: they close once
		// the children have closed theirs, so a client that connects
		// after that is refused at once rather than queued behind a
		// process that will never accept, and reset when hitless exits.
		s.closeSockets()
	case actExit:
		s.exit = &a
	case actCheckUpgrade:
		s.checkUpgrade(a.id, a.binary)
	case actExecUpgrade:
		if err := s.execUpgrade(a.id); err != nil {
			return evUpgradeDone{id: a.id, result: "failed", reason: err.Error()}
		}
	case actCancelCheck:
		if s.cancelCheck != nil && s.checkID == a.id {
			s.cancelCheck()
		}
	case actObserve:
		if o := s.cfg.Observer; o != nil {
			switch a.what {
			case observeReload:
				o.ReloadServing(a.d)
			case observeDrain:
				o.Drained(a.d)
			}
		}
	}
	return nil
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
		id = callerID(s.NewCaller())
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
	s.feed(evReload{caller: id})
}

// leave ends the wait of a caller whose context ended before its
// verdict came, and acks whether it was still waiting (if not, the
// verdict is in its reply channel). A reload whose request is carried to
// the next image keeps its place there, as an orphan: a verdict that
// comes before the exec waits for it, and goes across. Any other caller
// gave up, and the machine forgets it (evCancel): no request can take its
// verdict.
func (s *Supervisor) leave(req request) {
	w, waiting := s.callers[req.caller]
	if waiting {
		delete(s.callers, req.caller)
		switch {
		case !req.carried:
			s.feed(evCancel{caller: req.caller})
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
func (s *Supervisor) arm(id timerID, gen int, deadline time.Time) {
	c := s.children[gen]
	t := time.AfterFunc(time.Until(deadline), func() {
		ev := evTimer{id: id}
		if c != nil {
			ev.stderr = c.stderr.Lines(5)
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
		for _, id := range s.exit.callers {
			if req, ok := s.callers[id]; ok {
				req.reply <- nil
			}
		}
	}
	close(s.done)
}

func (s *Supervisor) notify(a actNotify) {
	n := s.cfg.Notifier
	if n == nil {
		return
	}
	var err error
	switch a.what {
	case notifyReady:
		err = n.Ready(a.text)
	case notifyReloading:
		err = n.Reloading()
	case notifyStopping:
		err = n.Stopping()
	case notifyStatus:
		err = n.Status(a.text)
	case notifyWatchdog:
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
func (s *Supervisor) post(ev event) {
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
