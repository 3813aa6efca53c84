//go:build !unix

package listenfds

import (
	"errors"
	"fmt"
	"runtime"
)

// Probe refuses every descriptor: passing listening sockets as numbered
// descriptors is a unix convention.
func Probe(int) (Socket, error) {
	return Socket{}, fmt.Errorf("passed descriptors are not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

// Datagram is false: no descriptor is ever probed here.
func (Socket) Datagram() bool { return false }
