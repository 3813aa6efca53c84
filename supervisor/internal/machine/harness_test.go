package machine

import (
	"fmt"
	"testing"
	"time"
)

var testMachineConfig = Config{
	ReadyTimeout: 60 * time.Second, DrainTimeout: 30 * time.Second,
	BackoffMin: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond, StableAfter: 10 * time.Second,
	DrainSignal: SIGTERM,
}

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// Exits as the driver reports them (Linux's numbers for the signals).
var (
	exit0     = exited(0)
	exit1     = exited(1)
	exit3     = exited(3)
	bySIGTERM = Exit{Code: 128 + 15, Signal: SIGTERM, Reason: "killed by signal SIGTERM"}
	bySIGKILL = Exit{Code: 128 + 9, Signal: SIGKILL, Reason: "killed by signal SIGKILL"}
)

func exited(code int) Exit { return Exit{Code: code, Reason: fmt.Sprintf("exit status %d", code)} }

// mtest drives a machine through events, answering every spawn with
// success (pid 1000+generation) unless told otherwise.
type mtest struct {
	t        *testing.T
	m        *Machine
	now      time.Time
	failNext bool // answer the next ActStart with a failure
	log      []Action
}

func newMtest(t *testing.T, cfg Config) *mtest {
	h := &mtest{t: t, m: New(cfg), now: t0}
	h.settle(h.m.Begin(h.now))
	return h
}

// settle answers spawns until none is left, and returns every action.
func (h *mtest) settle(acts []Action) []Action {
	var all []Action
	for len(acts) > 0 {
		all = append(all, acts...)
		var next []Action
		for _, a := range acts {
			if s, ok := a.(ActStart); ok {
				var ev Event = EvSpawned{Gen: s.Gen, PID: 1000 + s.Gen}
				if h.failNext {
					h.failNext = false
					ev = EvSpawnFailed{Gen: s.Gen, Err: "start: program: no such file or directory"}
				}
				next = append(next, h.m.Step(h.now, ev)...)
			}
		}
		acts = next
	}
	h.log = append(h.log, all...)
	return all
}

func (h *mtest) do(ev Event) []Action {
	h.t.Helper()
	return h.settle(h.m.Step(h.now, ev))
}

func (h *mtest) after(d time.Duration) { h.now = h.now.Add(d) }

// fire fires the armed timer of the given kind (of generation gen, 0 for
// the restart timer).
func (h *mtest) fire(kind TimerKind, gen int) []Action {
	h.t.Helper()
	for id, ref := range h.m.timers {
		if ref.kind == kind && (ref.gen == nil && gen == 0 || ref.gen != nil && ref.gen.id == gen) {
			return h.do(EvTimer{ID: id, Stderr: []string{"last words"}})
		}
	}
	h.t.Fatalf("no timer of kind %s armed for generation %d; armed: %v", kind, gen, h.m.timers)
	return nil
}

func (h *mtest) armed(kind TimerKind, gen int) bool {
	for _, ref := range h.m.timers {
		if ref.kind == kind && (ref.gen == nil && gen == 0 || ref.gen != nil && ref.gen.id == gen) {
			return true
		}
	}
	return false
}

func (h *mtest) state(gen int) State {
	if g := h.m.find(gen); g != nil {
		return g.state
	}
	return Exited
}

func signals(acts []Action, gen int) []Signal {
	var sigs []Signal
	for _, a := range acts {
		if s, ok := a.(ActSignal); ok && s.Gen == gen {
			sigs = append(sigs, s.Sig)
		}
	}
	return sigs
}

func replies(acts []Action) map[CallerID][]error {
	r := map[CallerID][]error{}
	for _, a := range acts {
		switch a := a.(type) {
		case ActReply:
			r[a.Caller] = append(r[a.Caller], a.Err)
		case ActExit:
			for _, c := range a.Callers {
				r[c] = append(r[c], nil)
			}
		}
	}
	return r
}

func find[T Action](acts []Action) (T, bool) {
	for _, a := range acts {
		if x, ok := a.(T); ok {
			return x, true
		}
	}
	var zero T
	return zero, false
}

func logged(acts []Action, msg string) bool {
	for _, a := range acts {
		if l, ok := a.(ActLog); ok && l.Msg == msg {
			return true
		}
	}
	return false
}
