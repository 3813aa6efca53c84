package unixsock

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// abstractNames: on Linux, Go maps a leading "@" to the abstract socket
// namespace, where names are not files.
const abstractNames = true

// Ucred is a process's pid, uid and gid as the kernel reports them; on
// Linux it is unix.Ucred itself.
type Ucred = unix.Ucred

// PeerCred returns the credentials of the process at the other end of c,
// as the kernel recorded them when the connection was made.
func PeerCred(c *net.UnixConn) (*Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, os.NewSyscallError("getsockopt SO_PEERCRED", cerr)
	}
	return cred, nil
}
