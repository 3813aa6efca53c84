//go:build !plan9

package unixsock

import "syscall"

// How a connect to a unix socket file fails, as RemoveStale reads it.
var (
	errRefused   error = syscall.ECONNREFUSED // nothing is bound to the file
	errWrongType error = syscall.EPROTOTYPE   // a socket of another type is
)
