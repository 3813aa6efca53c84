// Package echopb is the echo service that examples/grpc serves under
// hitless: the code protoc generates from echo.proto, and the names that
// server and clients share.
package echopb

// ResumeTrailer is the trailer in which a Count stream that the server
// ended early (UNAVAILABLE, as it drains) says where the next one should
// start: the `from` of the client's next CountRequest.
const ResumeTrailer = "hitless-resume-from"

//go:generate ./gen.sh
