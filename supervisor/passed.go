//go:build linux

package supervisor

// Sockets systemd owns: those a socket unit passes, and those hitless
// keeps in systemd's file descriptor store so that they outlive a crash
// of hitless.
//
// At start, New takes what systemd passed (Config.Passed, read from
// LISTEN_FDS by PassedFromEnv) before it binds anything: a systemd://NAME
// socket is the one passed under NAME; a URL socket is the passed one of
// its own name and address (one hitless stored), else one of its address
// (a socket unit's), else it is bound. Passed sockets nobody asked for
// are closed. With Config.FDStore, Run then stores every socket New bound
// (FDSTORE=1, FDNAME=its name), once, before the first child starts, and
// drops from the store the names nobody asked for (FDSTOREREMOVE=1), so
// that the store holds what the configuration says. A socket taken from
// systemd is never stored again: the store or the socket unit has it.
//
// systemd keeps the stored sockets while hitless restarts, so a crash of
// hitless refuses no connection: they wait in the socket's queue, which
// systemd holds, until the next hitless hands the socket to a new child.
//
// A socket taken from systemd is used as it is: hitless changes none of
// its options, O_NONBLOCK above all. Those of a URL (backlog, nonblock,
// mode, owner) were applied when hitless bound it, before storing it; a
// socket unit's are the unit's.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/listenfds"
)

// Passed is what systemd passed to hitless with socket activation: the
// sockets of socket units, and those it kept in its fd store.
type Passed struct {
	FDs []PassedFD
	// Ignored says why the variables, though set, passed nothing to this
	// process (LISTEN_PID names another), for messages.
	Ignored string
}

// PassedFD is a descriptor systemd passed, and the name it passed it
// under (its LISTEN_FDNAMES entry).
type PassedFD struct {
	Name string
	FD   int
}

// PassedFromEnv reads the descriptors systemd passed to this process
// (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID, LISTEN_PIDFDID) as libsystemd
// reads them, marks them close-on-exec, and removes the variables from
// the environment, so that no child inherits them (each child gets its
// own). Descriptors meant for another process are ignored, and
// Passed.Ignored says why; an error means the variables are malformed.
// Call it once, early, before anything else reads the environment or
// opens files.
func PassedFromEnv() (Passed, error) {
	defer func() {
		for _, k := range listenfds.Vars {
			os.Unsetenv(k)
		}
	}()
	var p Passed
	names, set, err := listenfds.Read(os.LookupEnv, os.Getpid())
	switch {
	case !set:
		return p, nil
	case errors.Is(err, listenfds.ErrWrongPID):
		p.Ignored = err.Error()
		return p, nil
	case err != nil:
		return p, err
	}
	for i, name := range names {
		fd := listenfds.Start + i
		unix.CloseOnExec(fd)
		p.FDs = append(p.FDs, PassedFD{Name: name, FD: fd})
	}
	return p, nil
}

// FDStore is the service manager's file descriptor store (systemd's
// FDSTORE=1), which sdnotify.Notifier implements.
type FDStore interface {
	// StoreFD puts a duplicate of fd in the store, named name.
	StoreFD(name string, fd int) error
	// RemoveStoredFD drops every descriptor named name from the store.
	RemoveStoredFD(name string) error
}

// passed is one descriptor of Config.Passed, as New found it.
type passed struct {
	PassedFD
	sock listenfds.Socket
	used bool
}

func (p *passed) String() string {
	return fmt.Sprintf("%q (fd %d): %s", p.Name, p.FD, p.sock)
}

