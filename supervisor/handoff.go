//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/internal/sdnotify"
	"github.com/hitless/hitless/supervisor/sockets"
	"github.com/hitless/hitless/upgrade"
)

// The supervisor's side of an in-place upgrade (package upgrade): it
// stops following its children without letting go of them, writes down
// everything it holds, and execs the new binary, which takes it all back
// (Restore) and carries on. The machine decides when (upgrade.go's events
// in machine.go); this file does it.

// A Carrier is something besides the supervisor that an upgrade must
// carry across the exec: the control socket and the requests waiting on
// it, a metrics listener.
type Carrier interface {
	// Handoff stops the carrier's work and puts what the next image
	// needs in st: sections and descriptors. The exec follows at once;
	// ctx bounds the wait for work in flight.
	Handoff(ctx context.Context, st *upgrade.State) error
	// Resume undoes Handoff, when the exec failed.
	Resume()
}

// AddCarrier adds c to what an upgrade carries (Config.Carriers), for a
// carrier made after New, such as the control socket, which is listened
// on only once the sockets are bound. Call it before Run.
func (s *Supervisor) AddCarrier(c Carrier) {
	s.cfg.Carriers = append(s.cfg.Carriers, c)
}

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
		s.checked <- checked{id: id, err: errors.New("the supervisor does not run on the main thread, from which every child was started: an exec would kill them")}
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		defer cancel()
		bin, err := upgrade.Check(ctx, path, s.startChecked)
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
	for _, c := range s.cfg.Carriers {
		if err := c.Handoff(ctx, st); err != nil {
			resumeCarriers()
			return fmt.Errorf("hand over: %w", err)
		}
		handed = append(handed, c)
	}
	s.quiesce()
	err := s.export(st)
	if err == nil {
		s.log.Info("upgrade: handing over", "upgrade", id, "binary", bin.Path, "version", bin.Info.Version,
			"generations", len(s.children), "sockets", len(s.sockets))
		err = s.os.exec(bin, st)
	}
	s.resume()
	resumeCarriers()
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
	for done := false; !done; {
		select {
		case <-quiet:
			done = true
		case ev := <-s.events:
			s.feed(ev)
		case sig := <-s.sigc:
			s.feed(evSignal{sig: sig.(syscall.Signal)})
		case req := <-s.reqs:
			s.request(req)
		}
	}
	for more := true; more; {
		select {
		case ev := <-s.events:
			s.feed(ev)
		case sig := <-s.sigc:
			s.feed(evSignal{sig: sig.(syscall.Signal)})
		default:
			more = false
		}
	}
	for _, t := range s.timers {
		t.Stop()
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

// handoff is the supervisor's section of the upgrade state.
type handoff struct {
	Machine  machineState  `json:"machine"`
	Timers   []timerState  `json:"timers"`
	Children []childState  `json:"children"`
	Sockets  []socketState `json:"sockets"`
	Rundir   string        `json:"rundir"`
	Watcher  int           `json:"watcher"` // its pid
	Started  time.Time     `json:"started"` // when hitless first started
	// HandOver is the connection Relay, paused; absent from the state of
	// an image without one.
	HandOver *handover.RelayState `json:"handover,omitempty"`
}

type timerState struct {
	ID       timerID       `json:"id"`
	Gen      int           `json:"gen"`
	Deadline time.Duration `json:"in"` // from the export
}

type childState struct {
	ID       int    `json:"id"`
	PID      int    `json:"pid"`
	Notify   string `json:"notify"`
	Outs     []bool `json:"outs"` // each output pipe: true for stderr
	Stderr   []byte `json:"stderr"`
	Status   string `json:"status"`
	Stopping bool   `json:"stopping"`
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
	h := handoff{Machine: exportMachine(s.m), Rundir: s.rundir.path, Watcher: s.watcher.pid, Started: s.started}
	now := time.Now()
	for id, t := range s.timers {
		h.Timers = append(h.Timers, timerState{ID: id, Gen: t.gen, Deadline: t.deadline.Sub(now)})
	}
	var errs []error
	carry := func(name string, c syscall.Conn) { errs = append(errs, st.CarryConn(name, c)) }
	for _, c := range s.children {
		cs := childState{ID: c.id, PID: c.pid, Notify: c.notify.Path(), Stderr: c.stderr.bytes()}
		cs.Status, cs.Stopping = c.lastStatus()
		carry(fmt.Sprintf("child/%d/notify", c.id), c.notify)
		for i, p := range c.outs {
			cs.Outs = append(cs.Outs, p.stderr)
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
	file := func(format string, a ...any) (*os.File, error) {
		name := fmt.Sprintf(format, a...)
		if f := st.File(name); f != nil {
			return f, nil
		}
		return nil, fmt.Errorf("restore: the state carries no %s", name)
	}
	for i, ss := range h.Sockets {
		f, err := file("socket/%d", i)
		if err != nil {
			return nil, err
		}
		s.sockets = append(s.sockets, &sockets.Socket{Spec: ss.Spec, File: f, FD: rawFD(f), Addr: ss.Addr, Source: ss.Source, Created: ss.Created})
	}
	lock, err := file("rundir/lock")
	if err != nil {
		return nil, err
	}
	s.rundir = &rundir{path: h.Rundir, lock: lock}
	w, err := file("watcher")
	if err != nil {
		return nil, err
	}
	s.watcher = &watcher{w: w, pid: h.Watcher, exit: make(chan unix.WaitStatus, 1)}
	r := &restoredState{
		timers: h.Timers, id: st.ID, rolledBack: st.RolledBack,
		adopt: map[int]func(unix.WaitStatus){h.Watcher: func(ws unix.WaitStatus) { s.watcher.exit <- ws }},
		exits: make(map[int]chan unix.WaitStatus),
	}
	for _, cs := range h.Children {
		c := &child{id: cs.ID, pid: cs.PID, stderr: &tail{max: stderrKept}, status: cs.Status, stopping: cs.Stopping}
		c.stderr.Write(cs.Stderr)
		nf, err := file("child/%d/notify", cs.ID)
		if err != nil {
			return nil, err
		}
		if c.notify, err = sdnotify.FileConn(nf, cs.Notify); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		st.CloseLater(nf) // the Conn holds a duplicate
		for i, stderr := range cs.Outs {
			f, err := file("child/%d/out/%d", cs.ID, i)
			if err != nil {
				return nil, err
			}
			c.outs = append(c.outs, outPipe{r: f, stderr: stderr})
		}
		exitc := make(chan unix.WaitStatus, 1)
		r.adopt[c.pid] = s.exited(exitc)
		r.exits[c.id] = exitc
		s.children[c.id] = c
	}
	m, err := importMachine(h.Machine, s.machineConfig())
	if err != nil {
		return nil, err
	}
	if err := s.importHandOver(h, st); err != nil {
		return nil, err
	}
	s.m, s.started, s.restored = m, h.Started, r
	return s, nil
}

// restoredState is what Run needs of a restored supervisor.
type restoredState struct {
	timers     []timerState
	id         int
	rolledBack string
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
	result, reason := "ok", ""
	if r.rolledBack != "" {
		result, reason = "rolled_back", r.rolledBack
	}
	s.feed(evUpgradeDone{id: r.id, result: result, reason: reason})
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

// machineState is the machine, written down. Callers are left out: they
// are channels of this image; whoever waited is carried by the control
// socket and asks again.
type machineState struct {
	Gens          []genState    `json:"gens"`
	LastID        int           `json:"last_id"`
	Serving       int           `json:"serving"`
	Starting      int           `json:"starting"`
	Trial         int           `json:"trial"`
	Pending       bool          `json:"pending"`
	QueuedAt      time.Time     `json:"queued_at"`
	Stopping      bool          `json:"stopping"`
	Restart       timerID       `json:"restart"`
	Backoff       time.Duration `json:"backoff"`
	ExitCode      int           `json:"exit_code"`
	InitErr       string        `json:"init_err"`
	Timers        []timerRefOf  `json:"timers"`
	LastTimer     timerID       `json:"last_timer"`
	Upgrading     bool          `json:"upgrading"`
	UpgradeID     int           `json:"upgrade_id"`
	UpgradeBinary string        `json:"upgrade_binary"`
	UpgradeQueued bool          `json:"upgrade_queued"`
	StopDeferred  bool          `json:"stop_deferred"`
	RestartDue    bool          `json:"restart_due"`
	Stats         Stats         `json:"stats"`
}

type genState struct {
	ID         int           `json:"id"`
	Kind       startKind     `json:"kind"`
	PID        int           `json:"pid"`
	State      State         `json:"state"`
	Started    time.Time     `json:"started"`
	ReadyAt    time.Time     `json:"ready_at"`
	DrainAt    time.Time     `json:"drain_at"`
	AskedAt    time.Time     `json:"asked_at"`
	Ready      timerID       `json:"ready"`
	Delay      timerID       `json:"delay"`
	Drain      timerID       `json:"drain"`
	DrainSent  bool          `json:"drain_sent"`
	TrialT     timerID       `json:"trial"`
	TrialEnds  time.Time     `json:"trial_ends"`
	WDInterval time.Duration `json:"wd_interval"`
	Watchdog   timerID       `json:"watchdog"`
	Abort      timerID       `json:"abort"`
	WDFired    bool          `json:"wd_fired"`
}

type timerRefOf struct {
	ID   timerID   `json:"id"`
	Kind timerKind `json:"kind"`
	Gen  int       `json:"gen"` // 0 for the restart timer
}

func exportMachine(m *machine) machineState {
	id := func(g *mgen) int {
		if g == nil {
			return 0
		}
		return g.id
	}
	ms := machineState{
		LastID: m.lastID, Serving: id(m.serving), Starting: id(m.starting), Trial: id(m.trial),
		Pending: m.pending, QueuedAt: m.queuedAt, Stopping: m.stopping,
		Restart: m.restart, Backoff: m.backoff, ExitCode: m.exitCode, LastTimer: m.lastTimer,
		Upgrading: m.upgrading, UpgradeID: m.upgradeID, UpgradeBinary: m.upgradeBinary,
		UpgradeQueued: m.upgradeQueued, StopDeferred: m.stopDeferred, RestartDue: m.restartDue, Stats: m.stats,
	}
	if m.initErr != nil {
		ms.InitErr = m.initErr.Error()
	}
	for _, g := range m.gens {
		ms.Gens = append(ms.Gens, genState{
			ID: g.id, Kind: g.kind, PID: g.pid, State: g.state, Started: g.started, ReadyAt: g.readyAt,
			DrainAt: g.drainAt, AskedAt: g.askedAt, Ready: g.ready, Delay: g.delay, Drain: g.drain,
			DrainSent: g.drainSent, TrialT: g.trial, TrialEnds: g.trialEnds, WDInterval: g.wdInterval,
			Watchdog: g.watchdog, Abort: g.abort, WDFired: g.wdFired,
		})
	}
	for tid, ref := range m.timers {
		ms.Timers = append(ms.Timers, timerRefOf{ID: tid, Kind: ref.kind, Gen: id(ref.gen)})
	}
	return ms
}

func importMachine(ms machineState, cfg machineConfig) (*machine, error) {
	m := newMachine(cfg)
	gens := map[int]*mgen{}
	for _, gs := range ms.Gens {
		g := &mgen{
			id: gs.ID, kind: gs.Kind, pid: gs.PID, state: gs.State, started: gs.Started, readyAt: gs.ReadyAt,
			drainAt: gs.DrainAt, askedAt: gs.AskedAt, ready: gs.Ready, delay: gs.Delay, drain: gs.Drain,
			drainSent: gs.DrainSent, trial: gs.TrialT, trialEnds: gs.TrialEnds, wdInterval: gs.WDInterval,
			watchdog: gs.Watchdog, abort: gs.Abort, wdFired: gs.WDFired,
		}
		gens[g.id] = g
		m.gens = append(m.gens, g)
	}
	find := func(what string, id int) (*mgen, error) {
		if id == 0 {
			return nil, nil
		}
		if g := gens[id]; g != nil {
			return g, nil
		}
		return nil, fmt.Errorf("restore: the %s generation %d is not in the state", what, id)
	}
	var err error
	if m.serving, err = find("serving", ms.Serving); err != nil {
		return nil, err
	}
	if m.starting, err = find("starting", ms.Starting); err != nil {
		return nil, err
	}
	if m.trial, err = find("trial", ms.Trial); err != nil {
		return nil, err
	}
	for _, t := range ms.Timers {
		g, err := find("timer's", t.Gen)
		if err != nil {
			return nil, err
		}
		m.timers[t.ID] = timerRef{kind: t.Kind, gen: g}
	}
	m.lastID, m.pending, m.queuedAt, m.stopping = ms.LastID, ms.Pending, ms.QueuedAt, ms.Stopping
	m.restart, m.backoff, m.exitCode, m.lastTimer = ms.Restart, ms.Backoff, ms.ExitCode, ms.LastTimer
	m.upgrading, m.upgradeID, m.upgradeBinary = ms.Upgrading, ms.UpgradeID, ms.UpgradeBinary
	m.upgradeQueued, m.stopDeferred, m.restartDue, m.stats = ms.UpgradeQueued, ms.StopDeferred, ms.RestartDue, ms.Stats
	if ms.InitErr != "" {
		m.initErr = errors.New(ms.InitErr)
	}
	return m, nil
}
