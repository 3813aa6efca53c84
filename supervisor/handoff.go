//go:build linux

package supervisor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/internal/sdnotify"
	"github.com/hitless/hitless/supervisor/internal/machine"
	"github.com/hitless/hitless/supervisor/sockets"
	"github.com/hitless/hitless/upgrade"
)

// The supervisor's side of an in-place upgrade (package upgrade): it
// stops following its children without letting go of them, writes down
// everything it holds, and execs the new binary, which takes it all back
// (Restore) and carries on. The machine decides when (the upgrade's events
// in package machine); this file does it.

// A Carrier is something besides the supervisor that an upgrade must
// carry across the exec: the control socket and the requests waiting on
// it, a metrics listener.
type Carrier interface {
	// Handoff stops the carrier's work and puts what the next image
	// needs in st: sections and descriptors. The exec follows at once;
	// ctx bounds the wait for work in flight.
	Handoff(ctx context.Context, st *upgrade.State) error
	// Resume undoes Handoff, when the exec failed, or when Handoff
	// itself failed (it undoes whatever Handoff had done).
	Resume()
}

// AddCarrier adds c to what an upgrade carries (Config.Carriers), for a
// carrier made after New, such as the control socket, which is listened
// on only once the sockets are bound. Call it before Run.
func (s *Supervisor) AddCarrier(c Carrier) {
	s.cfg.Carriers = append(s.cfg.Carriers, c)
}

// runningGrace is how long the restored image leaves the watcher told
// that an exec is under way: should hitless die meanwhile, the children
// are drained rather than killed. A SIGTERM that reached the new runtime
// before it caught signals ends the process, but the runtime yields the
// CPU before it dies: on a busy machine the image can restore, and even
// answer, before the end comes (1 of 30 such deaths came after the
// restore in one run, load 3 on 2 cores).
const runningGrace = time.Second

// handoffTimeout bounds how long the carriers may take to hand over.
const handoffTimeout = 5 * time.Second

// checkTimeout bounds the new binary's check.
const checkTimeout = 30 * time.Second

// Upgrade replaces hitless's binary with binary ("" for the path hitless
// was started from, resolved afresh) in this process, keeping its pid,
// its children and everything it holds. It waits for a reload in flight
// to end first; reloads and stops asked for meanwhile wait for it.
//
// On success this image is gone and Upgrade never returns: the next image
// answers, through UpgradeResult. It returns *UpgradeError when the new
// binary was refused (its check failed) or the exec failed, and nothing
// changed; ErrStopping; or ctx's error.
func (s *Supervisor) Upgrade(ctx context.Context, binary string) error {
	if binary == "" && s.cfg.Self != nil {
		binary = s.cfg.Self.Path
	}
	return s.call(ctx, request{kind: reqUpgrade, binary: binary})
}

// UpgradeResult returns the verdict of the last upgrade: nil if it
// succeeded, *UpgradeError if not (rolled back included), ErrNoUpgrade
// if there was none.
func (s *Supervisor) UpgradeResult(ctx context.Context) error {
	return s.call(ctx, request{kind: reqUpgradeResult})
}

// checked is the outcome of a new binary's check.
type checked struct {
	id  int
	bin *upgrade.Binary
	err error
}

// checkUpgrade runs the new binary's check away from the loop, which goes
// on meanwhile.
func (s *Supervisor) checkUpgrade(id int, path string) {
	self := s.cfg.Self
	if self == nil {
		s.checked <- checked{id: id, err: errors.New("this hitless cannot upgrade itself (the supervisor has no Config.Self)")}
		return
	}
	if !s.os.mainThread() {
		s.checked <- checked{id: id, err: errors.New("the supervisor does not run on the main thread, which every child is started from and an upgrade execs from (runtime.LockOSThread in an init function)")}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	s.cancelCheck, s.checkID = cancel, id
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer cancel()
		bin, err := self.Check(ctx, path, s.startChecked)
		s.checked <- checked{id: id, bin: bin, err: err}
	}()
}

// startChecked starts a process through the reaper, which owns every
// wait in the process: an upgrade's check.
func (s *Supervisor) startChecked(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	exited := make(chan syscall.WaitStatus, 1)
	pid, err := s.reaper.start(argv0, argv, attr, func(ws unix.WaitStatus) { exited <- syscall.WaitStatus(ws) })
	return pid, exited, err
}

