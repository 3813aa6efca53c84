package sockets

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hitless/hitless/internal/listenfds"
)

// ListenSpec is one socket that hitless holds and hands to every child:
// one it binds, or one systemd passed it (Systemd). It is parsed from the
// --listen flag, [NAME=]URL.
type ListenSpec struct {
	// Name is passed to the child in LISTEN_FDNAMES. When the flag gives
	// none it is "<scheme>-<port>" for TCP and UDP (tcp-8080, udp-53) and
	// "unix-<file name>" for unix sockets (unix-app.sock).
	Name string
	// Network is the Go network name: tcp, tcp4, tcp6, unix, udp, udp4 or udp6.
	Network string
	// Address is host:port, or the socket's path for unix.
	Address string
	// Backlog is the accept queue length; 0 leaves the kernel default
	// (net.core.somaxconn).
	Backlog int
	// Mode, UID and GID apply to unix socket files; -1 (or 0 for Mode)
	// leaves what the kernel and umask chose.
	Mode os.FileMode
	UID  int
	GID  int
	// NonBlock keeps O_NONBLOCK set on the socket, as systemd's
	// NonBlocking=yes does. By default the socket reaches the first child
	// in blocking mode, as systemd hands it; the flag belongs to the
	// socket, shared by hitless and every child, and a Go child sets it
	// for everyone when it takes the socket over.
	NonBlock bool
	// Systemd, when set, is the name systemd passed the socket under (a
	// socket unit's FileDescriptorName=, a LISTEN_FDNAMES entry): Open takes
	// it from Config.Passed and never binds it, and fills in Network and
	// Address from the socket itself. It takes no options: the socket
	// unit sets them (Backlog=, NonBlocking=, SocketMode=).
	Systemd string
	// Spec is the text this was parsed from, for messages.
	Spec string
}

// Stream reports whether the socket is a listening stream socket rather
// than a datagram socket.
func (l ListenSpec) Stream() bool {
	return !strings.HasPrefix(l.Network, "udp") && l.Network != "unixgram"
}

// String returns the socket as given, or else in the syntax of the
// --listen flag.
func (l ListenSpec) String() string {
	switch {
	case l.Spec != "":
		return l.Spec
	case l.Systemd != "" && l.Name == l.Systemd:
		return systemdScheme + l.Systemd
	case l.Systemd != "":
		return l.Name + "=" + systemdScheme + l.Systemd
	}
	if l.Network == "unix" {
		return l.Name + "=unix://" + l.Address
	}
	return l.Name + "=" + l.Network + "://" + l.Address
}

// systemdScheme starts the URL of a socket systemd passes.
const systemdScheme = "systemd://"

// ParseListen parses "[NAME=]URL" as given to --listen:
//
//	tcp://127.0.0.1:8080   tcp4://0.0.0.0:80   tcp6://[::1]:8080
//	unix:///run/app.sock   udp://127.0.0.1:5353
//	systemd://web          (the socket systemd passed as "web")
//
// Options go in the query (see SetOption): backlog=N for stream sockets,
// and mode=0660, owner=USER|UID, group=GROUP|GID for unix sockets. The
// name of a systemd:// socket is also its default NAME.
func ParseListen(s string) (ListenSpec, error) {
	name, rest := "", s
	if i := strings.Index(s, "="); i >= 0 && !strings.Contains(s[:i], "://") {
		name, rest = s[:i], s[i+1:]
		if err := CheckName(name); err != nil {
			return ListenSpec{Spec: s}, err
		}
	}
	spec, err := parseURL(rest)
	spec.Spec = s
	if err != nil {
		return spec, err
	}
	if name != "" {
		spec.Name = name
	}
	return spec, nil
}

// parseURL parses what follows NAME= in ParseListen; the name is the
// URL's default, and every error names rest.
func parseURL(rest string) (ListenSpec, error) {
	if name, ok := strings.CutPrefix(rest, systemdScheme); ok {
		return parseSystemd(rest, name)
	}
	spec := ListenSpec{UID: -1, GID: -1}
	u, err := url.Parse(rest)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return spec, fmt.Errorf("%q is not a URL: want tcp://HOST:PORT, tcp4://, tcp6://, udp://HOST:PORT, unix:///PATH or systemd://NAME", rest)
	}
	if u.User != nil || u.Fragment != "" {
		return spec, fmt.Errorf("%q: user info and fragments are not allowed", rest)
	}
	switch u.Scheme {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		err = spec.setInet(u)
	case "unix":
		err = spec.setUnix(u)
	default:
		err = fmt.Errorf("unknown scheme %q: want tcp, tcp4, tcp6, udp, udp4, udp6, unix or systemd", u.Scheme)
	}
	if err != nil {
		return spec, fmt.Errorf("%q: %w", rest, err)
	}
	q := u.Query()
	for _, key := range slices.Sorted(maps.Keys(q)) {
		vals := q[key]
		if err := spec.SetOption(key, vals[len(vals)-1]); err != nil {
			return spec, fmt.Errorf("%q: %w", rest, err)
		}
	}
	return spec, nil
}

