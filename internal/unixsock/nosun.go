//go:build !unix && !windows

package unixsock

// MaxPath is the longest path a unix socket can be bound to or reached at.
// This system has no unix sockets; the bound is Linux's, so that paths are
// checked alike everywhere.
const MaxPath = 107
