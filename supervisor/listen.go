//go:build linux

package supervisor

import "github.com/hitless/hitless/supervisor/sockets"

// The sockets hitless holds are package sockets' (parsing --listen,
// taking what systemd passed, binding, the fd store). These names were
// this package's before; they forward to it, so that callers that know
// them need not change.

type (
	// ListenSpec is sockets.ListenSpec.
	ListenSpec = sockets.ListenSpec
	// Passed is sockets.Passed.
	Passed = sockets.Passed
	// PassedFD is sockets.PassedFD.
	PassedFD = sockets.PassedFD
	// FDStore is sockets.FDStore.
	FDStore = sockets.FDStore
)

// Where a socket came from, as ListenerStatus.Source says it: see
// sockets.SourceBound.
const (
	SourceBound   = sockets.SourceBound
	SourceSystemd = sockets.SourceSystemd
	SourceStore   = sockets.SourceStore
)

// ParseListen is sockets.ParseListen.
func ParseListen(s string) (ListenSpec, error) { return sockets.ParseListen(s) }

// CheckSocketName is sockets.CheckName.
func CheckSocketName(name string) error { return sockets.CheckName(name) }

// PassedFromEnv is sockets.PassedFromEnv.
func PassedFromEnv() (Passed, error) { return sockets.PassedFromEnv() }

// storeSockets carries out, at the start of Run, what New planned for the
// fd store (see sockets.StorePlan), once.
func (s *Supervisor) storeSockets() {
	s.storePlan.Apply(s.log)
	s.storePlan = sockets.StorePlan{}
}
