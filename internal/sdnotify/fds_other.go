//go:build !unix

package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"runtime"
)

// sendFDs would write msg with fds attached, which needs unix sockets
// that carry descriptors.
func sendFDs(*net.UnixConn, []byte, []int) error {
	return fmt.Errorf("passing descriptors is not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