// execUpgrade hands everything over and execs the checked binary. It
// returns only if that failed, with everything as it was.
func (s *Supervisor) execUpgrade(id int) error {
	bin := s.upgradeBin
	s.upgradeBin = nil
	if bin == nil {
		return errors.New("no checked binary")
	}
	defer bin.Close()
	st := upgrade.NewState(id, s.cfg.Version)
	ctx, cancel := context.WithTimeout(context.Background(), handoffTimeout)
	defer cancel()
	var handed []Carrier
	resumeCarriers := func() {
		for i := len(handed) - 1; i >= 0; i-- {
			handed[i].Resume()
		}
	}
	// The carriers hand over while the loop goes on answering: their
	// work in flight (a control reply that names the serving generation,
	// a metrics scrape) may ask the supervisor for its status, and ends
	// only once it has the answer.
	var handErr error
	handing := make(chan struct{})
	go func() {
		defer close(handing)
		for _, c := range s.cfg.Carriers {
			// Resumed even if its Handoff fails: it may have stopped
			// its work already (the control socket stops accepting
			// first).
			handed = append(handed, c)
			if handErr = c.Handoff(ctx, st); handErr != nil {
				return
			}
		}
	}()
	s.serveUntil(handing)
	if handErr != nil {
		resumeCarriers()
		return fmt.Errorf("hand over: %w", handErr)
	}
	// The next image would not know the standby: it exits on its own
	// once its start pipe closes here.
	s.letGoStandby()
	s.quiesce()
	err := s.export(st)
	if err == nil {
		s.log.Info("upgrade: handing over", "upgrade", id, "binary", bin.Path, "version", bin.Info.Version,
			"generations", len(s.children), "sockets", len(s.sockets))
		// Should this process die before an image runs again (of a
		// SIGTERM the new runtime cannot catch yet), the watcher drains
		// the children rather than kill them, and reads their output
		// meanwhile.
		var outs []outPipe
		for _, c := range s.children {
			outs = append(outs, c.outs...)
		}
		if werr := s.watcher.upgrading(outs, s.cfg.DrainSignal, s.cfg.DrainTimeout); werr != nil {
			s.log.Warn("watcher", "err", werr)
		}
		err = s.os.exec(bin, st)
		s.watcher.running()
	}
	s.resume()
	resumeCarriers()
	// The signals the exec took back to the loop, as they came.
	sigs, _ := st.TakeSignals()
	for _, sig := range sigs {
		s.feed(machine.EvSignal{Sig: signalName(sig)})
	}
	return err
}

// quiesce stops the goroutines that follow the children, without closing
// anything they read: nothing is reaped any more (a child that exits
// stays a zombie for the next image), and what was read already reaches
// the machine. Then the timers stop, their deadlines kept.
func (s *Supervisor) quiesce() {
	s.reaper.pause()
	s.relay.Pause()
	for _, c := range s.lingering {
		c.closeOutput() // reaped already: nothing to carry
	}
	s.lingering = nil
	past := time.Unix(1, 0)
	var outw []*child
	for _, c := range s.children {
		c.setReadDeadline(past)
		outw = append(outw, c)
	}
	quiet := make(chan struct{})
	go func() {
		s.readers.Wait()
		for _, c := range outw {
			c.outw.Wait()
		}
		s.exiting.Wait()
		close(quiet)
	}()
	s.serveUntil(quiet)
	for more := true; more; {
		select {
		case ev := <-s.events:
			s.feed(ev)
		case sig := <-s.sigc:
			s.feed(machine.EvSignal{Sig: signalName(sig.(syscall.Signal))})
		default:
			more = false
		}
	}
	for _, t := range s.timers {
		t.Stop()
	}
}

// serveUntil feeds the machine what happens (events, signals, requests)
// until done is closed: the loop, while an upgrade hands over.
func (s *Supervisor) serveUntil(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case ev := <-s.events:
			s.feed(ev)
		case sig := <-s.sigc:
			s.feed(machine.EvSignal{Sig: signalName(sig.(syscall.Signal))})
		case req := <-s.reqs:
			s.request(req)
		}
	}
}

// resume undoes quiesce, after an exec that failed.
func (s *Supervisor) resume() {
	for id, t := range s.timers {
		s.arm(id, t.gen, t.deadline)
	}
	for _, c := range s.children {
		c.setReadDeadline(time.Time{})
		s.follow(c)
	}
	s.relay.Resume()
	s.reaper.resume()
}

