package childproc

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Environment variables read by Inherit. They are all removed from the
// environment once read, so that a process started by this one (a shell
// hook, a helper binary) does not take the descriptors for its own.
const (
	envListenFDs       = "LISTEN_FDS"
	envListenPID       = "LISTEN_PID"
	envListenFDNames   = "LISTEN_FDNAMES"
	envListenPIDFDID   = "LISTEN_PIDFDID"
	envServerStarter   = "SERVER_STARTER_PORT"
	envEinhornFDCount  = "EINHORN_FD_COUNT"
	envEinhornFDPrefix = "EINHORN_FD_"
	envEinhornFDs      = "EINHORN_FDS"
	envNotifySocket    = "NOTIFY_SOCKET"
)

// listenFDsStart is SD_LISTEN_FDS_START: the first inherited descriptor.
const listenFDsStart = 3

// maxInheritedFDs bounds every count read from the environment. A count
// this large is a corrupt variable, not a real configuration, and looping
// over it (or allocating for it) would only hide the mistake.
const maxInheritedFDs = 1 << 16

// atoi parses a plain decimal number: digits only. strconv.Atoi alone
// also takes a sign, so "+3" and "-0" would pass.
func atoi(s string) (int, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// parseCount parses a non-negative decimal count of descriptors.
func parseCount(key, s string) (int, error) {
	n, ok := atoi(s)
	if !ok {
		return 0, fmt.Errorf("%s=%q: not a non-negative decimal count", key, s)
	}
	if n > maxInheritedFDs {
		return 0, fmt.Errorf("%s=%q: more than %d descriptors", key, s, maxInheritedFDs)
	}
	return n, nil
}

// parseFD parses a descriptor number.
func parseFD(key, s string) (int, error) {
	fd, ok := atoi(s)
	if !ok {
		return 0, fmt.Errorf("%s: %q is not a file descriptor number", key, s)
	}
	return fd, nil
}

// parseFDNames splits LISTEN_FDNAMES into exactly n names. An unset or
// empty variable means every descriptor is "unknown", as in sd_listen_fds
// _with_names(3); a variable that names a different number of descriptors
// than LISTEN_FDS is an error there too, because the mapping would be a
// guess. Names are kept as given (empty elements included) so that
// Listener finds exactly what the supervisor wrote.
func parseFDNames(s string, set bool, n int) ([]string, error) {
	names := make([]string, n)
	if !set || s == "" {
		for i := range names {
			names[i] = "unknown"
		}
		return names, nil
	}
	parts := strings.Split(s, ":")
	if len(parts) != n {
		return nil, fmt.Errorf("%s=%q names %d descriptors, but %s=%d", envListenFDNames, s, len(parts), envListenFDs, n)
	}
	copy(names, parts)
	return names, nil
}

// errWrongPID reports systemd variables that were meant for another
// process: libsystemd and every mainstream reader ignore the descriptors
// then, and so do we.
var errWrongPID = errors.New("LISTEN_PID is not this process")

// parseListenPID checks LISTEN_PID against the pid of this process.
func parseListenPID(s string, set bool, self int) error {
	if !set {
		return fmt.Errorf("%w: %s is not set", errWrongPID, envListenPID)
	}
	pid, ok := atoi(s)
	if !ok || pid <= 0 {
		return fmt.Errorf("%s=%q: not a process id", envListenPID, s)
	}
	if pid != self {
		return fmt.Errorf("%w: %s=%d, this process is %d", errWrongPID, envListenPID, pid, self)
	}
	return nil
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
		if len(out) > maxInheritedFDs {
			return nil, fmt.Errorf("%s: more than %d entries", envServerStarter, maxInheritedFDs)
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
		n, err := parseCount(envEinhornFDCount, cs)
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
		if len(fds) > maxInheritedFDs {
			return nil, true, fmt.Errorf("%s: more than %d descriptors", envEinhornFDs, maxInheritedFDs)
		}
	}
	return fds, true, nil
}
