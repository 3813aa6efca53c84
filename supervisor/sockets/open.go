//go:build linux

package sockets

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"

	"github.com/hitless/hitless/internal/listenfds"
)

// Config says which sockets Open makes.
type Config struct {
	// Listen are the sockets, in the order the children get them. Empty
	// means every socket systemd passed (Passed), in its order, under
	// its name.
	Listen []ListenSpec
	// Passed is what systemd passed (PassedFromEnv). Open takes it over:
	// it closes the descriptors it does not use at once, and all of them
	// if it fails.
	Passed Passed
	// FDStore, if set, is systemd's file descriptor store, where the
	// StorePlan that Open returns puts every socket Open bound.
	FDStore FDStore
	Logger  *slog.Logger // default slog.Default()
}

// Open makes the sockets of cfg, in the order of cfg.Listen: each one
// taken from what systemd passed, or else bound (see the package doc). It
// closes the passed descriptors it does not use, and on error every one,
// with what it bound; an error names the --listen it is about. The
// StorePlan says what the fd store needs: apply it once the sockets are
// in use, before the first child starts.
func Open(cfg Config) ([]*Socket, StorePlan, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ps, err := probe(cfg.Passed.FDs)
	if err != nil {
		return nil, StorePlan{}, err
	}
	specs := cfg.Listen
	if len(specs) == 0 {
		specs = everyPassed(ps)
	}
	taken, err := match(specs, resolve(specs, ps), ps, cfg.Passed.Ignored)
	if err != nil {
		closePassed(ps, true)
		return nil, StorePlan{}, err
	}
	socks, err := open(specs, taken, cfg.FDStore != nil, log)
	if err != nil {
		closePassed(ps, false) // the others were socks', closed by open
		return nil, StorePlan{}, err
	}
	plan := planStore(cfg.FDStore, socks, taken, ps)
	unused := closeUnused(ps, log)
	count := map[string]int{}
	for _, s := range socks {
		count[s.Source]++
	}
	log.Info("sockets", SourceBound, count[SourceBound], SourceSystemd, count[SourceSystemd], SourceStore, count[SourceStore], "unused_closed", unused)
	return socks, plan, nil
}

// everyPassed asks for every passed socket, in order, under its name.
func everyPassed(ps []*passed) []ListenSpec {
	specs := make([]ListenSpec, len(ps))
	for i, p := range ps {
		specs[i] = ListenSpec{Name: p.Name, Systemd: p.Name, UID: -1, GID: -1}
	}
	return specs
}

// resolve reads the address of each URL spec, for match to compare with
// what systemd passed: nil for a systemd:// spec, and for every spec
// when nothing was passed (a host name is then looked up by bind alone,
// as net.Listen does). A spec whose address does not read takes no
// passed socket, and bind says what is wrong with it.
func resolve(specs []ListenSpec, ps []*passed) []*listenfds.Target {
	targets := make([]*listenfds.Target, len(specs))
	if len(ps) == 0 {
		return targets
	}
	for i, spec := range specs {
		if spec.Systemd != "" {
			continue
		}
		if t, err := listenfds.Resolve(spec.Network, spec.Address, net.DefaultResolver.LookupIP); err == nil {
			targets[i] = &t
		}
	}
	return targets
}

// match decides, without a system call, which passed socket each spec
// takes, if any: first the sockets asked for by name (systemd://NAME),
// then a URL's own socket by name and address (hitless stored it, on a
// port the kernel may have chosen), then a socket of its address (a
// socket unit's). targets[i] is spec i's address (see resolve), and a
// passed socket is of that address when it is the socket hitless would
// bind there: listenfds's Wildcard grade or better, never one that only
// covers it. match marks the sockets it hands out used.
func match(specs []ListenSpec, targets []*listenfds.Target, ps []*passed, ignored string) ([]*passed, error) {
	taken := make([]*passed, len(specs))
	for i, spec := range specs {
		if spec.Systemd == "" {
			continue
		}
		p, err := named(spec, ps, ignored)
		if err != nil {
			return nil, err
		}
		p.used, taken[i] = true, p
	}
	for _, byName := range []bool{true, false} {
		for i, spec := range specs {
			if targets[i] == nil || taken[i] != nil {
				continue
			}
			t := *targets[i]
			t.AnyPort = byName
			taken[i] = firstUnused(ps, func(p *passed) bool {
				return (!byName || p.Name == spec.Name) && p.usable() && t.Match(p.sock) >= listenfds.Wildcard
			})
			if taken[i] != nil {
				taken[i].used = true
			}
		}
	}
	return taken, nil
}

