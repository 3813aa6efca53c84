//go:build linux

// Package control is hitless's control socket: the server that "hitless
// run" listens on, and the client behind "hitless reload", "hitless
// status", "hitless stop", "hitless promote" and "hitless rollback".
//
// # Model
//
// The socket is a unix stream socket. A client connects, writes one
// request as one line of JSON, and reads one reply line of JSON; then the
// server closes the connection. There is one request per connection.
//
//	-> {"cmd":"reload","timeout":"90s"}
//	<- {"ok":true,"reload":{"generation":4,"pid":4242,"serving":{"generation":4,"pid":4242}}}
//
//	-> {"cmd":"status"}
//	<- {"ok":true,"status":{"pid":1,"generations":[...],"reloads_ok":3,...}}
//
//	-> {"cmd":"stop","timeout":"60s"}
//	<- {"ok":true}
//
//	-> {"cmd":"promote"}
//	<- {"ok":true,"serving":{"generation":4,"pid":4242}}
//
// The fields of a request are "cmd" (reload, status, stop, promote or
// rollback) and an optional "timeout", a Go duration that bounds how long
// the server waits for the outcome. Anything else is refused with {"ok":false,"code":
// "bad_request","error":"..."} naming what was wrong and what is valid, and
// changes nothing: bad JSON, an unknown cmd or field, a field of the wrong
// type, a key given twice, trailing data, a line over MaxRequest bytes, or
// no complete line within the read timeout.
//
// A reload reply comes when the reload has a verdict: ok once the new
// generation serves; code "reload_failed" with the new child's generation,
// pid, reason (exit status, signal or ready timeout) and the last lines it
// wrote to stderr, while the previous generation keeps serving; code
// "timeout" when the request's timeout passed first, in which case the
// verdict is unknown and the reload goes on; code "stopping" when hitless
// is shutting down. A client that goes away does not cancel the reload.
// When hitless runs with a trial window, the verdict comes at the end of
// the trial: a reload rolled back during it is a "reload_failed" whose
// reload carries "rolled_back":true.
//
// Promote and rollback end the trial of the generation on trial at once,
// with success or with a rollback, and name the generation serving then;
// with no generation on trial they are refused with code "no_trial" and
// change nothing.
//
// # Access
//
// Listen creates the socket with mode 0600 from the start (the socket's
// mode is set before bind, so the file never exists with wider
// permissions), in a directory it creates with mode 0700 if missing. On top
// of the file mode, the server asks the kernel for the peer's credentials
// (SO_PEERCRED) on every connection and serves only root and the user
// hitless runs as; anyone else gets code "not_authorized" and nothing
// happens. Listen refuses a directory owned by another user (other than
// root), or writable by others without the sticky bit, since whoever
// controls the directory could put their own socket in its place.
//
// Listen replaces a stale socket file (nothing listening), and refuses a
// live one, naming the pid that holds it, so two hitless processes never
// share a control socket. Close removes the file, unless another file has
// taken its place.
//
// # Limits
//
// Linux only (SO_PEERCRED). A unix socket path is at most 107 bytes;
// longer paths are refused with an error saying so. The server reads and
// answers at most MaxConns connections at a time, and keeps at most
// MaxWaiting reload and upgrade requests waiting for their verdict, in
// places of their own: however many wait, status, stop, promote and
// rollback are answered. More get code "busy". Requests and
// replies are not versioned beyond the field names: a client and a server
// from different releases agree as long as they know the same fields.
package control
