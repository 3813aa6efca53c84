package machine

import (
	"maps"
	"slices"
	"testing"
)

// candidates lists the events that can happen next: signals, requests
// (a bounded number of callers), READY=1 from any generation, any exit of
// any live generation, and any timer firing, stale ones included.
func candidates(ps *pathState) []Event {
	m, obs := ps.m, ps.obs
	evs := []Event{EvSignal{Sig: SIGHUP}, EvSignal{Sig: SIGTERM}, EvSignal{Sig: SIGINT}, EvTick{}}
	next := CallerID(len(obs.callers) + 1)
	if len(obs.callers) < 3 {
		evs = append(evs, EvReload{Caller: next}, EvStop{Caller: next})
	}
	if len(obs.callers) < 3 {
		evs = append(evs, EvPromote{Caller: next}, EvRollback{Caller: next})
		if ps.upgrades {
			evs = append(evs, EvUpgrade{Caller: next, Binary: "/new/hitless"}, EvUpgrade{Caller: next, Binary: "/other/hitless"})
		}
	}
	// A caller of a reload or an upgrade that gives up before its verdict.
	for _, c := range slices.Sorted(maps.Keys(obs.callers)) {
		if k := obs.callers[c]; (k == "reload" || k == "upgrade") && obs.replied[c] == 0 && !obs.gaveUp[c] {
			evs = append(evs, EvCancel{Caller: c})
		}
	}
	if obs.checking != 0 {
		evs = append(evs, EvUpgradeChecked{ID: obs.checking}, EvUpgradeChecked{ID: obs.checking, Err: "not hitless"})
	}
	if obs.cancelled != 0 {
		evs = append(evs, EvUpgradeChecked{ID: obs.cancelled})
	}
	if obs.execing != 0 {
		evs = append(evs, EvUpgradeDone{ID: obs.execing, Result: "ok"}, EvUpgradeDone{ID: obs.execing, Result: "failed", Reason: "exec: ENOENT"})
	}
	for _, g := range m.gens {
		evs = append(evs, EvReady{Gen: g.id})
		if ps.watchdog {
			evs = append(evs, EvWatchdog{Gen: g.id, Kind: WatchdogPing}, EvWatchdog{Gen: g.id, Kind: WatchdogTrigger},
				EvWatchdog{Gen: g.id, Kind: WatchdogInterval, Interval: 0})
		}
		statuses := []Exit{exit0, exit1, bySIGTERM}
		if obs.killed[g.id] {
			statuses = []Exit{bySIGKILL}
		}
		for _, st := range statuses {
			evs = append(evs, EvExited{Gen: g.id, Exit: st})
		}
	}
	for _, id := range obs.armed {
		evs = append(evs, EvTimer{ID: id})
	}
	return evs
}

// expand returns the transitions for ev from ps, one per combination of
// spawn answers it needs, each with the state it leads to.
func expand(cfg Config, ps *pathState, ev Event, check func(transition) func(string, ...any)) ([]transition, []*pathState) {
	var trs []transition
	var states []*pathState
	var try func(answers []bool)
	try = func(answers []bool) {
		next := ps.clone()
		tr := transition{ev: ev, spawnFail: answers}
		if next.apply(cfg, tr, check(tr)) {
			trs, states = append(trs, tr), append(states, next)
			return
		}
		if len(answers) > 4 {
			return
		}
		try(append(slices.Clone(answers), false))
		try(append(slices.Clone(answers), true))
	}
	try(nil)
	return trs, states
}

func explore(t *testing.T, cfg Config, depth int, upgrades bool) (states, transitions int) {
	type node struct {
		path []transition
		ps   *pathState
	}
	seen := map[string]bool{}
	failed := false
	checker := func(path []transition) func(transition) func(string, ...any) {
		return func(tr transition) func(string, ...any) {
			return func(format string, a ...any) {
				if !failed {
					t.Errorf("after %v:\n"+format, append([]any{append(slices.Clone(path), tr)}, a...)...)
				}
				failed = true
			}
		}
	}
	// Each state is kept once, when first reached: the frontier holds
	// only states not seen before.
	var frontier []node
	add := func(list []node, path []transition, ps *pathState) []node {
		k := machineKey(ps.m) + "#" + ps.obs.key()
		if seen[k] {
			return list
		}
		seen[k] = true
		if diff := roundTrips(ps.m); diff != "" && !failed {
			t.Errorf("after %v: the Snapshot does not carry the whole machine:\n%s", path, diff)
			failed = true
		}
		return append(list, node{path: path, ps: ps})
	}
	trs, pss := expand(cfg, &pathState{m: New(cfg), obs: newObserver(), watchdog: cfg.Watchdog > 0, upgrades: upgrades}, nil, checker(nil))
	for i, tr := range trs {
		frontier = add(frontier, []transition{tr}, pss[i])
	}
	for d := 0; d < depth && len(frontier) > 0 && !failed; d++ {
		var next []node
		for _, n := range frontier {
			checkCompletion(t, cfg, n.path, n.ps.clone())
			if d == depth-1 {
				continue // the last level is checked, not expanded
			}
			for _, ev := range candidates(n.ps) {
				trs, pss := expand(cfg, n.ps, ev, checker(n.path))
				transitions += len(trs)
				for i, tr := range trs {
					next = add(next, append(slices.Clone(n.path), tr), pss[i])
				}
			}
			if failed || t.Failed() {
				return len(seen), transitions
			}
		}
		frontier = next
	}
	return len(seen), transitions
}

// checkCompletion stops the machine at the end of path and lets time pass
// with children that exit only when killed (the worst case: they ignore
// the drain signal). Every timer fires in turn and every killed child
// exits; the machine must finish, with every caller answered exactly once.
func checkCompletion(t *testing.T, cfg Config, path []transition, ps *pathState) {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Errorf("completing %v:\n"+format, append([]any{path}, a...)...)
	}
	caller := CallerID(len(ps.obs.callers) + 1)
	steps := []Event{EvStop{Caller: caller}}
	for i := 0; i < 50 && !ps.obs.finished; i++ {
		if len(steps) == 0 {
			if id := ps.obs.checking; id != 0 {
				steps = append(steps, EvUpgradeChecked{ID: id, Err: "refused"})
			}
			if id := ps.obs.cancelled; id != 0 {
				steps = append(steps, EvUpgradeChecked{ID: id})
			}
			if id := ps.obs.execing; id != 0 {
				steps = append(steps, EvUpgradeDone{ID: id, Result: "failed", Reason: "exec failed"})
			}
			for id := range ps.m.timers {
				steps = append(steps, EvTimer{ID: id})
			}
			for _, g := range ps.m.gens {
				if ps.obs.killed[g.id] {
					steps = append(steps, EvExited{Gen: g.id, Exit: bySIGKILL})
				}
			}
			if len(steps) == 0 {
				fail("stuck: nothing can happen, machine %s", machineKey(ps.m))
				return
			}
		}
		ev := steps[0]
		steps = steps[1:]
		// Spawns cannot happen while stopping; answer none.
		if !ps.apply(cfg, transition{ev: ev}, fail) {
			fail("a spawn during a stop")
			return
		}
	}
	if !ps.obs.finished {
		fail("the stop never finished: %s", machineKey(ps.m))
	}
}
