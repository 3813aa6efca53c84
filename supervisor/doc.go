//go:build linux

// Package supervisor is the parent half of hitless: it holds listening
// sockets for its whole life and runs generations of a child server on
// them, replacing one generation by the next without refusing or resetting
// a connection.
//
// # Model
//
// New takes the sockets systemd passed (Config.Passed: a socket unit's,
// or those hitless kept in systemd's fd store) and binds every other
// socket, once, in blocking mode, as systemd hands sockets; with
// Config.FDStore, Run puts what New bound in the store, so that the
// sockets, and the connections waiting on them, outlive a crash of hitless
// (package sockets does all this). From New on, SIGHUP, SIGTERM, SIGINT, SIGUSR1 and
// SIGUSR2 are caught. Run starts the first generation: the child gets the
// sockets as fds 3, 4, ... with the systemd socket-activation variables
// (LISTEN_FDS, LISTEN_FDNAMES, and LISTEN_PID equal to its own pid, set by
// a shim, see ShimArg), the Server::Starter and einhorn variables,
// HITLESS_GENERATION, a private NOTIFY_SOCKET, and with Config.Watchdog
// WATCHDOG_USEC and WATCHDOG_PID; with Config.User, it runs as that user.
//
// A reload (SIGHUP, or Reload) starts a new generation on the same
// sockets and waits for its readiness: READY=1 on its notify socket from
// the child or anyone in its tree (see fromTree), or a fixed delay. Only
// then does the old generation get the drain signal, or, with Config.Trial,
// once the new one has served beside it for the trial (a crash, a missed
// watchdog, or Rollback during the trial drains the new one instead, and
// the old one, never signalled, serves on). A draining generation has the
// drain timeout to exit before its process group gets SIGKILL. Both
// generations accept from the same kernel queue while they overlap, so no
// connection waits on a process that has stopped accepting. A new
// generation that exits or is not ready in time fails the reload, and the
// serving generation is untouched; what is left of the failed one gets the
// drain signal too (it may have accepted connections already) and its
// process group SIGKILL at the drain timeout.
//
// Every decision lives in one place, the state machine of package
// supervisor/internal/machine: it takes events (signals, requests,
// READY=1, exits, timers) and returns actions (start, signal, arm a
// timer, reply, notify, log), with no goroutine, system call or clock of
// its own, and an exhaustive test explores its interleavings. One goroutine, Run's, is its driver: it
// feeds the events in order and carries out the actions (supervisor.go);
// the OS work sits behind osEnv, which the tests replace. A reload asked
// for while one is in flight is queued, and further requests join the
// queued one, so a burst of reloads ends in at most two starts, and never
// aborts the reload in flight.
//
// hitless is a subreaper and reaps every process re-parented to it; one
// loop owns every wait(2) in the process (see reaper), so nothing else in
// a program that uses this package may wait for children, os/exec
// included. Children lead their own process groups, and have no
// parent-death signal: a watcher process kills every generation's group
// when hitless dies, however it dies, or drains them if it dies during
// an upgrade's exec (see watcher.go, and its limits).
//
// Connections move between generations (connhandover.go, package
// internal/handover): every child gets HITLESS_HANDOVER; a child that
// takes part (childproc) sends a channel with a notification, and, when
// it drains, hands its idle connections over it; a Relay passes each to
// the serving generation, bounded (Config.HandOverMaxInFlight), and counts
// what happens, for Status. A child that sends no channel gets nothing
// else and is handed nothing.
//
// Upgrade replaces hitless's own binary in the same process (see package
// upgrade and handoff.go): the machine, the children, every descriptor,
// the signals not handled yet and the Carriers' state go across an
// execve, and Restore takes them back. A reload's callers are carried too:
// the request that waits for the verdict rejoins them (RejoinReload).
//
// # Limits
//
//   - Linux only: subreaper, SCM_CREDENTIALS and SCM_RIGHTS, /proc.
//   - One supervisor per process, and the process must not use os/exec.
//   - Run forks every child from the thread it runs on, and an upgrade
//     execs from it: with Config.Self, run it on the main goroutine locked
//     to the main thread (runtime.LockOSThread in an init function), or
//     upgrades are refused.
//   - The program path and working directory are resolved (through
//     symlinks) at every start, but the environment and arguments are
//     those given to New.
//   - Processes that leave the child's process group (setsid, setpgid)
//     are reaped when they exit but neither signalled at drain time nor
//     killed by the watcher.
//   - A child that accepts connections and then fails readiness gets the
//     drain signal; if it ignores it, its connections are reset when its
//     group is killed at the drain timeout. childproc sends READY=1 right
//     after it starts serving, so this is rare for Go children.
package supervisor
