// Package childproc is what a server imports to run correctly under a
// hot-restart supervisor such as hitless, systemd socket activation,
// Server::Starter or einhorn: it takes the listening sockets it is given,
// says when it is ready, and, when told to stop, drains without dropping a
// request or losing queued work.
//
// # The model
//
// A supervisor owns the listening sockets for the whole life of the
// service and hands duplicates to each generation of the server. To
// upgrade, it starts a new generation on the same sockets, waits for it to
// report READY=1, and only then sends the old one SIGTERM. Both
// generations accept from the same kernel queue while they overlap, so no
// connection is refused; the old one must then stop accepting, finish
// what it started, and exit.
//
// The whole server:
//
//	func run() error {
//		socks, err := childproc.Inherit()
//		if err != nil {
//			return err
//		}
//		ln, err := socks.Listen("tcp", ":8080") // inherited, or bound when run by hand
//		if err != nil {
//			return err
//		}
//		lc := childproc.New(childproc.Options{})
//		lc.ServeHTTP(&http.Server{Handler: handler}, ln)
//		lc.AddCloser("db", func(ctx context.Context) error { return db.Close() })
//		return lc.Run() // READY=1, then wait for SIGTERM, then drain in order
//	}
//
// Inherit reads LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES (systemd, and
// hitless), SERVER_STARTER_PORT or EINHORN_FD_*, and removes them from the
// environment. A process that is not supervised gets nothing, and Listen
// binds the address itself, so go run still works on a laptop. A
// supervised process that asks for an address it was not given gets an
// error listing what it was given, instead of "address already in use".
//
// Lifecycle.Run drains in an order that loses nothing: stop accepting
// (close this process's copy of the listener, never shutdown(2)), a
// lame-duck window in which every HTTP/1 response says "Connection:
// close", http.Server.Shutdown (GOAWAY for HTTP/2) only once no HTTP/1
// connection is new or active, then background tasks (Lifecycle.Go), then
// closers in reverse order. See Run for why that order, measured against
// net/http in Go 1.26.
//
// # Handing connections over
//
// Under hitless (which sets HITLESS_HANDOVER), a draining generation does
// not close its idle keep-alive connections: it hands each one, at a
// request boundary, to the generation that serves after it, which serves
// it as if it had just accepted it. The client keeps its connection, its
// next request is answered by the new generation, and the old one is gone
// as soon as its last response is out. This is on by default
// (Options.DisableHandOver turns it off) and needs no code: Run opens a
// channel to hitless (a SOCK_SEQPACKET socket pair whose other end goes
// to NOTIFY_SOCKET) before READY=1, and says which listeners it serves;
// at the drain it asks hitless which generation adopts, and hands each
// connection over (its descriptor, SCM_RIGHTS) at its next boundary.
// Any other supervisor, an older hitless, a server that is not childproc:
// no channel, and everything is as before.
//
// What moves: a plaintext HTTP/1.x connection of a server given to
// ServeHTTP on a listener this package inherited or bound (a
// *net.TCPListener or *net.UnixListener), whose client is between
// requests. What never moves: TLS connections (their session state lives
// in this process), HTTP/2 (its HPACK state does too; also any connection
// of a server that takes HTTP/2 with prior knowledge, Protocols'
// UnencryptedHTTP2), hijacked connections (the application owns them; see
// HandOver), connections of a listener of the application's own type
// (its Accept may have read from them), and a connection while it has
// part of a request read, a response being written, or bytes of a next
// request buffered. A connection that cannot move is not closed while
// idle: it is served, and closed after a response ("Connection: close"),
// until the drain's deadline (the lame duck lasts that long unless
// Options.LameDuck is set); only a connection idle past all of that is
// closed idle, as before.
//
// Why a connection moves only at a request boundary, and how childproc
// knows it is at one. The connections of such a server are wrapped; the
// wrapper's Read is what net/http reads with. net/http reads a
// connection through its connReader into a bufio.Reader (4096 bytes).
// After a response, (*conn).serve reports StateIdle (the ConnState hook,
// on the serving goroutine), sets the idle deadline, and calls
// bufr.Peek(4), which reads from the connection only when fewer than 4
// bytes are buffered; bufio's fill slides what is buffered to the front
// and reads into buf[w:], so the Read it makes is of len(buf) minus the
// bytes still buffered. connReader, which holds at most one byte of its
// own (the background read's, taken while a handler ran), returns that
// byte without reading at all. So:
//
//	the first Read after StateIdle whose len(p) equals that of the
//	connection's very first Read (bufio filling its whole, empty buffer)
//	proves that this process holds no byte of the next request: neither
//	bufio nor connReader has one;
//
// and a Read on a connection that never returned a byte proves it too,
// trivially. The response before it is out: net/http flushed it before
// StateIdle. At the drain, while such a Read is blocked, the wrapper sets
// a past read deadline on the socket; if the Read then returns no byte,
// nothing was consumed, and everything the client sent since (its next
// request, already on its way) is in the kernel's queue, which goes with
// the socket. The wrapper sends the descriptor to hitless (queued with
// those of the other connections that reach a boundary meanwhile, up to
// 64 in one message, those of clients just served first) and, once
// hitless took it, returns io.EOF, on which net/http closes its copy
// without writing (close(2) of a socket that has another reference sends
// nothing to the client). If the Read returned bytes, the client was
// first: they are passed on, the deadline net/http had set is restored,
// and the connection moves at its next boundary. A request served from
// buffered bytes (pipelining, or the background read's byte) is served
// here, and the connection moves at the next boundary that proves empty;
// so does one with part of a request read, or its response being
// written. hitless may refuse a connection (nobody adopts it, too many in
// flight); the copy sent was a duplicate and nothing was read, so the
// connection is served here as if nothing happened, and closed after its
// next response. The rule counts on net/http's reading, as of Go 1.26;
// TestHandOverRacingRequests (clients sending at random moments around
// hand-overs back and forth) and TestHandOverWaitsForTheBoundary check it
// against the net/http this package is built with.
//
// Long-lived connections move only when the application moves them:
// HandOver sends a hijacked connection (a WebSocket, an SSE stream) with
// a blob of the application's state; the next generation, which declared
// an Adopter for that name, takes it with Adopter.Accept. A connection
// not adopted within Options.AdoptTimeout is closed.
//
// # gRPC
//
// A gRPC server (grpc-go) drains with Lifecycle.ServeListener, which
// closes its listener and waits until the server holds every connection
// it accepted, then GracefulStop bounded by the drain deadline, then Stop:
//
//	gs := grpc.NewServer()
//	lc.ServeListener("grpc", ln, gs.Serve, func(ctx context.Context) error {
//		done := make(chan struct{})
//		go func() { gs.GracefulStop(); close(done) }()
//		select {
//		case <-done:
//			return nil
//		case <-ctx.Done(): // the drain deadline
//			gs.Stop()
//			return ctx.Err()
//		}
//	})
//
// GracefulStop sends GOAWAY on every connection: clients open their next
// RPCs on a new connection, which the new generation accepts from the
// same socket, and RPCs in flight finish. Two more things make a reload
// invisible to clients, and examples/grpc (the reference, with its e2e
// test and docs/grpc.md) does both:
//
//   - Streams that never end on their own (watches, subscriptions, gRPC's
//     own health Watch) keep GracefulStop waiting until the deadline, and
//     Stop then cuts them with a transport error. End them when the drain
//     begins (Lifecycle.Draining) with a status the client acts on:
//     UNAVAILABLE, with where to resume in a trailer; the client reopens
//     the stream, on the new generation.
//   - A finite stream longer than the drain deadline: end it the same way
//     a little before the deadline, rather than let Stop cut it.
//
// Set the health service to NOT_SERVING when the drain begins.
// ServeListener is not grpc-specific: any server that accepts on a
// net.Listener and can drop a connection it accepted but had not begun
// with when told to stop is better served by it than by Serve.
//
// When the supervisor runs a watchdog (WATCHDOG_USEC and WATCHDOG_PID, as
// systemd's WatchdogSec= sets them, and hitless), Run also sends
// WATCHDOG=1 at half its interval, from READY=1 until the drain starts,
// as long as Options.Healthy says the process still works: one that runs
// but is stuck stops pinging, and the supervisor finds out. Like LISTEN_*,
// the variables are removed once read. WatchdogInterval is for servers
// that ping by themselves.
//
// # Limits
//
//   - Linux has everything. The other unix systems (macOS, the BSDs) too,
//     except the LISTEN_PIDFDID check (they have no pidfds; it is skipped,
//     as libsystemd skips it on older kernels) and "@" abstract
//     NOTIFY_SOCKET names, which are Linux's.
//   - Windows and the other systems (js/wasm, wasip1, plan9) cannot
//     inherit sockets. Inherit reports "not supervised" when no variable
//     is set (or LISTEN_PID names another process), and fails with an
//     error wrapping errors.ErrUnsupported when the variables pass
//     descriptors to this process, rather than ignore them; Listen and
//     ListenPacket bind the address themselves, as on a laptop. Without
//     NOTIFY_SOCKET, Ready and Notify do nothing; with it they fail on
//     Windows, which has no unix datagram sockets. Lifecycle works the
//     same; on Windows the drain starts at Ctrl-C (os.Interrupt) or when
//     the console closes, which Go delivers as SIGTERM.
//   - Readiness (sd_notify) works over unix datagram sockets; vsock
//     NOTIFY_SOCKET addresses are not supported.
//   - Without a hand-over (another supervisor, hitless stopping, or a
//     connection that cannot move), a keep-alive connection that has been
//     idle for a while is still closed by Shutdown; a client that sends on
//     it at that very instant gets an error, which clients retry for
//     idempotent requests only. The lame duck makes it rare (a connection
//     must be quiet for Options.LameDuckQuiet first, or, while others are
//     handed over, idle until the drain's deadline), not impossible:
//     HTTP/1.1 has no way to tell an idle client to go away.
//   - The hand-over is Linux's (SCM_RIGHTS between processes of one
//     machine), as hitless is. A connection handed over keeps its
//     kernel state (socket options set on it, bytes in flight both
//     ways) and loses this process's (a ConnContext value, a handler's
//     context). ConnState and ConnContext see childproc's wrapper, not a
//     *net.TCPConn: unwrap it with its NetConn method (as for
//     *tls.Conn), or use its SyscallConn for socket options.
//   - HTTP/2 connections (h2c and over TLS) are told to leave by Shutdown's
//     GOAWAY, not by the lame duck: there is no "Connection: close" in
//     HTTP/2, so the lame duck does not wait for them, and their streams in
//     flight finish under Shutdown. A stream the client opens as GOAWAY
//     goes out is refused unprocessed; clients that retry such streams
//     (Go's does, when it can replay the body) lose nothing, others
//     (h2load) report an error. A connection is known to be HTTP/2 from
//     its first request; one that has sent none yet is waited for like an
//     idle HTTP/1 connection, at most Options.LameDuckQuiet.
//   - Hijacked connections (WebSockets) are waited for while their handler
//     runs; connections handed to other goroutines must be tracked with
//     Lifecycle.Go. Tell them to leave with http.Server.RegisterOnShutdown,
//     or hand them to the next generation with Lifecycle.HandOver.
//   - Work that outlives the drain deadline is cut off: keep
//     Options.DrainTimeout below the supervisor's kill deadline, and make
//     background tasks finish when their context is cancelled.
//   - Sockets with systemd's Accept=yes (a connected socket per process)
//     are not supported; file descriptors that are not sockets are
//     reported, not used.
//   - Panics in background tasks and closers are not recovered: a crash
//     during the drain is a bug to see, not to hide.
package childproc