// handoff is the supervisor's section of the upgrade state: a format,
// like the machine's (see golden_test.go).
type handoff struct {
	Machine  machine.Snapshot `json:"machine"`
	Timers   []timerState     `json:"timers"`
	Children []childState     `json:"children"`
	Sockets  []socketState    `json:"sockets"`
	Rundir   string           `json:"rundir"`
	Watcher  int              `json:"watcher"` // its pid
	// WatcherProtocol is what the watcher understands (watcherProtocol
	// of the build that started it; 0 in a version 1 state).
	WatcherProtocol int       `json:"watcher_protocol,omitempty"`
	Started         time.Time `json:"started"` // when hitless first started
	// HandOver is the connection Relay, paused; absent from the state of
	// an image without one.
	HandOver *handover.RelayState `json:"handover,omitempty"`
	// LastCaller numbers the callers: those of the machine (its reload
	// callers are carried) and the next image's do not meet.
	LastCaller machine.CallerID `json:"last_caller,omitempty"`
	// Verdicts are those of reloads whose callers' requests are carried
	// (by the control socket), given after the requests were cut off and
	// before the exec: the carried requests take them (RejoinReload).
	Verdicts []verdictState `json:"verdicts,omitempty"`
	// OutputDropped is what the image counted (Status.OutputDropped).
	OutputDropped OutputDropped `json:"output_dropped"`
}

// verdictState is a reload's verdict for a caller, written down.
type verdictState struct {
	Caller machine.CallerID `json:"caller"`
	// Result is "ok", "failed" (Reload says why), "stopping", or "error"
	// (Error says what).
	Result string            `json:"result"`
	Reload *reloadErrorState `json:"reload,omitempty"`
	Error  string            `json:"error,omitempty"`
}

type reloadErrorState struct {
	Generation int      `json:"generation"`
	PID        int      `json:"pid"`
	Reason     string   `json:"reason"`
	Stderr     []string `json:"stderr,omitempty"`
	RolledBack bool     `json:"rolled_back,omitempty"`
}

func exportVerdict(c machine.CallerID, err error) verdictState {
	v := verdictState{Caller: c, Result: "ok"}
	var rerr *ReloadError
	switch {
	case err == nil:
	case errors.As(err, &rerr):
		v.Result = "failed"
		v.Reload = &reloadErrorState{Generation: rerr.Generation, PID: rerr.PID, Reason: rerr.Reason, Stderr: rerr.Stderr, RolledBack: rerr.RolledBack}
	case errors.Is(err, ErrStopping):
		v.Result = "stopping"
	default:
		v.Result, v.Error = "error", err.Error()
	}
	return v
}

func (v verdictState) err() error {
	switch v.Result {
	case "ok":
		return nil
	case "failed":
		if r := v.Reload; r != nil {
			return &ReloadError{Generation: r.Generation, PID: r.PID, Reason: r.Reason, Stderr: r.Stderr, RolledBack: r.RolledBack}
		}
	case "stopping":
		return ErrStopping
	}
	return errors.New(cmp.Or(v.Error, "reload: verdict "+v.Result))
}

type timerState struct {
	ID       machine.TimerID `json:"id"`
	Gen      int             `json:"gen"`
	Deadline time.Duration   `json:"in"` // from the export
}

type childState struct {
	ID     int    `json:"id"`
	PID    int    `json:"pid"`
	Notify string `json:"notify"`
	Outs   []bool `json:"outs"` // each output pipe: true for stderr
	// Partials are the prefixed lines in progress on each output pipe
	// (--output-prefix), written whole once the rest comes.
	Partials [][]byte `json:"partials,omitempty"`
	Stderr   []byte   `json:"stderr"`
	Status   string   `json:"status"`
	Stopping bool     `json:"stopping"`
}

type socketState struct {
	Spec    sockets.ListenSpec `json:"spec"`
	Addr    string             `json:"addr"`
	Source  string             `json:"source"`
	Created bool               `json:"created"`
}

