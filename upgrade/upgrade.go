//go:build linux

// Package upgrade keeps hitless's listening sockets in a form that a new
// hitless binary can inherit, so that hitless itself can one day be
// replaced without closing them.
//
// The model is cloudflare/tableflip's: every socket is registered in
// tableflip's Fds under its network and address. A process started by
// (*Upgrader).Upgrade inherits them all and finds them again by the same
// network and address, instead of binding anew; only then does the old
// process exit.
//
// Limits: hitless does not trigger a self-upgrade yet. Its children run
// with a parent-death signal, so an old hitless that exits takes its
// children with it; handing the children over as well as the sockets is
// the missing piece. Until then this package only owns the registry.
package upgrade

import (
	"fmt"

	"github.com/cloudflare/tableflip"
)

// Upgrader owns the socket registry of one hitless process. Only one may
// exist per process.
type Upgrader struct {
	*tableflip.Upgrader
}

// New creates the process's Upgrader, taking over the sockets of a
// parent hitless if there is one.
func New() (*Upgrader, error) {
	u, err := tableflip.New(tableflip.Options{})
	if err != nil {
		return nil, fmt.Errorf("socket registry: %w", err)
	}
	return &Upgrader{u}, nil
}

// Registry is where the supervisor binds its sockets.
func (u *Upgrader) Registry() *tableflip.Fds { return u.Fds }
