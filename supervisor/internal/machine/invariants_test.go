package machine

// The specification: what every step of every path the interleaving test
// explores must keep (TestMachineInterleavings), and checkCompletion's
// promise that from any state a stop finishes, every caller answered
// exactly once, even with children that exit only when killed.

// step is what an invariant sees of one step: the event (nil for Begin),
// the state before it, the actions (the spawns' answers' included), and
// the machine and the observer after it.
type step struct {
	cfg  Config
	ev   Event
	pre  before
	acts []Action
	m    *Machine
	obs  *observer
}

// An invariant is one rule; check reports each breach through fail.
type invariant struct {
	name  string
	check func(s *step, fail func(format string, a ...any))
}

var invariants = []invariant{
	// What an event must not do.
	{"a READY=1 from a generation that is not starting changes nothing", func(s *step, fail func(string, ...any)) {
		if ev, ok := s.ev.(EvReady); ok && s.pre.starting != ev.Gen && (len(s.acts) != 0 || machineKey(s.m) != s.pre.key) {
			fail("READY=1 from generation %d, not the starting one, changed the machine: %v", ev.Gen, s.acts)
		}
	}},
	{"a timer disarmed before it fired changes nothing", func(s *step, fail func(string, ...any)) {
		if ev, ok := s.ev.(EvTimer); ok && !s.pre.armed[ev.ID] && len(s.acts) != 0 {
			fail("stale timer %d did %v", ev.ID, s.acts)
		}
	}},
	{"the answer of a check the machine cancelled changes nothing", func(s *step, fail func(string, ...any)) {
		if ev, ok := s.ev.(EvUpgradeChecked); ok && s.pre.stale && (len(s.acts) != 0 || machineKey(s.m) != s.pre.key) {
			fail("the answer of cancelled check %d changed the machine: %v", ev.ID, s.acts)
		}
	}},
	{"once finished, the machine does nothing", func(s *step, fail func(string, ...any)) {
		if s.pre.finished && len(s.acts) != 0 {
			fail("the machine acted after it finished: %v", s.acts)
		}
	}},

	// The drain signal and its deadline.
	{"a generation gets the drain signal once in its life", func(s *step, fail func(string, ...any)) {
		for _, a := range s.acts {
			if a, ok := a.(ActSignal); ok && a.Sig == s.cfg.DrainSignal && (s.obs.drainSig[a.Gen] > 1 || s.pre.drainSent[a.Gen]) {
				fail("generation %d sent the drain signal twice", a.Gen)
			}
		}
	}},
	{"drainSent says the drain signal went out, with its one deadline", func(s *step, fail func(string, ...any)) {
		for _, g := range s.m.gens {
			if g.drainSent != (s.obs.drainSig[g.id] == 1) || s.obs.drainArm[g.id] != s.obs.drainSig[g.id] {
				fail("generation %d: drain signals %d, deadlines %d, drainSent %v", g.id, s.obs.drainSig[g.id], s.obs.drainArm[g.id], g.drainSent)
			}
		}
	}},
	{"a drain timer is armed only after the drain signal, and once", func(s *step, fail func(string, ...any)) {
		drainTimers := map[int]int{}
		for _, ref := range s.m.timers {
			if ref.kind == TimerDrain {
				drainTimers[ref.gen.id]++
			}
		}
		for _, g := range s.m.gens {
			if drainTimers[g.id] > 1 || drainTimers[g.id] == 1 && !g.drainSent {
				fail("generation %d has %d drain timers", g.id, drainTimers[g.id])
			}
		}
	}},
	{"a generation told to drain never serves again", func(s *step, fail func(string, ...any)) {
		for _, g := range s.m.gens {
			if g.drainSent && g.state == Serving {
				fail("generation %d serves after it was told to drain", g.id)
			}
		}
	}},
	{"once stopping, every generation has been told to drain", func(s *step, fail func(string, ...any)) {
		for _, g := range s.m.gens {
			if s.m.stopping && !g.drainSent {
				fail("stopping, but generation %d (%s) was never told to drain", g.id, g.state)
			}
		}
	}},

	// The callers.
	{"only a caller waiting for a verdict gets a reply", func(s *step, fail func(string, ...any)) {
		for _, a := range s.acts {
			if a, ok := a.(ActReply); ok {
				if k := s.obs.callers[a.Caller]; k == "stop" || k == "" || s.obs.gaveUp[a.Caller] {
					fail("reply to %d (%q, gave up %v), which is not waiting for a reply", a.Caller, k, s.obs.gaveUp[a.Caller])
				}
			}
		}
	}},
	{"the exit answers the callers that asked to stop, and at the end every caller has had one reply, but those who gave up none", func(s *step, fail func(string, ...any)) {
		for _, a := range s.acts {
			x, ok := a.(ActExit)
			if !ok {
				continue
			}
			for _, c := range x.Callers {
				if s.obs.callers[c] != "stop" {
					fail("stop reply to %d, which did not ask to stop", c)
				}
			}
			for c := range s.obs.callers {
				if want := map[bool]int{false: 1, true: 0}[s.obs.gaveUp[c]]; s.obs.replied[c] != want {
					fail("at the end, caller %d (%s) got %d replies", c, s.obs.callers[c], s.obs.replied[c])
				}
			}
		}
	}},
	{"no caller gets two replies", func(s *step, fail func(string, ...any)) {
		for c, n := range s.obs.replied {
			if n > 1 {
				fail("caller %d got %d replies", c, n)
			}
		}
	}},

	// The generations.
	{"at most one generation serves", func(s *step, fail func(string, ...any)) {
		serving := 0
		for _, g := range s.m.gens {
			if g.state == Serving {
				serving++
			}
		}
		if serving > 1 {
			fail("%d generations serving", serving)
		}
	}},
	{"an exited generation is forgotten", func(s *step, fail func(string, ...any)) {
		for _, g := range s.m.gens {
			if g.state == Exited {
				fail("exited generation %d still listed", g.id)
			}
		}
	}},
	{"the starting generation is starting, and nothing starts once stopping", func(s *step, fail func(string, ...any)) {
		if g := s.m.starting; g != nil && (g.state != Starting || s.m.stopping) {
			fail("starting generation %d is %s (stopping %v)", g.id, g.state, s.m.stopping)
		}
	}},
	{"a generation on trial serves beside a serving one, and not once stopping", func(s *step, fail func(string, ...any)) {
		if g := s.m.trial; g != nil && (g.state != Trial || s.m.serving == nil || s.m.stopping) {
			fail("trial of generation %d (%s) with serving %v, stopping %v", g.id, g.state, s.m.serving != nil, s.m.stopping)
		}
	}},
	{"the trial timer belongs to the generation on trial", func(s *step, fail func(string, ...any)) {
		for _, ref := range s.m.timers {
			if ref.kind == TimerTrial && ref.gen != s.m.trial {
				fail("trial timer armed for generation %d, not on trial", ref.gen.id)
			}
		}
	}},
	{"a watchdog runs only for a generation that serves or is on trial", func(s *step, fail func(string, ...any)) {
		for _, ref := range s.m.timers {
			if ref.kind == TimerWatchdog && ref.gen.state != Serving && ref.gen.state != Trial {
				fail("watchdog armed for generation %d, which is %s", ref.gen.id, ref.gen.state)
			}
		}
	}},

	// The upgrade of hitless itself.
	{"the driver runs one upgrade's check or exec at a time, and only the running check is cancelled", func(s *step, fail func(string, ...any)) {
		checking, execing := s.pre.checking, s.pre.execing
		for _, a := range s.acts {
			switch a := a.(type) {
			case ActCheckUpgrade:
				if checking != 0 || execing != 0 {
					fail("upgrade %d checked while upgrade %d/%d is in flight", a.ID, checking, execing)
				}
				checking = a.ID
			case ActExecUpgrade:
				execing = a.ID
			case ActCancelCheck:
				if checking != a.ID {
					fail("cancelled check %d, but the check running is %d", a.ID, checking)
				}
				checking = 0
			}
		}
	}},
	{"the machine is checking exactly while the driver runs a check", func(s *step, fail func(string, ...any)) {
		if s.m.checking != (s.obs.checking != 0) {
			fail("the machine's check %v, the driver's %d", s.m.checking, s.obs.checking)
		}
	}},
	{"nothing starts during an upgrade, and no upgrade runs once stopping", func(s *step, fail func(string, ...any)) {
		// A generation on trial goes across an upgrade.
		if s.m.upgrading && (s.m.starting != nil || s.m.stopping) {
			fail("upgrading with starting %v, stopping %v", s.m.starting != nil, s.m.stopping)
		}
	}},
	{"only the hand-over defers a stop (a stop cancels the check)", func(s *step, fail func(string, ...any)) {
		if s.m.stopDeferred && (!s.m.upgrading || s.m.checking) {
			fail("a stop deferred while upgrading %v, checking %v: only the hand-over defers it", s.m.upgrading, s.m.checking)
		}
	}},
}