// openSockets makes the sockets of cfg: each taken from what systemd
// passed or bound, in the order of cfg.Listen, or, when cfg.Listen is
// empty, every passed one. It closes the passed descriptors it does not
// use, and on error every one, with what it bound. It returns the names
// to drop from the fd store and the sockets to put there, for Run.
func openSockets(cfg Config) (socks []*socket, drop []string, store []*socket, err error) {
	log := cfg.Logger
	var ps []*passed
	// closePassed closes what systemd passed, every descriptor or those
	// not used, which no socket holds.
	closePassed := func(all bool) {
		for _, p := range ps {
			if all || !p.used {
				unix.Close(p.FD)
			}
		}
	}
	for _, pfd := range cfg.Passed.FDs {
		p := &passed{PassedFD: pfd}
		ps = append(ps, p)
		if p.sock, err = listenfds.Probe(p.FD); err != nil {
			closePassed(true)
			return nil, nil, nil, fmt.Errorf("%s: descriptor %d (%q) systemd passed: %w", listenfds.EnvFDs, p.FD, p.Name, err)
		}
	}
	specs := cfg.Listen
	if len(specs) == 0 {
		// Every socket systemd passed, in order, under its name.
		for _, p := range ps {
			specs = append(specs, ListenSpec{Name: p.Name, Systemd: p.Name, UID: -1, GID: -1})
		}
	}

	// Which passed socket each spec takes, if any: first those asked for
	// by name (systemd://NAME), then a URL's own socket by name and
	// address (hitless stored it), then a socket of its address.
	taken := make([]*passed, len(specs))
	for i, spec := range specs {
		if spec.Systemd == "" {
			continue
		}
		p := firstUnused(ps, func(p *passed) bool { return p.Name == spec.Systemd })
		if p == nil {
			closePassed(true)
			return nil, nil, nil, fmt.Errorf("listen %s: %s", spec, missing(spec.Systemd, ps, cfg.Passed.Ignored))
		}
		if !p.sock.Listening && !p.sock.Datagram() || p.sock.Addr == nil {
			closePassed(true)
			return nil, nil, nil, fmt.Errorf("listen %s: systemd passed %s; want a listening stream socket or a datagram socket", spec, p)
		}
		p.used, taken[i] = true, p
	}
	for _, anyPort := range []bool{true, false} {
		for i, spec := range specs {
			if spec.Systemd != "" || taken[i] != nil {
				continue
			}
			taken[i] = firstUnused(ps, func(p *passed) bool {
				if anyPort && p.Name != spec.Name {
					return false
				}
				return spec.matches(p.sock, anyPort)
			})
			if taken[i] != nil {
				taken[i].used = true
			}
		}
	}

	fail := func(err error) ([]*socket, []string, []*socket, error) {
		for _, s := range socks {
			s.close()
		}
		closePassed(false) // the others are socks' now
		return nil, nil, nil, err
	}
	for i, spec := range specs {
		if p := taken[i]; p != nil {
			s := &socket{spec: spec, fd: p.FD, addr: p.sock.Addr.String(), source: SourceSystemd}
			// Not registered with the poller, unless systemd made the
			// socket non-blocking (NonBlocking=yes): os.NewFile then
			// registers it, and changes nothing of it.
			s.file = os.NewFile(uintptr(p.FD), "systemd:"+p.Name)
			if spec.Systemd != "" {
				s.spec.Network, s.spec.Address = p.sock.Addr.Network(), s.addr
			} else if cfg.FDStore != nil {
				// It may as well be a socket unit's of the same address:
				// nothing tells them apart.
				s.source = SourceStore
			}
			log.Info("socket passed by systemd", "name", spec.Name, "fd", p.FD, "passed_as", p.Name, "address", s.addr, "source", s.source)
			socks = append(socks, s)
			continue
		}
		s, err := bind(spec)
		if err != nil {
			return fail(fmt.Errorf("listen %s: %w", spec, err))
		}
		socks = append(socks, s)
		store = append(store, s)
	}

	unused := 0
	for _, p := range ps {
		if p.used {
			continue
		}
		unused++
		log.Info("closing a socket systemd passed that no --listen asks for", "name", p.Name, "fd", p.FD, "socket", p.sock.String())
		if cfg.FDStore != nil && listenfds.CheckName(p.Name) == nil && !slices.Contains(drop, p.Name) {
			drop = append(drop, p.Name)
		}
	}
	closePassed(false)
	// Dropping a name drops every socket of that name, those in use too:
	// store again what hitless took from the store under a dropped name.
	for i, s := range socks {
		if s.source == SourceStore && slices.Contains(drop, taken[i].Name) {
			store = append(store, s)
		}
	}
	if cfg.FDStore == nil {
		store = nil
	}
	count := map[string]int{}
	for _, s := range socks {
		count[s.source]++
	}
	log.Info("sockets", SourceBound, count[SourceBound], SourceSystemd, count[SourceSystemd], SourceStore, count[SourceStore], "unused_closed", unused)
	return socks, drop, store, nil
}

