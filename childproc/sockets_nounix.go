//go:build !unix

package childproc

import (
	"errors"
	"fmt"
	"runtime"
)

// sockDgram is the datagram socket type, as socket.sotype holds it. No
// descriptor is ever probed here, so no socket has it.
const sockDgram = 2

// errAddrInUse is never matched here: a bind conflict is reported in the
// system's own words. (It matters under a supervisor, and supervisors that
// pass sockets are a unix affair.)
var errAddrInUse = errors.New("address already in use")

func closeOnExec(int) {}

// probe refuses every inherited descriptor: passing listening sockets as
// numbered descriptors (LISTEN_FDS and the like) is a unix convention.
func probe(int) (*socket, error) {
	return nil, fmt.Errorf("inherited descriptors are not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
