package childproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hitless/hitless/internal/listenfds"
	"github.com/hitless/hitless/internal/unixsock"
)

// Sources of inherited sockets, as reported by Sockets.Source.
const (
	SourceSystemd       = "systemd"        // LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES
	SourceServerStarter = "server-starter" // SERVER_STARTER_PORT
	SourceEinhorn       = "einhorn"        // EINHORN_FD_COUNT, EINHORN_FD_i, EINHORN_FDS
)

// Sockets holds the descriptors this process inherited from its supervisor.
// Each one is handed out at most once, as a net.Listener or a
// net.PacketConn; Close releases the ones nobody asked for.
//
// The zero value, and what Inherit returns for a process that is not
// supervised, holds nothing: Listen and ListenPacket then bind the address
// themselves.
type Sockets struct {
	mu     sync.Mutex
	source string
	socks  []*socket
	// ignored says why variables that were present did not count, such as
	// LISTEN_PID naming another process. It ends up in error messages,
	// because "address already in use" alone does not tell an operator
	// that the supervisor's sockets were there but not meant for us.
	ignored string
}

// socket is one inherited descriptor.
type socket struct {
	index int
	fd    int
	name  string   // LISTEN_FDNAMES entry, SERVER_STARTER_PORT key, or "" (einhorn)
	file  *os.File // owns fd until the socket is taken
	taken bool
	// Socket is what listenfds.Probe found: Type (0 when fd is not a
	// socket), Listening (SO_ACCEPTCONN) and Addr (getsockname; nil when
	// not a socket).
	listenfds.Socket
}

func (sk *socket) String() string {
	var b strings.Builder
	if sk.name != "" {
		b.WriteString(sk.name)
		b.WriteByte('=')
	}
	switch {
	case sk.Addr != nil:
		b.WriteString(sk.Addr.Network())
		b.WriteByte(' ')
		b.WriteString(sk.Addr.String())
	case sk.Type == 0:
		b.WriteString("not a socket")
	default:
		b.WriteString("unbound socket")
	}
	fmt.Fprintf(&b, " (fd %d", sk.fd)
	if sk.taken {
		b.WriteString(", taken")
	}
	b.WriteByte(')')
	return b.String()
}

// Inherit collects the sockets a supervisor passed to this process. It reads,
// in this order:
//
//   - systemd socket activation: LISTEN_FDS descriptors from fd 3, named by
//     LISTEN_FDNAMES; used only when LISTEN_PID is this process (and
//     LISTEN_PIDFDID, when set and checkable, is this process's pidfd), as
//     libsystemd does;
//   - Server::Starter: SERVER_STARTER_PORT ("addr=fd;addr=fd"), each socket
//     named by its address key;
//   - einhorn: EINHORN_FD_COUNT and EINHORN_FD_0..n-1, or EINHORN_FDS.
//
// The first one present wins. All of these variables are then removed from
// the environment, so that processes this one starts do not misread them,
// and every inherited descriptor is marked close-on-exec for the same
// reason. A process that is not supervised gets an empty Sockets and no
// error. An error means the variables were present but wrong (a bad count,
// a descriptor that is not open): a supervisor bug better seen at start-up.
//
// Outside unix, descriptors cannot be inherited this way: Inherit still
// reads and removes the variables, but when they pass descriptors to this
// process it fails with an error wrapping errors.ErrUnsupported.
func Inherit() (*Sockets, error) {
	defer unsetInheritEnv()
	return inherit(os.LookupEnv, os.Getpid())
}

// unsetInheritEnv removes every variable Inherit reads.
func unsetInheritEnv() {
	for _, k := range slices.Concat(listenfds.Vars, []string{envServerStarter, envEinhornFDCount, envEinhornFDs}) {
		os.Unsetenv(k)
	}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envEinhornFDPrefix) {
			os.Unsetenv(k)
		}
	}
}

