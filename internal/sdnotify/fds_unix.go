//go:build unix

package sdnotify

import (
	"net"
	"syscall"
)

// sendFDs writes msg on the connected conn with fds attached
// (SCM_RIGHTS), within conn's write deadline: net's WriteMsgUnix refuses
// a connected datagram socket, which is what send uses.
func sendFDs(conn *net.UnixConn, msg []byte, fds []int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	oob := syscall.UnixRights(fds...)
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = syscall.Sendmsg(int(fd), msg, oob, nil, 0)
		return serr != syscall.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}
