package machine_test

import (
	"fmt"
	"time"

	"github.com/hitless/hitless/supervisor/internal/machine"
)

// A reload, as the driver sees it: the machine says what to do, the
// driver does it and feeds back what happened.
func Example() {
	m := machine.New(machine.Config{
		ReadyTimeout: time.Minute, DrainTimeout: 30 * time.Second, DrainSignal: machine.SIGTERM,
		BackoffMin: time.Second, BackoffMax: time.Minute, StableAfter: time.Minute,
	})
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	show := func(acts []machine.Action) {
		for _, a := range acts {
			switch a := a.(type) {
			case machine.ActStart:
				fmt.Printf("start generation %d (%s)\n", a.Gen, a.Kind)
			case machine.ActSignal:
				fmt.Printf("send %s to generation %d (pid %d)\n", a.Sig, a.Gen, a.PID)
			case machine.ActArm:
				fmt.Printf("arm timer %d: %s of generation %d, in %v\n", a.ID, a.Kind, a.Gen, a.After)
			case machine.ActDisarm:
				fmt.Printf("disarm timer %d\n", a.ID)
			case machine.ActReply:
				fmt.Printf("answer caller %d: %v\n", a.Caller, a.Err)
			}
		}
	}
	show(m.Begin(now))
	show(m.Step(now, machine.EvSpawned{Gen: 1, PID: 100}))
	show(m.Step(now, machine.EvReady{Gen: 1}))
	show(m.Step(now, machine.EvReload{Caller: 7}))
	show(m.Step(now, machine.EvSpawned{Gen: 2, PID: 200}))
	show(m.Step(now.Add(time.Second), machine.EvReady{Gen: 2}))
	show(m.Step(now.Add(2*time.Second), machine.EvExited{Gen: 1, Exit: machine.Exit{Reason: "exit status 0"}}))
	// Output:
	// start generation 1 (initial)
	// arm timer 1: ready of generation 1, in 1m0s
	// disarm timer 1
	// start generation 2 (reload)
	// arm timer 2: ready of generation 2, in 1m0s
	// disarm timer 2
	// send SIGTERM to generation 1 (pid 100)
	// arm timer 3: drain of generation 1, in 30s
	// answer caller 7: <nil>
	// disarm timer 3
}
