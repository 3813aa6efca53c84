//go:build unix || windows

package unixsock

import "syscall"

// MaxPath is the longest path a unix socket can be bound to or reached
// at: sockaddr_un.sun_path, minus the terminating NUL. That is 107 bytes
// on Linux (and Windows), 103 on macOS and the BSDs. An abstract name on
// Linux needs no NUL, but hitless holds it to the same bound.
const MaxPath = len(syscall.RawSockaddrUnix{}.Path) - 1
