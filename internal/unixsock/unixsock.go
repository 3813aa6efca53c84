// Package unixsock holds what hitless does with unix socket files in more
// than one place: telling a stale socket file from a live one, and asking
// the kernel who is at the other end of a connection.
//
// Limits: Linux (SO_PEERCRED). A socket file is judged live when a connect
// to it succeeds; a server whose accept queue is full looks stale only if
// the connect fails with ECONNREFUSED, which Linux does not return for a
// full queue, so it is never removed by mistake.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// RemoveStale removes the socket file at path if nothing listens on it,
// so that it can be bound again. It refuses a live socket (naming the
// listener's pid when the kernel tells it) and a file that is not a
// socket. A missing file is not an error.
func RemoveStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		who := "another process"
		if cred, err := PeerCred(c.(*net.UnixConn)); err == nil {
			who = "pid " + strconv.Itoa(int(cred.Pid))
		}
		c.Close()
		return fmt.Errorf("%s: address already in use by %s", path, who)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot tell whether the socket is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// PeerCred returns the credentials of the process at the other end of c,
// as the kernel recorded them when the connection was made.
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
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
