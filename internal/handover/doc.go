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
// as the one descriptor (SCM_RIGHTS) of a "conn" record, with the kind of
// connection it is (the listener it was accepted on, for HTTP; a name the
// application chose, for the long-lived connections it hands over itself)
// and, for those, an application state blob. The exchange:
//
//	child  -> hitless  hello    {kinds}          the kinds this generation adopts
//	child  -> hitless  query    {id}             at its drain: who would take them?
//	hitless -> child   adopter  {id, adopter, kinds}  generation 0: nobody
//	child  -> hitless  conn     {id, kind, state} + fd
//	hitless -> child   taken | refused {id, reason}
//	hitless -> adopter conn     {id, kind, state, from} + fd
//	adopter -> hitless adopted | closed {id, reason}
//	child  -> hitless  report   {closed, closed_idle}  at the end of its drain
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
// child in the version of that child's hello. A receiver reads versions
// MinVersion to Version, ignores fields it does not know (JSON), and
// ignores message types it does not know, closing any descriptor they
// carry. An old hitless sets no HITLESS_HANDOVER, so a new childproc does
// not take part; a new hitless with an old childproc gets no channel: in
// both cases everything is as before the protocol existed. The golden
// files in testdata pin what version 1 looks like; later builds must read
// them.
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
