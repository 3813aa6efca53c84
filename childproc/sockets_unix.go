//go:build unix

package childproc

import "golang.org/x/sys/unix"

// errAddrInUse is how bind says another socket holds the address.
var errAddrInUse error = unix.EADDRINUSE

// closeOnExec keeps fd from leaking into processes this one starts.
func closeOnExec(fd int) { unix.CloseOnExec(fd) }