// export writes the supervisor's state into st, and names every
// descriptor to carry.
func (s *Supervisor) export(st *upgrade.State) error {
	// Of the machine's callers, those of the reload in flight and of the
	// queued one are kept, by number: whoever waited is carried by the
	// control socket and rejoins them (RejoinReload). The others ask
	// again: a stop joins the stop, an upgrade asks for the verdict of
	// the last one.
	ms := s.m.Snapshot()
	ms.StopCallers, ms.UpgradeCallers = nil, nil
	h := handoff{Machine: ms, Rundir: s.rundir.path, Watcher: s.watcher.pid, WatcherProtocol: s.watcher.proto, Started: s.started,
		LastCaller: machine.CallerID(s.callerSeq.Load()), OutputDropped: s.cfg.Outputs.dropped()}
	now := time.Now()
	for id, t := range s.timers {
		h.Timers = append(h.Timers, timerState{ID: id, Gen: t.gen, Deadline: t.deadline.Sub(now)})
	}
	slices.SortFunc(h.Timers, func(a, b timerState) int { return int(a.ID - b.ID) })
	for id, o := range s.orphans {
		if o.answered {
			h.Verdicts = append(h.Verdicts, exportVerdict(id, o.err))
		}
	}
	slices.SortFunc(h.Verdicts, func(a, b verdictState) int { return cmp.Compare(a.Caller, b.Caller) })
	var errs []error
	carry := func(name string, c syscall.Conn) { errs = append(errs, st.CarryConn(name, c)) }
	for _, c := range s.children {
		cs := childState{ID: c.id, PID: c.pid, Notify: c.notify.Path(), Stderr: c.stderr.bytes()}
		cs.Status, cs.Stopping = c.lastStatus()
		carry(fmt.Sprintf("child/%d/notify", c.id), c.notify)
		for i, p := range c.outs {
			cs.Outs = append(cs.Outs, p.stderr)
			cs.Partials = append(cs.Partials, p.partial)
			carry(fmt.Sprintf("child/%d/out/%d", c.id, i), p.r)
		}
		h.Children = append(h.Children, cs)
	}
	for i, sock := range s.sockets {
		h.Sockets = append(h.Sockets, socketState{Spec: sock.Spec, Addr: sock.Addr, Source: sock.Source, Created: sock.Created})
		carry(fmt.Sprintf("socket/%d", i), sock.File)
	}
	carry("rundir/lock", s.rundir.lock)
	carry("watcher", s.watcher.w)
	s.exportHandOver(&h, carry)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return st.Put("supervisor", h)
}

// Restore makes the Supervisor that an earlier image handed over in st
// (see package upgrade), for the same command line, hence cfg. Nothing
// is bound and nothing starts: Run resumes it. Until Run, nothing of st
// is closed or consumed, so that a caller that fails later can still
// roll back (upgrade.State.Rollback); call st.Commit before Run.
func Restore(cfg Config, st *upgrade.State) (*Supervisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := newSupervisor(cfg.withDefaults())
	var h handoff
	if err := st.Get("supervisor", &h); err != nil {
		return nil, err
	}
	for i, ss := range h.Sockets {
		f, err := carried(st, "socket/%d", i)
		if err != nil {
			return nil, err
		}
		s.sockets = append(s.sockets, &sockets.Socket{Spec: ss.Spec, File: f, FD: rawFD(f), Addr: ss.Addr, Source: ss.Source, Created: ss.Created})
	}
	lock, err := carried(st, "rundir/lock")
	if err != nil {
		return nil, err
	}
	s.rundir = &rundir{path: h.Rundir, lock: lock}
	w, err := carried(st, "watcher")
	if err != nil {
		return nil, err
	}
	wt := &watcher{w: w, pid: h.Watcher, proto: h.WatcherProtocol, exit: make(chan unix.WaitStatus, 1)}
	s.watcher = wt
	sigs, caught := st.TakeSignals()
	if caught != nil {
		// Caught since this image started (see package upgrade): the
		// signals the old image did not handle come first, then these.
		s.sigc, s.sigCaught = caught, true
	}
	r := &restoredState{
		timers: h.Timers, id: st.ID, rolledBack: st.RolledBack, signals: sigs,
		adopt: map[int]func(unix.WaitStatus){h.Watcher: func(ws unix.WaitStatus) { wt.exit <- ws }},
		exits: make(map[int]chan unix.WaitStatus),
	}
	for _, cs := range h.Children {
		c, err := restoreChild(st, cs)
		if err != nil {
			return nil, err
		}
		exitc := make(chan unix.WaitStatus, 1)
		r.adopt[c.pid] = s.exited(exitc)
		r.exits[c.id] = exitc
		s.children[c.id] = c
	}
	m, err := machine.Restore(h.Machine, s.machineConfig())
	if err != nil {
		return nil, err
	}
	if err := s.importHandOver(h, st); err != nil {
		return nil, err
	}
	r.uncaught[0], r.uncaught[1] = st.Uncaught()
	// The callers of the reload in flight and of the queued one wait in
	// requests the control socket carried, which rejoin them.
	for _, id := range append(slices.Clone(h.Machine.Waiting), h.Machine.Queued...) {
		s.orphans[id] = &orphan{}
	}
	for _, v := range h.Verdicts {
		s.orphans[v.Caller] = &orphan{answered: true, err: v.err()}
	}
	s.callerSeq.Store(int64(h.LastCaller))
	s.cfg.Outputs.carry(h.OutputDropped)
	s.m, s.started, s.restored = m, h.Started, r
	return s, nil
}

