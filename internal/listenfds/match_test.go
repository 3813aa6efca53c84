package listenfds

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeLookup is the resolver of TestMatch: no test here asks the
// system's.
func fakeLookup(_ context.Context, network, host string) ([]net.IP, error) {
	if network != "ip" {
		return nil, errors.New("network " + network)
	}
	switch host {
	case "localhost":
		return []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, nil
	case "web.internal":
		return []net.IP{net.ParseIP("10.0.0.5")}, nil
	case "any.internal":
		return []net.IP{net.IPv4zero}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// sock makes the Socket Probe would find bound to "NETWORK ADDRESS".
func sock(t *testing.T, s string) Socket {
	t.Helper()
	network, addr, _ := strings.Cut(s, " ")
	switch network {
	case "unix", "unixgram", "unixpacket":
		return Socket{Type: 1, Addr: &net.UnixAddr{Name: addr, Net: network}}
	case "none":
		return Socket{}
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ip := net.IP(ap.Addr().AsSlice()).To16()
	if network == "udp" {
		return Socket{Type: 1, Addr: &net.UDPAddr{IP: ip, Port: int(ap.Port())}}
	}
	return Socket{Type: 1, Addr: &net.TCPAddr{IP: ip, Port: int(ap.Port())}}
}

// TestMatch is the rule, case by case: the supervisor takes a passed
// socket for a --listen at Wildcard or better; childproc hands out the
// one socket of the best grade.
func TestMatch(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		network, addr string
		socket        string // NETWORK ADDRESS, as sock reads it
		want          Match
	}{
		// An IP address: itself, or a wildcard socket that serves it.
		{"tcp", "127.0.0.1:8080", "tcp 127.0.0.1:8080", Exact},
		{"tcp", "127.0.0.1:8080", "tcp 127.0.0.1:9090", NoMatch},
		{"tcp", "127.0.0.1:8080", "tcp 10.0.0.1:8080", NoMatch},
		{"tcp", "127.0.0.1:8080", "tcp 0.0.0.0:8080", Covers},
		{"tcp", "127.0.0.1:8080", "tcp [::]:8080", Covers},
		{"tcp6", "[::1]:8080", "tcp [::1]:8080", Exact},
		{"tcp", "[::1]:8080", "tcp 127.0.0.1:8080", NoMatch},
		// Every address: "", 0.0.0.0 and :: are one wildcard (a "tcp"
		// listen binds any of them as [::]); a socket of one address is
		// only taken in.
		{"tcp", ":8080", "tcp 0.0.0.0:8080", Wildcard},
		{"tcp", ":8080", "tcp [::]:8080", Wildcard},
		{"tcp", ":8080", "tcp 127.0.0.1:8080", Covers},
		{"tcp", ":8080", "tcp 127.0.0.1:9090", NoMatch},
		{"tcp", "0.0.0.0:8080", "tcp 0.0.0.0:8080", Exact},
		{"tcp", "0.0.0.0:8080", "tcp [::]:8080", Wildcard},
		{"tcp", "[::]:8080", "tcp 0.0.0.0:8080", Wildcard},
		{"tcp", "0.0.0.0:8080", "tcp 10.0.0.1:8080", Covers},
		// The family of tcp4 and tcp6.
		{"tcp4", ":8080", "tcp 0.0.0.0:8080", Wildcard},
		{"tcp4", ":8080", "tcp [::]:8080", NoMatch},
		{"tcp6", ":8080", "tcp 0.0.0.0:8080", NoMatch},
		{"tcp6", "[::]:8080", "tcp [::]:8080", Exact},
		// A name: what the resolver returns, localhost included.
		{"tcp", "localhost:8080", "tcp 127.0.0.1:8080", Exact},
		{"tcp", "localhost:8080", "tcp [::1]:8080", Exact},
		{"tcp4", "localhost:8080", "tcp [::1]:8080", NoMatch},
		{"tcp", "localhost:8080", "tcp 127.0.0.2:8080", NoMatch},
		{"tcp", "localhost:8080", "tcp 10.0.0.1:8080", NoMatch},
		{"tcp", "localhost:8080", "tcp 0.0.0.0:8080", Covers},
		{"tcp", "web.internal:8080", "tcp 10.0.0.5:8080", Exact},
		{"tcp", "web.internal:8080", "tcp 127.0.0.1:8080", NoMatch},
		{"tcp", "any.internal:8080", "tcp [::]:8080", Wildcard},
		{"tcp", "any.internal:8080", "tcp 10.0.0.5:8080", Covers},
		{"tcp", "nowhere.invalid:8080", "tcp 0.0.0.0:8080", Covers},
		{"tcp", "nowhere.invalid:8080", "tcp 127.0.0.1:8080", NoMatch},
		// A service name for the port.
		{"tcp", ":http", "tcp 0.0.0.0:80", Wildcard},
		// tcp is not udp.
		{"udp", ":53", "udp 0.0.0.0:53", Wildcard},
		{"udp", "127.0.0.1:53", "udp 127.0.0.1:53", Exact},
		{"udp", ":53", "tcp 0.0.0.0:53", NoMatch},
		{"tcp", ":53", "udp 0.0.0.0:53", NoMatch},
		{"udp6", ":53", "udp 0.0.0.0:53", NoMatch},
		// A unix path: absolute and clean, of the same network; an
		// abstract name as it is.
		{"unix", "/run/app.sock", "unix /run/app.sock", Exact},
		{"unix", "/run/../run/app.sock", "unix /run/app.sock", Exact},
		{"unix", "/run/app.sock", "unix /run/./app.sock", Exact},
		{"unix", "app.sock", "unix " + filepath.Join(wd, "app.sock"), Exact},
		{"unix", "/run/app.sock", "unix /run/other.sock", NoMatch},
		{"unix", "/run/app.sock", "unixgram /run/app.sock", NoMatch},
		{"unixgram", "/run/app.sock", "unixgram /run/app.sock", Exact},
		{"unixpacket", "/run/app.sock", "unixpacket /run/app.sock", Exact},
		{"unix", "@app", "unix @app", Exact},
		{"unix", "@app", "unix @other", NoMatch},
		{"unix", "/run/app.sock", "tcp 127.0.0.1:8080", NoMatch},
		{"tcp", ":8080", "unix /run/app.sock", NoMatch},
		// Not a socket, or one of another family.
		{"tcp", ":8080", "none", NoMatch},
	} {
		target, err := Resolve(tc.network, tc.addr, fakeLookup)
		if err != nil {
			t.Errorf("Resolve(%s, %s): %v", tc.network, tc.addr, err)
			continue
		}
		if got := target.Match(sock(t, tc.socket)); got != tc.want {
			t.Errorf("%s %s on a socket bound to %s: %v, want %v", tc.network, tc.addr, tc.socket, got, tc.want)
		}
	}
}

// A port of 0 matches any port only with AnyPort: the supervisor's
// own stored socket, whose port the kernel chose.
func TestMatchAnyPort(t *testing.T) {
	target, err := Resolve("tcp", "127.0.0.1:0", fakeLookup)
	if err != nil {
		t.Fatal(err)
	}
	s := sock(t, "tcp 127.0.0.1:41234")
	if got := target.Match(s); got != NoMatch {
		t.Errorf("port 0 on port 41234: %v, want %v", got, NoMatch)
	}
	target.AnyPort = true
	if got := target.Match(s); got != Exact {
		t.Errorf("port 0, any port, on port 41234: %v, want %v", got, Exact)
	}
	if got := target.Match(sock(t, "tcp 10.0.0.1:41234")); got != NoMatch {
		t.Errorf("any port, another host: %v, want %v", got, NoMatch)
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct{ network, addr, err string }{
		{"tcp", "8080", "missing port"},
		{"tcp", "127.0.0.1:nosuchservice", "unknown port"},
		{"udp", "[::1", "missing ']'"},
	} {
		if _, err := Resolve(tc.network, tc.addr, fakeLookup); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Resolve(%s, %s) = %v, want an error containing %q", tc.network, tc.addr, err, tc.err)
		}
	}
	target, err := Resolve("tcp", "nowhere.invalid:80", fakeLookup)
	if err != nil || target.LookupErr == nil || len(target.IPs) != 0 || target.Port != 80 {
		t.Errorf("an unknown name: %+v, %v; want no address, the lookup's error, and the port", target, err)
	}
	lookups := 0
	count := func(ctx context.Context, network, host string) ([]net.IP, error) {
		lookups++
		return fakeLookup(ctx, network, host)
	}
	for _, addr := range []string{":80", "127.0.0.1:80", "[::1]:80"} {
		if _, err := Resolve("tcp", addr, count); err != nil || lookups != 0 {
			t.Errorf("Resolve(tcp, %s): %v, %d lookups; want no lookup", addr, err, lookups)
		}
	}
}
