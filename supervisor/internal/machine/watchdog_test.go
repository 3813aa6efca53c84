package machine

import (
	"slices"
	"testing"
	"time"
)

func TestMachineWatchdog(t *testing.T) {
	h := newMtest(t, trialConfig())
	if h.armed(TimerWatchdog, 1) {
		t.Fatal("watchdog enforced before READY=1")
	}
	h.do(EvWatchdog{Gen: 1, Kind: WatchdogPing}) // early pings are harmless
	h.do(EvReady{Gen: 1})
	if !h.armed(TimerWatchdog, 1) {
		t.Fatal("no watchdog once serving")
	}
	acts := h.do(EvWatchdog{Gen: 1, Kind: WatchdogPing})
	if a, ok := find[ActArm](acts); !ok || a.After != 2*time.Second {
		t.Errorf("a ping did not re-arm the watchdog: %v", acts)
	}
	acts = h.do(EvWatchdog{Gen: 1, Kind: WatchdogInterval, Interval: 5 * time.Second})
	if a, _ := find[ActArm](acts); a.After != 5*time.Second {
		t.Errorf("WATCHDOG_USEC= did not change the interval: %v", acts)
	}
	acts = h.fire(TimerWatchdog, 1)
	if !slices.Equal(signals(acts, 1), []Signal{SIGABRT}) || !h.armed(TimerAbort, 1) || h.m.stats.WatchdogKills != 1 {
		t.Fatalf("watchdog expiry: %v", acts)
	}
	if acts := h.do(EvWatchdog{Gen: 1, Kind: WatchdogPing}); len(acts) != 0 {
		t.Errorf("a ping after the expiry did %v", acts)
	}
	acts = h.fire(TimerAbort, 1)
	if !slices.Equal(signals(acts, 1), []Signal{SIGKILL}) {
		t.Errorf("after the grace: %v", acts)
	}
	acts = h.do(EvExited{Gen: 1, Exit: bySIGKILL})
	var l ActLog
	for _, a := range acts {
		if x, ok := a.(ActLog); ok && x.Msg == "serving child died" {
			l = x
		}
	}
	if !slices.Contains(l.Attrs, any("killed by signal SIGKILL (after its watchdog expired)")) || h.m.restart == 0 {
		t.Errorf("exit after the watchdog: %+v, restart %v", l, h.m.restart)
	}
	// WATCHDOG_USEC=0 turns it off.
	h2 := newMtest(t, trialConfig())
	h2.do(EvReady{Gen: 1})
	h2.do(EvWatchdog{Gen: 1, Kind: WatchdogInterval})
	if h2.armed(TimerWatchdog, 1) {
		t.Error("WATCHDOG_USEC=0 left the watchdog armed")
	}
}
