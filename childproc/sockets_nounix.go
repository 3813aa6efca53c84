//go:build !unix

package childproc

import "errors"

// errAddrInUse is never matched here: a bind conflict is reported in the
// system's own words. (It matters under a supervisor, and supervisors that
// pass sockets are a unix affair.)
var errAddrInUse = errors.New("address already in use")

func closeOnExec(int) {}
