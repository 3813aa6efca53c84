//go:build unix

package childproc

import "golang.org/x/sys/unix"

// sockDgram is the datagram socket type, as socket.sotype holds it.
const sockDgram = unix.SOCK_DGRAM

// errAddrInUse is how bind says another socket holds the address.
var errAddrInUse error = unix.EADDRINUSE

// closeOnExec keeps fd from leaking into processes this one starts.
func closeOnExec(fd int) { unix.CloseOnExec(fd) }
