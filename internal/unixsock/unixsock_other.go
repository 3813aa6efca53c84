//go:build !linux

package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
)

// abstractNames: outside Linux, "@name" is an ordinary relative path.
const abstractNames = false

// Ucred is a process's pid, uid and gid as the kernel reports them. It has
// the fields of Linux's unix.Ucred, which is what it is there.
type Ucred struct {
	Pid int32
	Uid uint32
	Gid uint32
}

// PeerCred returns the credentials of the process at the other end of c.
// It needs Linux's SO_PEERCRED: here it always fails, with an error
// wrapping errors.ErrUnsupported.
func PeerCred(c *net.UnixConn) (*Ucred, error) {
	return nil, fmt.Errorf("unixsock: peer credentials (SO_PEERCRED) need Linux: %w", errors.ErrUnsupported)
}

// Chmod sets the permissions of the socket file at path without following
// a symbolic link. It needs Linux (O_PATH): here it always fails, with an
// error wrapping errors.ErrUnsupported.
func Chmod(path string, mode os.FileMode) error {
	return fmt.Errorf("unixsock: chmod of %s without following links needs Linux: %w", path, errors.ErrUnsupported)
}
