// Package handover is the protocol by which a draining generation of a
// childproc server hands connections to the generation that serves after
// it, through hitless, and hitless's side of it (Relay).
//
// # Model
//
// hitless tells every child that it speaks the protocol: HITLESS_HANDOVER
// holds the newest version it speaks (EnvVar). A child that takes part
// (childproc, unless told not to) makes a SOCK_SEQPACKET socket pair,
// writes a hello on its end and sends the other end to its NOTIFY_SOCKET in
// a datagram holding "HITLESS_HANDOVER=<version>" (NotifyKey). That
// channel is the generation's for its whole life; a child that never sends
// one (any server that is not childproc, or one that opted out) never gets
// a connection and never hands one over: it lives as before.
//
// Each message is one SEQPACKET record: a JSON object (Message) with the
// version it is written in and its type, by name. A connection travels
// as a descriptor (SCM_RIGHTS), with the kind of connection it is (the
// listener it was accepted on, for HTTP; a name the application chose,
// for the long-lived connections it hands over itself) and, for those,
// an application state blob. Version 1 sends one connection per "conn"
// record and answers each by its id; version 2 adds the batch: a
// "conns" record carries up to MaxBatch connections of one kind, one
// descriptor per id (IDs, in order), and an answer may name any number
// of connections (IDs), so that a drain of 10,000 connections costs a
// few hundred records, not 40,000. The exchange (ids: id in version 1,
// ids in version 2's batches):
//
//	child  -> hitless  hello    {kinds}          the kinds this generation adopts
//	child  -> hitless  query    {id}             at its drain: who would take them?
//	hitless -> child   adopter  {id, adopter, kinds}  generation 0: nobody
//	child  -> hitless  conn     {id, kind, state} + fd
//	                 | conns    {ids, kind} + one fd per id  (version 2)
//	hitless -> child   taken | refused {ids, reason}
//	hitless -> adopter conn     {id, kind, state, from} + fd
//	                 | conns    {ids, kind, from} + fds      (version 2)
//	adopter -> hitless adopted | closed {ids, reason}
//	child  -> hitless  report   {closed, closed_idle}  at the end of its drain
//
// Nothing waits for a connection's answer before the next goes:
// childproc queues the connections that reach a boundary and sends what
// is queued as one batch (busy connections first, a few batches
// unanswered at most), and hitless passes a batch on, as one record, as
// soon as it has read it, then answers it with one record. A state blob
// goes in a conn record of its own.
//
// A child keeps serving a connection hitless refused: the descriptor it
// sent was a duplicate, and nothing was read from the socket. Only
// "taken" lets it close its copy, which then sends nothing to the client
// (close(2) of a descriptor whose socket has another reference is
// silent).
//
// # Versions
//
// A message carries the version it is written in. A child writes in the
// lower of its newest version and HITLESS_HANDOVER; hitless answers each
// child, and passes connections to it, in the version of that child's
// hello: a batch goes to a generation of version 1 as one conn record per
// connection, and its answers go one per id. A receiver reads versions
// MinVersion to Version, ignores fields it does not know (JSON), and
// ignores message types it does not know, closing any descriptor they
// carry. So a hitless of version 1 and a childproc of version 2 speak
// version 1, and so do a hitless of version 2 and a childproc of version
// 1; generations of both versions under one hitless each get their own.
// A hitless from before the protocol sets no HITLESS_HANDOVER, so a new
// childproc does not take part; a new hitless with a childproc from
// before it gets no channel: in both cases everything is as before the
// protocol existed. The golden
// files in testdata pin what each version looks like (testdata/v1,
// testdata/v2); later builds must read them all.
//
// # Limits
//
// Linux only (SOCK_SEQPACKET, SCM_RIGHTS between processes of one
// machine); elsewhere only the message format builds, and childproc does
// not take part. A state
// blob is at most MaxState bytes. The Relay holds at most
// RelayOptions.MaxInFlight connections between a draining generation and
// the adopter at once (DefaultMaxInFlight); see Relay.
package handover