// parseSystemd parses systemd://NAME (rest), name being NAME. Not with
// url.Parse: a FileDescriptorName= may hold what a host may not.
func parseSystemd(rest, name string) (ListenSpec, error) {
	spec := ListenSpec{UID: -1, GID: -1}
	if strings.ContainsAny(name, "?#") {
		return spec, fmt.Errorf("%q: a socket systemd passes takes no options; its socket unit sets them (Backlog=, NonBlocking=, SocketMode=)", rest)
	}
	if err := listenfds.CheckName(name); err != nil {
		return spec, fmt.Errorf("%q: want systemd://NAME, NAME as in the socket unit's FileDescriptorName=: %w", rest, err)
	}
	spec.Systemd, spec.Name = name, name
	if err := CheckName(name); err != nil {
		return spec, fmt.Errorf("%q: default name: %w (give one as NAME=URL)", rest, err)
	}
	return spec, nil
}

// setInet sets the address of a tcp or udp URL, and its default name,
// "<scheme>-<port>".
func (l *ListenSpec) setInet(u *url.URL) error {
	if u.Path != "" {
		return fmt.Errorf("a %s address has no path: want %s://HOST:PORT", u.Scheme, u.Scheme)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return fmt.Errorf("want %s://HOST:PORT: %v", u.Scheme, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	l.Network, l.Address = u.Scheme, u.Host
	l.Name = fmt.Sprintf("%s-%d", strings.TrimRight(u.Scheme, "46"), p)
	return nil
}

// setUnix sets the path of a unix URL, and its default name,
// "unix-<file name>".
func (l *ListenSpec) setUnix(u *url.URL) error {
	if u.Host != "" || u.Path == "" {
		return errors.New("want unix:///ABSOLUTE/PATH (three slashes)")
	}
	l.Network, l.Address = "unix", filepath.Clean(u.Path)
	l.Name = "unix-" + filepath.Base(l.Address)
	if err := CheckName(l.Name); err != nil {
		return fmt.Errorf("default name: %w (give one as NAME=URL)", err)
	}
	return nil
}

// SetOption sets one option of the socket, as the URL's query gives it:
// backlog=N (1 to 65536) for stream sockets, nonblock=1 (or 0) for any,
// and mode=0660 (octal), owner=USER|UID and group=GROUP|GID for unix
// sockets.
func (l *ListenSpec) SetOption(key, v string) error {
	var err error
	switch {
	case l.Systemd != "":
		return fmt.Errorf("%s=%q: a socket systemd passes takes no options; its socket unit sets them (Backlog=, NonBlocking=, SocketMode=)", key, v)
	case key == "nonblock":
		err = l.setNonBlock(v)
	case key == "backlog" && l.Stream():
		err = l.setBacklog(v)
	case key == "mode" && l.Network == "unix":
		err = l.setMode(v)
	case key == "owner" && l.Network == "unix":
		if l.UID, err = lookupID(v, true); err != nil {
			err = fmt.Errorf("owner=%q: %w", v, err)
		}
	case key == "group" && l.Network == "unix":
		if l.GID, err = lookupID(v, false); err != nil {
			err = fmt.Errorf("group=%q: %w", v, err)
		}
	default:
		err = fmt.Errorf("unknown option %q (valid: %s)", key, l.options())
	}
	return err
}

// options lists the options the socket takes, for messages.
func (l *ListenSpec) options() string {
	switch {
	case l.Network == "unix":
		return "backlog, nonblock, mode, owner, group"
	case !l.Stream():
		return "nonblock"
	}
	return "backlog, nonblock"
}

func (l *ListenSpec) setNonBlock(v string) error {
	switch v {
	case "1", "true":
		l.NonBlock = true
	case "0", "false":
		l.NonBlock = false
	default:
		return fmt.Errorf("nonblock=%q: want 1 or 0", v)
	}
	return nil
}

func (l *ListenSpec) setBacklog(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1<<16 {
		return fmt.Errorf("backlog=%q: want a number from 1 to 65536", v)
	}
	l.Backlog = n
	return nil
}

func (l *ListenSpec) setMode(v string) error {
	m, err := strconv.ParseUint(strings.TrimPrefix(v, "0o"), 8, 32)
	if err != nil || m > 0o777 || m == 0 {
		return fmt.Errorf("mode=%q: want octal permissions such as 0660", v)
	}
	l.Mode = os.FileMode(m)
	return nil
}

// CheckName enforces what a socket's name may be: what LISTEN_FDNAMES
// and the fd store's FDNAME= can carry (1 to 255 printable ASCII
// characters, no ':', which separates names) without spaces, which would
// need quoting in logs, or '=', which ends the name in the NAME=URL
// syntax.
func CheckName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("socket name %q: want 1 to 255 characters", name)
	}
	for _, r := range name {
		if r <= ' ' || r > '~' || r == ':' || r == '=' {
			return fmt.Errorf("socket name %q: want printable ASCII without spaces, ':' or '='", name)
		}
	}
	return nil
}

func validHostname(h string) bool {
	for _, r := range h {
		if !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return h != ""
}

func lookupID(v string, isUser bool) (int, error) {
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return n, nil
	}
	var id string
	if isUser {
		u, err := user.Lookup(v)
		if err != nil {
			return -1, fmt.Errorf("no such user (want a user name or uid)")
		}
		id = u.Uid
	} else {
		g, err := user.LookupGroup(v)
		if err != nil {
			return -1, fmt.Errorf("no such group (want a group name or gid)")
		}
		id = g.Gid
	}
	return strconv.Atoi(id)
}
