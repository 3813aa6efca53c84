// Package listenfds reads the sockets a service manager passes with
// systemd's socket-activation variables, by the rules of
// sd_listen_fds_with_names(3), so that everything in hitless that reads
// them applies the same rules: childproc in every child, and the
// supervisor when systemd starts hitless with sockets (a socket unit, or
// its file descriptor store).
//
// # Model
//
// LISTEN_FDS=n says that descriptors 3 to 3+n-1 (Start) are passed;
// LISTEN_FDNAMES names them, colon separated; LISTEN_PID is the process
// they are meant for, and LISTEN_PIDFDID, where set, identifies that
// process without the pid-reuse race. Descriptors meant for another
// process are ignored, as libsystemd ignores them: Read reports them with
// an error wrapping ErrWrongPID. Probe says what one descriptor is: its
// socket type, whether it listens, and its bound address.
//
// # Which socket serves an address
//
// Whether a passed socket serves an address is decided here, once, for
// both sides of hitless: the supervisor takes a socket systemd passed for
// a --listen only if it is the socket that --listen would bind, and
// childproc hands Listen(network, addr) the inherited socket that serves
// addr best. Resolve reads the address, Target.Match grades a socket.
//
// A socket serves an address when it is of the same network (tcp, udp,
// unix, unixgram, unixpacket) and family (a network ending in 4 or 6, see
// FamilyMatches), has the same port, and is bound to the same host or
// path. A host stands for the addresses net.Listen would choose from: an
// IP address for itself, a name for what the resolver returns (localhost
// included: no name is special, as none is to net.Listen), and "" or an
// unspecified address for every address. A unix path is compared made
// absolute and clean; an abstract name (Linux's "@name") byte for byte.
// The grade says how closely the socket is the address (Exact, Wildcard,
// Covers); whether the socket can be handed out at all (a listening
// stream socket, not a connection) is the caller's to check, and to
// explain.
//
// # Limits
//
// Read does not touch the environment or the descriptors: unsetting the
// variables (Vars) and marking the descriptors close-on-exec are the
// caller's, since only the caller knows when it is done with them.
// Probe needs a unix system; elsewhere it fails with an error wrapping
// errors.ErrUnsupported. Resolve looks a host name up with the lookup it
// is given, once, within LookupTimeout: a name whose addresses change
// later is not looked up again. LISTEN_PIDFDID is checked on Linux 6.9 and later
// only, where pidfds have inode numbers, and skipped elsewhere, as
// libsystemd skips it.
package listenfds

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// The variables of socket activation.
const (
	EnvFDs     = "LISTEN_FDS"
	EnvPID     = "LISTEN_PID"
	EnvFDNames = "LISTEN_FDNAMES"
	EnvPIDFDID = "LISTEN_PIDFDID"
)

// Vars lists every variable Read reads, for a caller that unsets them
// once it has read them, so that the processes it starts do not take the
// descriptors for their own.
var Vars = []string{EnvFDs, EnvPID, EnvFDNames, EnvPIDFDID}

// Start is SD_LISTEN_FDS_START: the first passed descriptor.
const Start = 3

// MaxFDs bounds every count read from the environment. A count this large
// is a corrupt variable, not a real configuration, and looping over it (or
// allocating for it) would only hide the mistake.
const MaxFDs = 1 << 16

// ErrWrongPID is wrapped by Read's error when the variables are meant for
// another process: LISTEN_PID is unset or another pid, or LISTEN_PIDFDID
// is another process's pidfd. libsystemd and every mainstream reader
// ignore the descriptors then.
var ErrWrongPID = errors.New("LISTEN_PID is not this process")

// Read reads the variables through lookup, for the process whose pid is
// self, and returns the names of the passed descriptors, the i-th being
// descriptor Start+i. An empty variable counts as unset: env files and
// container runtimes often write KEY= where they mean nothing. set is
// false when LISTEN_FDS is unset. Otherwise the error, if any, wraps
// ErrWrongPID when the descriptors are meant for another process (its
// text, "LISTEN_FDS=N ignored: …", says so for a log), and says which
// variable is malformed when one is.
//
// An unset or empty LISTEN_FDNAMES names every descriptor "unknown", as
// libsystemd does; a list of another length than LISTEN_FDS is an error,
// since the mapping would be a guess. Names are kept as given, empty ones
// included.
func Read(lookup func(string) (string, bool), self int) (names []string, set bool, err error) {
	getenv := func(k string) (string, bool) {
		v, ok := lookup(k)
		return v, ok && v != ""
	}
	n, set := getenv(EnvFDs)
	if !set {
		return nil, false, nil
	}
	count, err := ParseCount(EnvFDs, n)
	if err != nil {
		return nil, true, err
	}
	pid, pidSet := getenv(EnvPID)
	err = parseListenPID(pid, pidSet, self)
	if id, ok := getenv(EnvPIDFDID); ok && err == nil {
		err = checkPIDFDID(id, self)
	}
	if errors.Is(err, ErrWrongPID) {
		return nil, true, fmt.Errorf("%s=%s ignored: %w", EnvFDs, n, err)
	}
	if err != nil {
		return nil, true, err
	}
	list, listSet := getenv(EnvFDNames)
	names, err = parseFDNames(list, listSet, count)
	return names, true, err
}

