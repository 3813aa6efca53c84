//go:build linux

// Package upgrade replaces the running hitless with a new binary in the
// same process: the pid does not change, the children are not restarted,
// and every descriptor hitless holds (listening sockets, notify sockets,
// output pipes, the control socket) is kept.
//
// # Model
//
// The old image runs the new binary once in a check mode (CheckArg): it
// must start on this machine, say it is hitless, and understand the state
// format (a version number, StateVersion). Then the old image writes its
// state (named JSON sections, and named descriptors, whose close-on-exec
// flag it clears) to an anonymous memory file and calls execve on the new
// binary, from the main thread, with the memory file's number in
// HITLESS_UPGRADE_STATE. The new image finds it with Inherited, takes its
// descriptors back, and carries on.
//
// If the new image cannot restore the state, it calls Rollback, which
// executes the previous image again: a descriptor of it was opened at
// start (Self) and carried, so it works even when the old file was deleted
// or overwritten by the deploy. The old image restores the same state and
// learns why (State.RolledBack).
//
// Signals that arrive during the exec stay pending: the exec'ing thread
// blocks them first, and a blocked signal survives execve. A new Go
// runtime starts with that mask, and receives them once it asks for them
// (signal.Notify); children must not inherit the mask, which the
// supervisor's shim clears.
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
//   - Exec must be called from the thread that forked every child (the
//     main thread, locked by the program's init): a child's parent-death
//     signal is tied to the thread that forked it, and execve ends every
//     other thread.
//   - A new image that crashes before it can run Go code (a binary for
//     another CPU that passed the check under emulation, a runtime crash)
//     cannot roll back; the check makes that unlikely, not impossible.
//   - A signal that the old Go runtime received in the last microseconds
//     before the exec, but that the supervisor had not yet read, is lost.
//     Requests on the control socket are never lost: the socket, and the
//     connections waiting for an answer, are carried.
package upgrade
