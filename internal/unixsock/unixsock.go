// Package unixsock holds what hitless does with unix socket files in more
// than one place: how long a socket path may be, telling a stale socket
// file from a live one, and asking the kernel who is at the other end of a
// connection.
//
// A socket file is judged live when a connect to it succeeds, or is
// refused because the socket bound there is of another type; it is stale
// only when the connect fails with ECONNREFUSED, which the kernel returns
// when nothing is bound to the file any more. Linux does not return it for
// a live server whose accept queue is full, so such a server is never
// removed by mistake.
//
// Limits: PeerCred needs Linux (SO_PEERCRED); elsewhere it fails at run
// time with an error wrapping errors.ErrUnsupported. RemoveStale works
// wherever the Go net package dials unix stream sockets; Windows reports a
// refused connect in its own terms, so there a stale file is reported
// (cannot tell) rather than removed.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// RemoveStale removes the socket file at path if nothing listens on it,
// so that it can be bound again. It refuses a live socket (naming the
// listener's pid when the kernel tells it) and a file that is not a
// socket. A missing file is not an error, and neither is an abstract
// socket name ("@name" on Linux), which has no file.
func RemoveStale(path string) error {
	if abstractNames && strings.HasPrefix(path, "@") {
		return nil
	}
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
	if errors.Is(err, errWrongType) {
		// A datagram or seqpacket socket is bound there: connecting to a
		// file nobody is bound to would have been refused instead.
		return fmt.Errorf("%s: address already in use by a socket of another type", path)
	}
	if !errors.Is(err, errRefused) {
		return fmt.Errorf("%s: cannot tell whether the socket is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