// Decimal parses a plain decimal number: digits only. strconv.Atoi alone
// also takes a sign, so "+3" and "-0" would pass.
func Decimal(s string) (int, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// ParseCount parses the value s of the variable key as a count of
// descriptors: a decimal number from 0 to MaxFDs.
func ParseCount(key, s string) (int, error) {
	n, ok := Decimal(s)
	if !ok {
		return 0, fmt.Errorf("%s=%q: not a non-negative decimal count", key, s)
	}
	if n > MaxFDs {
		return 0, fmt.Errorf("%s=%q: more than %d descriptors", key, s, MaxFDs)
	}
	return n, nil
}

// parseFDNames splits LISTEN_FDNAMES into exactly n names.
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
		return nil, fmt.Errorf("%s=%q names %d descriptors, but %s=%d", EnvFDNames, s, len(parts), EnvFDs, n)
	}
	copy(names, parts)
	return names, nil
}

// parseListenPID checks LISTEN_PID against self.
func parseListenPID(s string, set bool, self int) error {
	if !set {
		return fmt.Errorf("%w: %s is not set", ErrWrongPID, EnvPID)
	}
	pid, ok := Decimal(s)
	if !ok || pid <= 0 {
		return fmt.Errorf("%s=%q: not a process id", EnvPID, s)
	}
	if pid != self {
		return fmt.Errorf("%w: %s=%d, this process is %d", ErrWrongPID, EnvPID, pid, self)
	}
	return nil
}

// CheckName checks a descriptor name as systemd checks FDNAME= (and
// FileDescriptorName=): 1 to 255 printable ASCII characters, no ':',
// which separates the names in LISTEN_FDNAMES.
func CheckName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("descriptor name %q: want 1 to 255 characters", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("descriptor name %q: want printable ASCII without ':'", name)
		}
	}
	return nil
}

// Socket describes a passed descriptor, as Probe found it.
type Socket struct {
	// Type is SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET; 0 when the
	// descriptor is not a socket (systemd's store may hold any file).
	Type int
	// Listening is SO_ACCEPTCONN: a stream socket that accepts
	// connections, rather than one connection (as Accept=yes passes).
	Listening bool
	// Addr is the bound address, from getsockname: a *net.TCPAddr,
	// *net.UDPAddr or *net.UnixAddr (Net unix, unixgram or unixpacket);
	// nil when not a socket, or of another family (netlink, vsock).
	Addr net.Addr
}

// String says what the descriptor is, for messages: "tcp 127.0.0.1:8080
// (listening)", "udp [::]:53", "not a socket".
func (s Socket) String() string {
	var what string
	switch {
	case s.Type == 0:
		return "not a socket"
	case s.Addr != nil:
		what = s.Addr.Network() + " " + s.Addr.String()
	default:
		what = "a socket of another family (type " + strconv.Itoa(s.Type) + ")"
	}
	switch {
	case s.Datagram():
		return what + " (datagram)"
	case s.Listening:
		return what + " (listening)"
	}
	return what + " (not listening: a connection)"
}

// IPPort returns the address and port of an internet socket; ok is false
// for any other.
func (s Socket) IPPort() (ip net.IP, port int, ok bool) {
	switch a := s.Addr.(type) {
	case *net.TCPAddr:
		return a.IP, a.Port, true
	case *net.UDPAddr:
		return a.IP, a.Port, true
	}
	return nil, 0, false
}

// FamilyMatches reports whether ip is of the family network names by its
// suffix: IPv4 for "tcp4" and "udp4", IPv6 for "tcp6" and "udp6", either
// for any other network.
func FamilyMatches(network string, ip net.IP) bool {
	switch network[len(network)-1] {
	case '4':
		return ip.To4() != nil
	case '6':
		return ip.To4() == nil
	}
	return true
}
