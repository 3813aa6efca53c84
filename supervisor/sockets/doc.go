// Package sockets makes the listening sockets that hitless holds for its
// whole life and hands to every generation of its child: it reads them
// as the --listen flag gives them (ParseListen), takes those systemd
// passed, binds the others (Open), and says what goes to systemd's file
// descriptor store (StorePlan). The supervisor then only passes each
// Socket's descriptor to every child, as fds 3, 4, ...
//
// # Model
//
// A socket is made once, when hitless starts, and kept as a plain
// descriptor: hitless never accepts on it, and the children that inherit
// it come and go while its accept queue stays. Open makes the sockets of
// Config.Listen in three steps:
//
//  1. Match, without a system call: which socket systemd passed
//     (Config.Passed, read by PassedFromEnv) each --listen takes. A
//     systemd://NAME socket is the one passed under NAME. A URL socket is
//     the passed one of its own name and address (one hitless stored,
//     perhaps on a port the kernel chose), else one of its address (a
//     socket unit's), else none. "Of its address" is the rule childproc
//     applies to what it inherits (internal/listenfds), at its strictest:
//     the passed socket must be the one hitless would bind, its host's
//     own address (a name stands for what it resolves to) or, for every
//     address, the wildcard of either family; a socket that only covers
//     the address (0.0.0.0:8080 for 127.0.0.1:8080) would serve more than
//     was asked for, and is not taken.
//  2. Bind: every --listen that took no passed socket is bound, in
//     blocking mode, as systemd hands sockets; the URL's options
//     (backlog, nonblock, mode, owner, group) apply. Passed sockets
//     nobody asked for are then closed.
//  3. The fd store's bookkeeping: with Config.FDStore, the StorePlan
//     drops from the store the names nobody asked for (FDSTOREREMOVE=1),
//     so that the store holds what the configuration says, and stores
//     every socket hitless bound (FDSTORE=1, FDNAME=its name). The
//     supervisor applies it once, before the first child starts. A socket
//     taken from systemd is not stored again, the store or the socket
//     unit has it, unless its name was dropped.
//
// systemd keeps the stored sockets while hitless restarts, so a crash of
// hitless refuses no connection: they wait in the socket's queue, which
// systemd holds, until the next hitless hands the socket to a new child.
//
// A socket taken from systemd is used as it is: hitless changes none of
// its options, O_NONBLOCK above all. Those of a URL were applied when
// hitless bound it, before storing it; a socket unit's are the unit's.
//
// # Limits
//
//   - Open, Socket and what systemd passes are Linux only; ListenSpec and
//     ParseListen build everywhere.
//   - A passed socket is known by its name, type and address only: a
//     socket hitless stored and a socket unit's of the same address look
//     alike, and Source says "store" for both when hitless has a store.
//   - A host name is looked up once, when Open starts, to be compared
//     with what systemd passed, and only if systemd passed something;
//     binding it looks it up again, as net.Listen does.
//   - A unix socket file is removed when hitless closes the socket only if
//     hitless created it and did not put it in the fd store.
package sockets
