package unixsock

import "errors"

// Plan 9 has no unix sockets, so no connect fails with these.
var (
	errRefused   = errors.New("connection refused")
	errWrongType = errors.New("protocol wrong type for socket")
)
