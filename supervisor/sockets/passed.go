//go:build linux

package sockets

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

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

// passed is one descriptor of Config.Passed, as Open found it.
type passed struct {
	PassedFD
	sock listenfds.Socket
	used bool
}

func (p *passed) String() string {
	return fmt.Sprintf("%q (fd %d): %s", p.Name, p.FD, p.sock)
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

// probe looks at each descriptor systemd passed. On error it closes
// every one.
func probe(fds []PassedFD) ([]*passed, error) {
	ps := make([]*passed, len(fds))
	for i, pfd := range fds {
		ps[i] = &passed{PassedFD: pfd}
	}
	for _, p := range ps {
		var err error
		if p.sock, err = listenfds.Probe(p.FD); err != nil {
			closePassed(ps, true)
			return nil, fmt.Errorf("%s: descriptor %d (%q) systemd passed: %w", listenfds.EnvFDs, p.FD, p.Name, err)
		}
	}
	return ps, nil
}

// usable reports whether p can serve a --listen: a listening stream
// socket or a datagram socket, not a connection or another file.
func (p *passed) usable() bool {
	return p.sock.Listening || p.sock.Datagram()
}

// closePassed closes the passed descriptors, every one or those not
// used, which no Socket holds.
func closePassed(ps []*passed, all bool) {
	for _, p := range ps {
		if all || !p.used {
			unix.Close(p.FD)
		}
	}
}