// CarriedListen returns the sockets an upgrade state carries, in order,
// as they were asked for: a restored image keeps them (Restore takes them
// whatever Config.Listen says), and a program whose settings it cannot
// take from the state (a release that did not carry them) lists them
// as its own.
func CarriedListen(st *upgrade.State) ([]sockets.ListenSpec, error) {
	var h handoff
	if err := st.Get("supervisor", &h); err != nil {
		return nil, err
	}
	specs := make([]sockets.ListenSpec, len(h.Sockets))
	for i, ss := range h.Sockets {
		specs[i] = ss.Spec
	}
	return specs, nil
}

// carried returns the descriptor the state carries by the name format
// gives.
func carried(st *upgrade.State, format string, a ...any) (*os.File, error) {
	name := fmt.Sprintf(format, a...)
	if f := st.File(name); f != nil {
		return f, nil
	}
	return nil, fmt.Errorf("restore: the state carries no %s", name)
}

// restoreChild takes back what the state carries of a child: its notify
// socket, its output pipes and what it said.
func restoreChild(st *upgrade.State, cs childState) (*child, error) {
	c := &child{id: cs.ID, pid: cs.PID, stderr: &tail{max: stderrKept}, status: cs.Status, stopping: cs.Stopping}
	c.stderr.Write(cs.Stderr)
	nf, err := carried(st, "child/%d/notify", cs.ID)
	if err != nil {
		return nil, err
	}
	if c.notify, err = sdnotify.FileConn(nf, cs.Notify); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	st.CloseLater(nf) // the Conn holds a duplicate
	for i, stderr := range cs.Outs {
		f, err := carried(st, "child/%d/out/%d", cs.ID, i)
		if err != nil {
			return nil, err
		}
		p := outPipe{r: f, stderr: stderr}
		if i < len(cs.Partials) {
			p.partial = cs.Partials[i]
		}
		c.outs = append(c.outs, p)
	}
	return c, nil
}

// NoteUpgrade gives the verdict of the upgrade that started this image a
// note, for its callers and the log: what the caller should know although
// the upgrade succeeded (settings in the config file that changed since
// hitless started, and take effect at the next start). Call it between
// Restore and Run; "" is no note.
func (s *Supervisor) NoteUpgrade(note string) {
	if s.restored != nil {
		s.restored.note = note
	}
}

// restoredState is what Run needs of a restored supervisor.
type restoredState struct {
	timers     []timerState
	id         int
	rolledBack string
	signals    []syscall.Signal // received by the earlier image, not handled
	note       string           // see NoteUpgrade
	// uncaught is when no signal was caught across the exec
	// (CLOCK_MONOTONIC, nanoseconds; see upgrade.State.Uncaught).
	uncaught [2]int64
	// adopt is what the reaper calls when each process handed over (the
	// children and the watcher) exits; a child's exit goes to its exits
	// channel, which it is watched with.
	adopt map[int]func(unix.WaitStatus)
	exits map[int]chan unix.WaitStatus
}

// resumeRestored starts following what an earlier image handed over.
func (s *Supervisor) resumeRestored() {
	r := s.restored
	now := time.Now()
	for _, t := range r.timers {
		s.arm(t.ID, t.Gen, now.Add(t.Deadline))
	}
	for id, c := range s.children {
		s.watch(c, r.exits[id])
	}
	s.relay.Resume()
	if s.watcher.proto < watcherProtocol {
		s.replaceWatcher()
	}
	// The watcher drains rather than kills for a while yet (see
	// runningGrace).
	s.runningDue = time.After(runningGrace)
	if from, to := r.uncaught[0], r.uncaught[1]; to > from {
		// SIGHUP, SIGINT and SIGTERM sent in this window were lost:
		// what no Go program can catch while its runtime starts.
		s.log.Info("upgrade: signals uncaught across the exec", "upgrade", r.id, "for", time.Duration(to-from),
			"from_monotonic_ns", from, "to_monotonic_ns", to, "carried", len(r.signals))
	}
	// They arrived during the upgrade, which the machine is still in:
	// a reload waits for its verdict, a stop follows it.
	for _, sig := range r.signals {
		s.feed(machine.EvSignal{Sig: signalName(sig)})
	}
	result, reason := "ok", ""
	if r.rolledBack != "" {
		result, reason = "rolled_back", r.rolledBack
	}
	s.feed(machine.EvUpgradeDone{ID: r.id, Result: result, Reason: reason, Note: r.note})
}

// rawFD returns f's descriptor without putting it in blocking mode, as
// f.Fd would: the flag of a socket belongs to every process that holds it.
func rawFD(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}