func firstUnused(ps []*passed, match func(*passed) bool) *passed {
	for _, p := range ps {
		if !p.used && match(p) {
			return p
		}
	}
	return nil
}

// missing says that systemd passed no socket named name, and what it did
// pass.
func missing(name string, ps []*passed, ignored string) string {
	var names []string
	for _, p := range ps {
		if p.Name == name {
			return fmt.Sprintf("the socket systemd passed as %q is taken by another --listen already", name)
		}
		names = append(names, strconv.Quote(p.Name))
	}
	switch {
	case len(names) > 0:
		return fmt.Sprintf("systemd passed no socket named %q (a socket unit's FileDescriptorName=, or FDNAME= in the fd store); it passed %s", name, strings.Join(names, ", "))
	case ignored != "":
		return "systemd passed no sockets to this process: " + ignored
	}
	return fmt.Sprintf("systemd passed no sockets (%s is not set): is this service the Service= of a socket unit with FileDescriptorName=%s?", listenfds.EnvFDs, name)
}

// matches reports whether the passed socket p is the one l describes: of
// the same type and family, bound to the same address, or for a unix
// socket the same path. A port of 0 in l matches any port when anyPort
// is set: hitless bound the socket, and the kernel chose the port.
func (l ListenSpec) matches(p listenfds.Socket, anyPort bool) bool {
	if l.Stream() != p.Listening || !l.Stream() && !p.Datagram() {
		return false
	}
	if a, ok := p.Addr.(*net.UnixAddr); ok {
		return l.Network == "unix" && a.Net == "unix" && filepath.Clean(a.Name) == l.Address
	}
	ip, port, ok := p.IPPort()
	if !ok || strings.TrimRight(l.Network, "46") != p.Addr.Network() || !listenfds.FamilyMatches(l.Network, ip) {
		return false
	}
	host, portText, err := net.SplitHostPort(l.Address)
	want, perr := strconv.Atoi(portText)
	if err != nil || perr != nil || port != want && !(anyPort && want == 0) {
		return false
	}
	if host == "" {
		return ip.IsUnspecified()
	}
	var ips []net.IP
	if w := net.ParseIP(host); w != nil {
		ips = []net.IP{w}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ips, _ = net.DefaultResolver.LookupIP(ctx, "ip", host)
	}
	for _, w := range ips {
		// 0.0.0.0 and :: both bind every address of a "tcp" socket.
		if w.Equal(ip) || w.IsUnspecified() && ip.IsUnspecified() {
			return true
		}
	}
	return false
}

// storeSockets carries out, at the start of Run, what openSockets decided
// about the fd store: drop the names nobody asked for, then store each
// socket hitless bound. A socket in the store is systemd's as much as
// hitless's: its unix socket file stays when hitless exits.
func (s *Supervisor) storeSockets() {
	st := s.cfg.FDStore
	if st == nil {
		return
	}
	for _, name := range s.storeDrop {
		if err := st.RemoveStoredFD(name); err != nil {
			s.log.Warn("fd store: remove", "name", name, "err", err)
			continue
		}
		s.log.Info("fd store: removed", "name", name)
	}
	for _, sock := range s.storeAdd {
		if err := st.StoreFD(sock.spec.Name, sock.fd); err != nil {
			s.log.Warn("fd store: the socket will not outlive hitless", "name", sock.spec.Name, "err", err)
			continue
		}
		sock.created = false
		s.log.Info("fd store: stored", "name", sock.spec.Name, "address", sock.addr)
	}
	s.storeDrop, s.storeAdd = nil, nil
}
