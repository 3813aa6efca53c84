package childproc

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hitless/hitless/internal/listenfds"
)

// Environment variables read by Inherit, beside systemd's (listenfds.Vars).
// They are all removed from the environment once read, so that a process
// started by this one (a shell hook, a helper binary) does not take the
// descriptors for its own.
const (
	envServerStarter   = "SERVER_STARTER_PORT"
	envEinhornFDCount  = "EINHORN_FD_COUNT"
	envEinhornFDPrefix = "EINHORN_FD_"
	envEinhornFDs      = "EINHORN_FDS"
	envNotifySocket    = "NOTIFY_SOCKET"
)

// parseFD parses a descriptor number.
func parseFD(key, s string) (int, error) {
	fd, ok := listenfds.Decimal(s)
	if !ok {
		return 0, fmt.Errorf("%s: %q is not a file descriptor number", key, s)
	}
	return fd, nil
}

// starterEntry is one "address=fd" pair of SERVER_STARTER_PORT.
type starterEntry struct {
	addr string // as bound: "8080", "0.0.0.0:80", "[::1]:8080", "/run/app.sock"
	fd   int
}

// parseServerStarterPort parses SERVER_STARTER_PORT, e.g.
// "0.0.0.0:80=3;/run/app.sock=4". The descriptor follows the last '=' so
// that a unix socket path containing '=' still parses. Empty entries (a
// trailing ';') are skipped, as Server::Starter's own readers do.
func parseServerStarterPort(s string) ([]starterEntry, error) {
	var out []starterEntry
	for _, part := range strings.Split(s, ";") {
		if part == "" {
			continue
		}
		eq := strings.LastIndexByte(part, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%s=%q: entry %q is not address=fd", envServerStarter, s, part)
		}
		fd, err := parseFD(envServerStarter, part[eq+1:])
		if err != nil {
			return nil, err
		}
		out = append(out, starterEntry{addr: part[:eq], fd: fd})
		if len(out) > listenfds.MaxFDs {
			return nil, fmt.Errorf("%s: more than %d entries", envServerStarter, listenfds.MaxFDs)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s=%q: no entries", envServerStarter, s)
	}
	return out, nil
}

// parseEinhorn reads EINHORN_FD_COUNT and EINHORN_FD_0..n-1, or the
// deprecated space separated EINHORN_FDS. ok is false when neither is set.
func parseEinhorn(getenv func(string) (string, bool)) (fds []int, ok bool, err error) {
	if cs, set := getenv(envEinhornFDCount); set {
		n, err := listenfds.ParseCount(envEinhornFDCount, cs)
		if err != nil {
			return nil, true, err
		}
		fds = make([]int, 0, n)
		for i := 0; i < n; i++ {
			key := envEinhornFDPrefix + strconv.Itoa(i)
			v, set := getenv(key)
			if !set {
				return nil, true, fmt.Errorf("%s=%d but %s is not set", envEinhornFDCount, n, key)
			}
			fd, err := parseFD(key, v)
			if err != nil {
				return nil, true, err
			}
			fds = append(fds, fd)
		}
		return fds, true, nil
	}
	s, set := getenv(envEinhornFDs)
	if !set {
		return nil, false, nil
	}
	for _, f := range strings.Fields(s) {
		fd, err := parseFD(envEinhornFDs, f)
		if err != nil {
			return nil, true, err
		}
		fds = append(fds, fd)
		if len(fds) > listenfds.MaxFDs {
			return nil, true, fmt.Errorf("%s: more than %d descriptors", envEinhornFDs, listenfds.MaxFDs)
		}
	}
	return fds, true, nil
}