func inherit(lookup func(string) (string, bool), self int) (*Sockets, error) {
	// An empty variable counts as unset: env files and container runtimes
	// often write KEY= where they mean nothing.
	getenv := func(k string) (string, bool) {
		v, ok := lookup(k)
		return v, ok && v != ""
	}
	s := &Sockets{}
	var fds []int
	var labels []string

	names, set, err := listenfds.Read(lookup, self)
	switch {
	case !set:
	case err == nil:
		labels = names
		for i := range names {
			fds = append(fds, listenfds.Start+i)
		}
		s.source = SourceSystemd
	case errors.Is(err, listenfds.ErrWrongPID):
		// Meant for another process (typically a parent that did not
		// exec us directly). Ignore them, like sd_listen_fds(3), and
		// let the other formats, which carry no pid, have their say.
		s.ignored = err.Error()
	default:
		return nil, fmt.Errorf("childproc: %w", err)
	}
	if s.source == "" {
		if v, set := getenv(envServerStarter); set {
			entries, err := parseServerStarterPort(v)
			if err != nil {
				return nil, fmt.Errorf("childproc: %w", err)
			}
			for _, e := range entries {
				fds = append(fds, e.fd)
				labels = append(labels, e.addr)
			}
			s.source = SourceServerStarter
		}
	}
	if s.source == "" {
		list, ok, err := parseEinhorn(getenv)
		if err != nil {
			return nil, fmt.Errorf("childproc: %w", err)
		}
		if ok {
			fds = list
			labels = make([]string, len(list))
			s.source = SourceEinhorn
		}
	}

	seen := make(map[int]bool, len(fds))
	for i, fd := range fds {
		if fd < listenfds.Start {
			s.closeAll()
			return nil, fmt.Errorf("childproc: %s passed fd %d, which is stdin, stdout or stderr", s.source, fd)
		}
		if seen[fd] {
			s.closeAll()
			return nil, fmt.Errorf("childproc: %s lists fd %d twice", s.source, fd)
		}
		seen[fd] = true
		p, err := listenfds.Probe(fd)
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("childproc: %s fd %d (%q): %w", s.source, fd, labels[i], err)
		}
		sk := &socket{index: i, fd: fd, name: labels[i], Socket: p}
		// Close-on-exec: a descriptor leaked into a grandchild keeps the
		// socket open after this process closed its copy.
		closeOnExec(fd)
		sk.file = os.NewFile(uintptr(fd), sk.describeFile(s.source))
		s.socks = append(s.socks, sk)
	}
	return s, nil
}

func (sk *socket) describeFile(source string) string {
	if sk.name != "" {
		return source + ":" + sk.name
	}
	return source + ":fd" + strconv.Itoa(sk.fd)
}

// Supervised reports whether a supervisor passed sockets (or an explicit
// empty set) to this process.
func (s *Sockets) Supervised() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.source != ""
}

// Source names the protocol the sockets came from (SourceSystemd,
// SourceServerStarter, SourceEinhorn), or "" when not supervised.
func (s *Sockets) Source() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.source
}

// Len is the number of inherited descriptors, taken or not.
func (s *Sockets) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.socks)
}

// String lists the inherited sockets, e.g.
// "systemd: [http=tcp 127.0.0.1:8080 (fd 3)]".
func (s *Sockets) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.describeLocked()
}

func (s *Sockets) describeLocked() string {
	if s.source == "" {
		msg := "not supervised: no LISTEN_FDS, SERVER_STARTER_PORT or EINHORN_FD_* sockets"
		if s.ignored != "" {
			msg += " (" + s.ignored + ")"
		}
		return msg
	}
	parts := make([]string, len(s.socks))
	for i, sk := range s.socks {
		parts[i] = sk.String()
	}
	return s.source + ": [" + strings.Join(parts, ", ") + "]"
}

// Listener returns the inherited listening socket named name (its
// LISTEN_FDNAMES entry, or its SERVER_STARTER_PORT address key). When
// several sockets share a name, each call returns the next one not yet
// taken.
func (s *Sockets) Listener(name string) (net.Listener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sk, err := s.namedLocked(name)
	if err != nil {
		return nil, err
	}
	return s.listenerLocked(sk)
}

// ListenerAt returns the i-th inherited socket (0-based, in the order the
// supervisor passed them) as a listener.
func (s *Sockets) ListenerAt(i int) (net.Listener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < 0 || i >= len(s.socks) {
		return nil, fmt.Errorf("childproc: no inherited socket at index %d; %s", i, s.describeLocked())
	}
	sk := s.socks[i]
	if sk.taken {
		return nil, fmt.Errorf("childproc: inherited socket %d (%s) was already taken", i, sk)
	}
	return s.listenerLocked(sk)
}

// PacketConn returns the inherited datagram socket named name.
func (s *Sockets) PacketConn(name string) (net.PacketConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sk, err := s.namedLocked(name)
	if err != nil {
		return nil, err
	}
	return s.packetConnLocked(sk)
}