// named finds the passed socket that a systemd://NAME spec asks for.
func named(spec ListenSpec, ps []*passed, ignored string) (*passed, error) {
	p := firstUnused(ps, func(p *passed) bool { return p.Name == spec.Systemd })
	if p == nil {
		return nil, fmt.Errorf("listen %s: %s", spec, missing(spec.Systemd, ps, ignored))
	}
	if !p.usable() || p.sock.Addr == nil {
		return nil, fmt.Errorf("listen %s: systemd passed %s; want a listening stream socket or a datagram socket", spec, p)
	}
	return p, nil
}

// open makes the socket of each spec: the passed one it took, or one
// bound now. On error it closes what it made. fromStore says whether the
// passed sockets may come from hitless's own fd store.
func open(specs []ListenSpec, taken []*passed, fromStore bool, log *slog.Logger) ([]*Socket, error) {
	var socks []*Socket
	for i, spec := range specs {
		if p := taken[i]; p != nil {
			s := adopt(spec, p, fromStore)
			log.Info("socket passed by systemd", "name", spec.Name, "fd", p.FD, "passed_as", p.Name, "address", s.Addr, "source", s.Source)
			socks = append(socks, s)
			continue
		}
		s, err := bind(spec)
		if err != nil {
			for _, s := range socks {
				s.Close()
			}
			return nil, fmt.Errorf("listen %s: %w", spec, err)
		}
		socks = append(socks, s)
	}
	return socks, nil
}

// adopt makes the Socket of spec from the passed socket p it took.
func adopt(spec ListenSpec, p *passed, fromStore bool) *Socket {
	s := &Socket{Spec: spec, FD: p.FD, Addr: p.sock.Addr.String(), Source: SourceSystemd}
	// Not registered with the poller, unless systemd made the socket
	// non-blocking (NonBlocking=yes): os.NewFile then registers it, and
	// changes nothing of it.
	s.File = os.NewFile(uintptr(p.FD), "systemd:"+p.Name)
	if spec.Systemd != "" {
		s.Spec.Network, s.Spec.Address = p.sock.Addr.Network(), s.Addr
	} else if fromStore {
		// It may as well be a socket unit's of the same address:
		// nothing tells them apart.
		s.Source = SourceStore
	}
	return s
}

// closeUnused closes the passed sockets nobody asked for, and says how
// many there were.
func closeUnused(ps []*passed, log *slog.Logger) int {
	unused := 0
	for _, p := range ps {
		if !p.used {
			unused++
			log.Info("closing a socket systemd passed that no --listen asks for", "name", p.Name, "fd", p.FD, "socket", p.sock.String())
		}
	}
	closePassed(ps, false)
	return unused
}

// StorePlan is what the fd store needs once the sockets are open: the
// names to drop from it, then the sockets to put there. The zero
// StorePlan does nothing.
type StorePlan struct {
	store FDStore
	drop  []string
	add   []*Socket
}

// planStore decides what goes to the fd store st, if there is one: drop
// the names of the passed sockets nobody asked for, so that the store
// holds what the configuration says; store every socket hitless bound,
// and again each one it took from the store under a dropped name, since
// dropping a name drops every socket of that name, those in use too.
func planStore(st FDStore, socks []*Socket, taken, ps []*passed) StorePlan {
	if st == nil {
		return StorePlan{}
	}
	plan := StorePlan{store: st}
	for _, p := range ps {
		if !p.used && listenfds.CheckName(p.Name) == nil && !slices.Contains(plan.drop, p.Name) {
			plan.drop = append(plan.drop, p.Name)
		}
	}
	for _, s := range socks {
		if s.Source == SourceBound {
			plan.add = append(plan.add, s)
		}
	}
	for i, s := range socks {
		if s.Source == SourceStore && slices.Contains(plan.drop, taken[i].Name) {
			plan.add = append(plan.add, s)
		}
	}
	return plan
}

// Apply carries the plan out: it drops the names, then stores each
// socket (FDSTOREREMOVE=1, FDSTORE=1 with FDNAME= its name). A socket
// in the store is systemd's as much as hitless's: its unix socket file
// stays when hitless exits. A failure is logged, and changes nothing
// else: the socket serves, but would not outlive hitless.
func (p StorePlan) Apply(log *slog.Logger) {
	if p.store == nil {
		return
	}
	for _, name := range p.drop {
		if err := p.store.RemoveStoredFD(name); err != nil {
			log.Warn("fd store: remove", "name", name, "err", err)
			continue
		}
		log.Info("fd store: removed", "name", name)
	}
	for _, sock := range p.add {
		if err := p.store.StoreFD(sock.Spec.Name, sock.FD); err != nil {
			log.Warn("fd store: the socket will not outlive hitless", "name", sock.Spec.Name, "err", err)
			continue
		}
		sock.Created = false
		log.Info("fd store: stored", "name", sock.Spec.Name, "address", sock.Addr)
	}
}
