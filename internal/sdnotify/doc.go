// Package sdnotify speaks the sd_notify protocol of systemd in both
// directions.
//
// # Model
//
// A notification is one datagram on an AF_UNIX SOCK_DGRAM socket, holding
// newline-separated KEY=VALUE lines such as READY=1 or STATUS=serving.
//
// Notifier is the sending side: hitless reporting its own state to
// systemd (READY=1 when serving, RELOADING=1 while a reload runs,
// STOPPING=1, STATUS=, watchdog pings), and keeping its listening sockets
// in systemd's file descriptor store (StoreFD, RemoveStoredFD: FDSTORE=1
// with the descriptor attached), so that they outlive a crash of hitless.
// FromEnv builds one from NOTIFY_SOCKET and removes that variable,
// WATCHDOG_USEC, WATCHDOG_PID and FDSTORE from the process environment, so
// that no child hitless starts can reach the unit's socket: a child that
// sent STOPPING=1 there would stop the whole unit. A nil *Notifier is valid and does nothing, which is what FromEnv
// returns when hitless does not run under systemd.
//
// Conn is the receiving side: the private socket the supervisor gives each
// child as its NOTIFY_SOCKET. Conn enables SO_PASSCRED, so each Message
// carries the sender's pid, uid and gid as the kernel reports them, never as
// the payload claims; the supervisor decides from that pid which child
// spoke.
//
// # Limits
//
// Conn, and Notifier.Reloading (MONOTONIC_USEC is Linux's
// CLOCK_MONOTONIC), need Linux: elsewhere they fail at run time with an
// error wrapping errors.ErrUnsupported. The package builds everywhere, so
// that what imports it does too; the rest of Notifier sends wherever unix
// datagram sockets exist (Linux, macOS, the BSDs; not Windows).
// Filesystem and abstract ("@name") socket addresses only; the
// vsock: addresses newer systemd uses for virtual machines are refused.
// Datagrams larger than MaxMessageSize are rejected, as systemd rejects
// them. File descriptors sent along with a notification (FDSTORE=1) are
// closed by Read, which says so in the Message: a child cannot store
// descriptors with hitless. ReadFDs, for a receiver that plays the service
// manager (a test's), keeps them.
package sdnotify
