package machine

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestMachineStop(t *testing.T) {
	for _, tc := range []struct {
		status Exit
		code   int
	}{
		{exit0, 0},
		{bySIGTERM, 0}, // a server without a handler for the drain signal
		{exit3, 3},
		{bySIGKILL, 137},
	} {
		t.Run(tc.status.Reason, func(t *testing.T) {
			h := newMtest(t, testMachineConfig)
			h.do(EvReady{Gen: 1})
			acts := h.do(EvStop{Caller: 2})
			if n, _ := find[ActNotify](acts); n.What != NotifyStopping {
				t.Errorf("no STOPPING=1: %v", acts)
			}
			if _, ok := find[ActRelease](acts); !ok {
				t.Error("sockets not released at the stop")
			}
			if !slices.Equal(signals(acts, 1), []Signal{SIGTERM}) || !h.armed(TimerDrain, 1) {
				t.Errorf("serving generation at stop: %v", acts)
			}
			if r := replies(acts); len(r) != 0 {
				t.Errorf("stop answered before the children exited: %v", r)
			}
			h.do(EvStop{Caller: 3})
			acts = h.do(EvExited{Gen: 1, Exit: tc.status})
			x, ok := find[ActExit](acts)
			if !ok || !slices.Equal(x.Callers, []CallerID{2, 3}) {
				t.Fatalf("exit %+v", x)
			}
			var xerr *ExitError
			if tc.code == 0 && x.Err != nil || tc.code != 0 && (!errors.As(x.Err, &xerr) || xerr.Code != tc.code) {
				t.Errorf("exit error %v, want code %d", x.Err, tc.code)
			}
		})
	}
}

// Bug 1: a SIGTERM during the first start, a child that ignores it and
// sends READY=1 later: the READY must not cancel the drain deadline.
func TestMachineStopDuringStartThenReady(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvSignal{Sig: SIGTERM})
	if h.state(1) != Draining || !h.armed(TimerDrain, 1) {
		t.Fatalf("starting generation at stop: %s %v", h.state(1), h.m.timers)
	}
	if acts := h.do(EvReady{Gen: 1}); len(acts) != 0 {
		t.Fatalf("READY=1 after the stop did %v", acts)
	}
	acts := h.fire(TimerDrain, 1)
	if !slices.Equal(signals(acts, 1), []Signal{SIGKILL}) {
		t.Fatalf("deadline: %v", acts)
	}
	acts = h.do(EvExited{Gen: 1, Exit: bySIGKILL})
	if _, ok := find[ActExit](acts); !ok || !logged(acts, "stopped before ready") {
		t.Errorf("never finished: %v", acts)
	}
}

// Bug 2: SIGHUP, SIGTERM, then the new child's READY=1: the old
// generation gets its drain signal once, and the new one keeps its drain
// deadline.
func TestMachineReloadStopReady(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	h.do(EvReady{Gen: 1})
	h.do(EvSignal{Sig: SIGHUP})
	h.do(EvSignal{Sig: SIGTERM})
	h.do(EvReady{Gen: 2})
	if got := signals(h.log, 1); !slices.Equal(got, []Signal{SIGTERM}) {
		t.Errorf("old generation got %v", got)
	}
	if !h.armed(TimerDrain, 2) || !h.armed(TimerDrain, 1) || h.state(2) != Draining {
		t.Errorf("drain deadlines: %v, new generation %s", h.m.timers, h.state(2))
	}
}

func TestMachineSignals(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	if acts := h.do(EvSignal{Sig: SIGUSR1}); len(signals(acts, 1)) != 0 {
		t.Error("forwarded to a child that does not serve yet")
	}
	h.do(EvReady{Gen: 1})
	if acts := h.do(EvSignal{Sig: SIGUSR2}); !slices.Equal(signals(acts, 1), []Signal{SIGUSR2}) {
		t.Errorf("USR2: %v", acts)
	}
	h.do(EvSignal{Sig: SIGHUP})
	h.do(EvSignal{Sig: SIGINT})
	acts := h.do(EvSignal{Sig: SIGINT})
	if !slices.Equal(signals(acts, 1), []Signal{SIGKILL}) || !slices.Equal(signals(acts, 2), []Signal{SIGKILL}) {
		t.Errorf("second SIGINT: %v", acts)
	}
}

func TestMachineReadyDelay(t *testing.T) {
	cfg := testMachineConfig
	cfg.ReadyDelay = 2 * time.Second
	h := newMtest(t, cfg)
	acts := h.fire(TimerReadyDelay, 1)
	if h.state(1) != Serving {
		t.Fatalf("after the delay: %s %v", h.state(1), acts)
	}
	if _, ok := find[ActDisarm](acts); !ok {
		t.Error("ready timeout left armed")
	}
}

func TestMachineStatusAndWatchdog(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	if acts := h.do(EvTick{}); len(acts) != 0 {
		t.Errorf("watchdog ping before anything serves: %v", acts)
	}
	h.do(EvReady{Gen: 1})
	if n, _ := find[ActNotify](h.do(EvTick{})); n.What != NotifyWatchdog {
		t.Error("no watchdog ping while serving")
	}
	h.do(EvReload{Caller: 1})
	acts := h.do(EvStatus{Caller: 2})
	st, ok := find[ActStatus](acts)
	if !ok || st.Caller != 2 || len(st.View.Gens) != 2 || st.View.Gens[0].State != Serving || st.View.Gens[1].State != Starting {
		t.Errorf("status %+v", st)
	}
}

func TestMachineStaleTimer(t *testing.T) {
	h := newMtest(t, testMachineConfig)
	var ready TimerID
	for id := range h.m.timers {
		ready = id
	}
	h.do(EvReady{Gen: 1})
	if acts := h.do(EvTimer{ID: ready}); len(acts) != 0 || h.state(1) != Serving {
		t.Errorf("a ready timeout that fired as READY=1 came did %v", acts)
	}
}
