package unixsock

import (
	"fmt"
	"net"
	"os"
	"strconv"

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

// Chmod sets the permissions of the socket file at path, which this
// process just bound, without following a symbolic link: whoever can
// write to the directory cannot redirect it elsewhere. A path that is not
// a socket is refused.
func Chmod(path string, mode os.FileMode) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s is not a socket", path)
	}
	if st.Mode&0o777 == uint32(mode.Perm()) {
		return nil
	}
	// fchmod does not work on an O_PATH descriptor; its /proc link does.
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), uint32(mode.Perm())); err != nil {
		return &os.PathError{Op: "chmod", Path: path, Err: err}
	}
	return nil
}
