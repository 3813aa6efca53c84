//go:build linux

// Package upgrade replaces the running hitless with a new binary in the
// same process: the pid does not change, the children are not restarted,
// and every descriptor hitless holds (listening sockets, notify sockets,
// output pipes, the control socket) is kept.
//
// # Model
//
// The old image runs the new binary once in a check mode (CheckArg), the
// way the exec will run it (through the same descriptor, open across the
// exec, with the same environment; a #! script that executes hitless
// works both ways): it must start on this machine, say it is hitless,
// answer from the pid the check started (a wrapper script that runs
// hitless without exec answers from a child of its own, and is refused),
// and understand the state format (a version number, StateVersion; a
// build reads every version from MinStateVersion on). Then the
// old image writes its
// state (named JSON sections, and named descriptors, whose close-on-exec
// flag it clears) to an anonymous memory file and calls execve on the new
// binary, from the main thread, with the memory file's number in
// HITLESS_UPGRADE_STATE. The new image finds it with Inherited (which
// refuses a state another pid handed over), takes its descriptors back,
// and carries on. The exec through /proc/self/fd/N would rename the
// process "N": the new image takes its name back (package earlysig).
//
// If the new image cannot restore the state, it calls Rollback, which
// executes the previous image again: a descriptor of it was opened at
// start (Self) and carried, so it works even when the old file was deleted
// or overwritten by the deploy. The old image restores the same state and
// learns why (State.RolledBack).
//
// Signals (SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2) cross the exec as
// far as a Go program can keep them (see signals.go): the exec'ing thread
// takes every one the kernel or the Go runtime caught and the program had
// not read, and the next image gets them in State.Signals; it executes the
// new image with SIGHUP, SIGINT and SIGTERM ignored (so that none is
// fatal before the new image catches them) and SIGUSR1 and SIGUSR2
// blocked (they stay pending until it asks for them). The new image
// catches all five from its first package initialisation on (package
// earlysig, which also ignores SIGPIPE again: a Go runtime does not keep
// an inherited SIG_IGN for it), long before the rest of the program
// starts, and the program takes them with State.TakeSignals. A rollback
// carries them back the same way. Children must not inherit the mask,
// which the supervisor's shim clears.
//
// # Why not tableflip
//
// cloudflare/tableflip, which the design of hitless started from, upgrades
// a process by starting the new binary as a child that inherits the
// listening sockets, then letting the old process exit. That gives the
// service a new pid (init systems lose track of it: tableflip#6, #59), and
// the old process's children, which hitless supervises, would lose their
// parent, and die of their parent-death signal. Its Fds registry also
// holds sockets as Go listeners, whose O_NONBLOCK flag a blocking child
// must not see. This package keeps tableflip's idea (name what is handed
// over; the new process finds it by name) and replaces its mechanism
// (fork a successor) with an exec in place.
//
// # Limits
//
//   - Linux only (memfd_create, /proc/self/exe, /proc/self/fd).
//   - Exec ends every thread but the calling one: call it from the
//     thread the program's children and state belong to (hitless: the
//     main thread, locked by its init). A child with a parent-death
//     signal would get it if the thread that forked it is not the one
//     that execs (hitless's children have none).
//   - A new image that crashes before it can run Go code (a binary for
//     another CPU that passed the check under emulation, a runtime crash)
//     cannot roll back; the check makes that unlikely, not impossible.
//   - No Go program can catch a signal while its runtime starts: the
//     runtime unblocks SIGHUP, SIGINT and SIGTERM before any Go code
//     runs, and kills the process on a SIGTERM that arrives after it set
//     up its handlers and before signal.Notify. So a SIGHUP, SIGINT or
//     SIGTERM sent in the window from the old image ignoring them to the
//     new image catching them is lost, and a SIGTERM in the last part of
//     it (after the new runtime's signal set-up, before earlysig's init)
//     ends the new image (the supervisor's watcher, told an exec was under
//     way, then drains the children rather than kill them; but where
//     hitless is PID 1 of a namespace, its death ends the namespace, and
//     nothing is drained). The new image logs the window of each upgrade
//     (State.Uncaught); docs/reliability.md gives the measured figures.
//     A SIGUSR1 or
//     SIGUSR2 is lost only if the old runtime catches it in the last
//     moments before the exec. Requests on the control socket are never
//     lost: the socket, and the connections waiting for an answer, are
//     carried. Where a lost signal matters, use them (hitless reload,
//     hitless stop).
package upgrade