// namedLocked finds the first inherited socket named name that was not
// taken yet.
func (s *Sockets) namedLocked(name string) (*socket, error) {
	var found bool
	for _, sk := range s.socks {
		if sk.name != name {
			continue
		}
		found = true
		if !sk.taken {
			return sk, nil
		}
	}
	if found {
		return nil, fmt.Errorf("childproc: every socket named %q was already taken; %s", name, s.describeLocked())
	}
	return nil, fmt.Errorf("childproc: no inherited socket named %q; %s", name, s.describeLocked())
}

// Listen returns the inherited listening socket bound to addr, or, when
// this process is not supervised, binds addr itself (so that the same
// program runs on a laptop with go run).
//
// Listen takes the inherited socket that serves addr, by the rule the
// supervisor applies to the sockets systemd passes it: of the same
// network, family and port, the socket bound to addr itself wins; else,
// for an address of every host (":8080", "0.0.0.0:8080", "[::]:8080"), a
// socket of every host, whichever the spelling; else the only socket that
// covers addr, a wildcard socket for a single address, or any socket of
// the port for an address of every host. A host name stands for the
// addresses it resolves to, looked up as net.Listen would (localhost too).
// A unix path matches the same path, made absolute and clean. Two
// sockets of the same grade make Listen fail: ask by name then.
//
// When the process is supervised and nothing matches, Listen fails with an
// error that lists what was inherited, instead of binding: the supervisor
// holds the port, so binding it here would fail with "address already in
// use" at best, and at worst (SO_REUSEPORT) split traffic with a socket
// nobody hands over at the next restart.
func (s *Sockets) Listen(network, addr string) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix", "unixpacket":
	default:
		return nil, fmt.Errorf("childproc: listen %s %s: unsupported network (use tcp, tcp4, tcp6, unix or unixpacket; ListenPacket for datagrams)", network, addr)
	}
	t, err := s.target(network, addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.source == "" {
		return s.bindLocked(network, addr)
	}
	if err != nil {
		return nil, err
	}
	sk, err := s.matchLocked(t)
	if err != nil {
		return nil, err
	}
	return s.listenerLocked(sk)
}

// ListenPacket is Listen for datagram sockets: udp, udp4, udp6 and unixgram.
func (s *Sockets) ListenPacket(network, addr string) (net.PacketConn, error) {
	switch network {
	case "udp", "udp4", "udp6", "unixgram":
	default:
		return nil, fmt.Errorf("childproc: listen %s %s: unsupported network (use udp, udp4, udp6 or unixgram; Listen for streams)", network, addr)
	}
	t, err := s.target(network, addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.source == "" {
		return s.bindPacketLocked(network, addr)
	}
	if err != nil {
		return nil, err
	}
	sk, err := s.matchLocked(t)
	if err != nil {
		return nil, err
	}
	return s.packetConnLocked(sk)
}

// Close closes every inherited descriptor that was not taken. Taken ones
// belong to their listener or connection.
func (s *Sockets) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeAll()
}

