//go:build linux

package sockets

import (
	"context"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/unixsock"
)

// Socket is a listening socket hitless holds for its whole life, as a
// plain descriptor. hitless never accepts on it, and its O_NONBLOCK flag,
// which every process that holds the socket shares, is the children's
// business (see ListenSpec.NonBlock): hitless sets it once on a socket it
// binds, and never on one systemd passed. A socket hitless binds is never
// registered with Go's poller; one systemd passed non-blocking
// (NonBlocking=yes) is, by os.NewFile, which changes nothing of it.
//
// Open makes it; an upgrade carries File across an execve and the other
// fields in its state, and makes it again on the other side.
type Socket struct {
	Spec    ListenSpec
	File    *os.File // hitless's own descriptor
	FD      int      // File's descriptor, read without putting it in blocking mode
	Addr    string   // the bound address, for SERVER_STARTER_PORT
	Source  string   // where it came from: SourceBound, SourceSystemd or SourceStore
	Created bool     // hitless created the unix socket file, so Close removes it
}

// Where a socket came from, as Socket.Source (and the supervisor's
// status) says it.
const (
	SourceBound   = "bound"   // hitless bound it
	SourceSystemd = "systemd" // systemd passed it: a socket unit's
	SourceStore   = "store"   // systemd passed it back from its fd store
)

// bind creates, binds and listens on the socket spec describes. A unix
// socket file gets its mode before it exists (the socket is chmod'ed
// before bind), and its owner without following a symbolic link.
func bind(spec ListenSpec) (*Socket, error) {
	s := &Socket{Spec: spec, Source: SourceBound}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		if spec.Network != "unix" || spec.Mode == 0 {
			return nil
		}
		// bind creates the file with the socket's mode less the umask:
		// never wider than asked.
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.Fchmod(int(fd), uint32(spec.Mode)) }); cerr != nil {
			return cerr
		}
		return os.NewSyscallError("fchmod", err)
	}}
	type filer interface{ File() (*os.File, error) }
	var conn io.Closer
	if spec.Stream() {
		if spec.Network == "unix" {
			if err := unixsock.RemoveStale(spec.Address); err != nil {
				return nil, err
			}
		}
		ln, err := lc.Listen(context.Background(), spec.Network, spec.Address)
		if err != nil {
			return nil, err
		}
		if ul, ok := ln.(*net.UnixListener); ok {
			s.Created = true
			ul.SetUnlinkOnClose(false) // hitless removes it when it exits
		}
		conn, s.Addr = ln, ln.Addr().String()
	} else {
		pc, err := lc.ListenPacket(context.Background(), spec.Network, spec.Address)
		if err != nil {
			return nil, err
		}
		conn, s.Addr = pc, pc.LocalAddr().String()
	}
	f, err := conn.(filer).File()
	conn.Close() // the socket lives on in f
	if err != nil {
		s.Close()
		return nil, err
	}
	s.File = f
	// Fd puts the descriptor in blocking mode: the flag belongs to the
	// socket, and no child holds it yet.
	s.FD = int(f.Fd())
	if err := s.setup(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Socket) setup() error {
	spec := s.Spec
	if spec.NonBlock {
		if err := unix.SetNonblock(s.FD, true); err != nil {
			return os.NewSyscallError("fcntl O_NONBLOCK", err)
		}
	}
	if spec.Backlog > 0 && spec.Stream() {
		// Linux lets listen(2) be called again to resize the queue.
		if err := unix.Listen(s.FD, spec.Backlog); err != nil {
			return os.NewSyscallError("listen", err)
		}
	}
	if spec.Network != "unix" {
		return nil
	}
	if spec.Mode != 0 {
		// The umask may have narrowed the mode: widen it on the file
		// bind created, reached without following a symbolic link.
		if err := unixsock.Chmod(spec.Address, spec.Mode); err != nil {
			return err
		}
	}
	if spec.UID >= 0 || spec.GID >= 0 {
		if err := os.Lchown(spec.Address, spec.UID, spec.GID); err != nil {
			return err
		}
	}
	return nil
}

// Close closes hitless's descriptor, and removes the unix socket file
// hitless created.
func (s *Socket) Close() {
	if s.File != nil {
		s.File.Close()
	}
	if s.Created {
		os.Remove(s.Spec.Address)
	}
}
