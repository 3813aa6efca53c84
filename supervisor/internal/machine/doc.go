// Package machine is the supervisor's reload state machine: every decision
// about generations of the child, reloads, trials, watchdogs, stops,
// crash restarts and upgrades of hitless itself, and nothing else.
//
// # Model
//
// The driver (package supervisor, one goroutine) feeds the machine one
// event at a time, in the order things happened, with the time: a
// signal, a caller's request, a child's READY=1 or exit, a timer firing.
// Step changes the state and returns the actions the driver must carry
// out, in order: start a generation, signal a process group, arm or
// disarm a timer, answer a caller, notify the service manager, log. The
// driver answers ActStart (EvSpawned or EvSpawnFailed) before any other
// event, and that is the only answer the machine waits for: everything
// else it learns when it happens.
//
// The machine starts no goroutine, makes no system call and reads no
// clock: time comes in with each event, and what the driver observed (a
// pid, an exit, the last lines a child wrote) comes in as an event too.
// Its imports prove it (pure_test.go checks them), and it builds on every
// system Go does, so that its tests, among them the exhaustive
// interleaving test that explores every order of events up to a depth
// and checks the invariants of invariants_test.go after every step, run
// anywhere.
//
// The transition table is the switch in Step (step.go): each event's
// rules are in the method it names, and two rules close every step: a
// queued upgrade begins once nothing holds it back (upgradeWhenFree), and
// a stop ends once the last generation has exited (finishWhenEmpty). The
// rest is one topic a file: events.go and actions.go (the machine's
// alphabet), reload.go (a generation from its start to its verdict),
// trial.go (serving beside the old generation before taking over),
// watchdog.go, generation.go (a generation's drain and exit, and crash
// restarts), stop.go (signals and the stop), timers.go, upgrade.go
// (hitless replacing its own binary), state.go (the state written down
// for an upgrade) and errors.go (the verdicts callers get).
//
// # Limits
//
//   - One event at a time: Step is not safe for concurrent use, and the
//     driver must feed the answers to ActStart before anything else.
//   - Signals are names ("SIGTERM"); the driver maps them to the system's
//     numbers.
//   - Snapshot is a format (see state.go): an image restores what the
//     image before it wrote, so a change to it is versioned and pinned by
//     the golden files in testdata/.
package machine