func (s *Sockets) closeAll() error {
	var errs []error
	for _, sk := range s.socks {
		if sk.taken || sk.file == nil {
			continue
		}
		sk.taken = true
		if err := sk.file.Close(); err != nil {
			errs = append(errs, fmt.Errorf("childproc: close %s: %w", sk, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Sockets) listenerLocked(sk *socket) (net.Listener, error) {
	switch {
	case sk.Type == 0:
		return nil, fmt.Errorf("childproc: inherited %s is not a socket", sk)
	case sk.Datagram():
		return nil, fmt.Errorf("childproc: inherited %s is a datagram socket; use PacketConn or ListenPacket", sk)
	case !sk.Listening:
		return nil, fmt.Errorf("childproc: inherited %s is not listening (a connected socket, as with systemd Accept=yes, is not supported)", sk)
	}
	return take(sk, "listener", net.FileListener)
}

func (s *Sockets) packetConnLocked(sk *socket) (net.PacketConn, error) {
	switch {
	case sk.Type == 0:
		return nil, fmt.Errorf("childproc: inherited %s is not a socket", sk)
	case !sk.Datagram():
		return nil, fmt.Errorf("childproc: inherited %s is a stream socket; use Listener or Listen", sk)
	}
	return take(sk, "packet conn", net.FilePacketConn)
}

// take hands sk out as the listener or packet conn (what, in errors) that
// from, net.FileListener or net.FilePacketConn, makes of it. from dups the
// descriptor (and puts the shared file description back into non-blocking
// mode, which a parent's os/exec may have cleared). The original must be
// closed here: when the listener is closed at drain time, no other copy
// may stay open in this process.
func take[T io.Closer](sk *socket, what string, from func(*os.File) (T, error)) (T, error) {
	var none T
	c, err := from(sk.file)
	if err != nil {
		return none, fmt.Errorf("childproc: %s from %s: %w", what, sk, err)
	}
	sk.taken = true
	if err := sk.file.Close(); err != nil {
		c.Close()
		return none, fmt.Errorf("childproc: close original %s: %w", sk, err)
	}
	return c, nil
}

// target reads addr for matchLocked, when this process is supervised
// (unsupervised, Listen binds addr itself). It looks a host name up, as
// net.Listen would: before Listen takes the lock, since that may take
// seconds.
func (s *Sockets) target(network, addr string) (listenfds.Target, error) {
	if !s.Supervised() {
		return listenfds.Target{}, nil
	}
	t, err := listenfds.Resolve(network, addr, net.DefaultResolver.LookupIP)
	if err != nil {
		return t, fmt.Errorf("childproc: listen %s %s: %w", network, addr, err)
	}
	return t, nil
}

// matchLocked finds the untaken inherited socket that serves t: the only
// one of the best grade any socket has (see listenfds.Target.Match), so
// that an exact socket wins over one that only covers t.
func (s *Sockets) matchLocked(t listenfds.Target) (*socket, error) {
	var best []*socket
	grade := listenfds.Covers // the worst grade that still serves t
	for _, sk := range s.socks {
		if sk.taken {
			continue
		}
		switch m := t.Match(sk.Socket); {
		case m > grade:
			grade, best = m, []*socket{sk}
		case m == grade:
			best = append(best, sk)
		}
	}
	switch len(best) {
	case 1:
		return best[0], nil
	case 0:
		return nil, s.unservedLocked(t)
	}
	list := make([]string, len(best))
	for i, sk := range best {
		list[i] = sk.String()
	}
	return nil, fmt.Errorf("childproc: listen %s %s: ambiguous, it matches %s; ask by name (Listener) or by exact address",
		t.Network, t.Address, strings.Join(list, ", "))
}

// unservedLocked says that no inherited socket serves t, and what to do.
func (s *Sockets) unservedLocked(t listenfds.Target) error {
	why := ""
	if t.LookupErr != nil {
		why = " (" + t.LookupErr.Error() + ")"
	}
	return fmt.Errorf("childproc: listen %s %s: no inherited socket is bound to it%s; inherited from %s. "+
		"Under a supervisor the server must use the sockets it was given: binding the address itself fails with "+
		"\"address already in use\" (or, with SO_REUSEPORT, takes traffic no restart hands over). "+
		"Ask for one of these, or have the supervisor pass this address too (hitless run --listen NAME=%s://%s)",
		t.Network, t.Address, why, s.describeLocked(), strings.TrimRight(t.Network, "46"), t.Address)
}

// bindLocked is Listen for a process that is not supervised.
func (s *Sockets) bindLocked(network, addr string) (net.Listener, error) {
	var inTheWay error
	if network == "unix" || network == "unixpacket" {
		// A socket file left by a process that died without unlinking it
		// would make bind fail; a live one, or a file that is not a
		// socket, is left alone, for bind to refuse.
		inTheWay = unixsock.RemoveStale(addr)
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), network, addr)
	if err != nil {
		if inTheWay != nil {
			err = fmt.Errorf("%w; %v", err, inTheWay) // such as the pid of the live server
		}
		return nil, s.bindError(network, addr, err)
	}
	return ln, nil
}

func (s *Sockets) bindPacketLocked(network, addr string) (net.PacketConn, error) {
	pc, err := (&net.ListenConfig{}).ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, s.bindError(network, addr, err)
	}
	return pc, nil
}

func (s *Sockets) bindError(network, addr string, err error) error {
	if errors.Is(err, errAddrInUse) {
		return fmt.Errorf("childproc: %s; bound %s %s itself and another process holds it (%w). "+
			"If this runs under a supervisor, the supervisor did not pass its sockets to this process", s.describeLocked(), network, addr, err)
	}
	return fmt.Errorf("childproc: not supervised, bind %s %s: %w", network, addr, err)
}
