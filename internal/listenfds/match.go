package listenfds

import (
	"context"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Match grades how a socket serves a Target. The grades are ordered:
// a better grade is a greater value.
type Match int

const (
	// NoMatch: another network, family, port, host or path.
	NoMatch Match = iota
	// Covers: the address and the socket meet through a wildcard on one
	// side only. A socket bound to 0.0.0.0:8080 serves 127.0.0.1:8080
	// (and every other address); an address of every host, ":8080",
	// takes in a socket bound to 127.0.0.1:8080. childproc hands such a
	// socket out when it is the only one; the supervisor never takes
	// it, since it serves other addresses than the ones asked for.
	Covers
	// Wildcard: both are the wildcard address, spelt differently: "",
	// 0.0.0.0 and :: all stand for every address, and a "tcp" or "udp"
	// socket asked for on any of them is bound to [::], dual-stack.
	Wildcard
	// Exact: the socket is bound to the very address: the IP address
	// given, one the host name resolves to, or the same unix path.
	Exact
)

func (m Match) String() string {
	switch m {
	case NoMatch:
		return "no match"
	case Covers:
		return "covers"
	case Wildcard:
		return "wildcard"
	case Exact:
		return "exact"
	}
	return "Match(" + strconv.Itoa(int(m)) + ")"
}

// A Target is an address to listen on, as net.Listen and
// net.ListenPacket take it, read once by Resolve, so that Match can grade
// any number of sockets against it without looking the host up again.
type Target struct {
	// Network and Address are as given: Network one of tcp, tcp4, tcp6,
	// udp, udp4, udp6, unix, unixpacket and unixgram.
	Network, Address string
	// Path is a unix socket's path, absolute and clean; an abstract name
	// ("@name" on Linux) or "" as given.
	Path string
	// Host is an internet address's host as given: "" for every
	// address, an IP address, or a name.
	Host string
	// IPs are the addresses Host stands for: Host itself if it is an IP
	// address, what the resolver returned if it is a name, none if "".
	IPs []net.IP
	// LookupErr says why a host name stands for no address.
	LookupErr error
	// Port is an internet address's port.
	Port int
	// AnyPort makes a Port of 0 match every port. The supervisor sets it
	// to recognize a socket it bound and stored itself: the kernel chose
	// the port.
	AnyPort bool
}

// LookupIP resolves a host name into its addresses, as
// net.Resolver.LookupIP does; net.DefaultResolver.LookupIP is the one to
// pass outside tests.
type LookupIP func(ctx context.Context, network, host string) ([]net.IP, error)

// LookupTimeout bounds Resolve's lookup of a host name.
const LookupTimeout = 5 * time.Second

// Resolve reads addr as net.Listen(network, addr) reads it: for a unix
// network a path, otherwise host:port with a port number or service name
// and a host that is empty, an IP address, or a name, which lookup
// resolves within LookupTimeout. It fails, with net's own error, only
// when addr is malformed or its service unknown; a name that does not
// resolve stands for no address, and Target.LookupErr says why.
func Resolve(network, addr string, lookup LookupIP) (Target, error) {
	t := Target{Network: network, Address: addr}
	switch network {
	case "unix", "unixgram", "unixpacket":
		t.Path = cleanPath(addr)
		return t, nil
	}
	host, service, err := net.SplitHostPort(addr)
	if err != nil {
		return t, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), LookupTimeout)
	defer cancel()
	if t.Port, err = net.DefaultResolver.LookupPort(ctx, network, service); err != nil {
		return t, err
	}
	t.Host = host
	if ip := net.ParseIP(host); ip != nil {
		t.IPs = []net.IP{ip}
	} else if host != "" {
		t.IPs, t.LookupErr = lookup(ctx, "ip", host)
	}
	return t, nil
}

// Match grades how the socket s serves t, by the rule of the package
// doc.
func (t Target) Match(s Socket) Match {
	if s.Addr == nil || s.Addr.Network() != strings.TrimRight(t.Network, "46") {
		return NoMatch
	}
	if a, ok := s.Addr.(*net.UnixAddr); ok {
		if cleanPath(a.Name) != t.Path {
			return NoMatch
		}
		return Exact
	}
	ip, port, ok := s.IPPort()
	if !ok || !FamilyMatches(t.Network, ip) || port != t.Port && !(t.AnyPort && t.Port == 0) {
		return NoMatch
	}
	return t.matchHost(ip)
}

// matchHost grades a socket bound to ip, of t's network, family and port.
func (t Target) matchHost(ip net.IP) Match {
	if t.Host == "" {
		if ip.IsUnspecified() {
			return Wildcard
		}
		return Covers
	}
	m := NoMatch
	if ip.IsUnspecified() {
		m = Covers // the socket serves every address, t's among them
	}
	for _, w := range t.IPs {
		switch {
		case w.Equal(ip):
			return Exact
		case w.IsUnspecified() && ip.IsUnspecified():
			m = Wildcard
		case w.IsUnspecified():
			m = max(m, Covers) // t is every address, ip among them
		}
	}
	return m
}

// abstractNames: where Go maps a leading "@" to the abstract socket
// namespace, whose names are not paths.
const abstractNames = runtime.GOOS == "linux" || runtime.GOOS == "android"

// cleanPath makes a unix socket path comparable: absolute and clean.
func cleanPath(p string) string {
	if p == "" || abstractNames && p[0] == '@' {
		return p
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return filepath.Clean(p)
}
