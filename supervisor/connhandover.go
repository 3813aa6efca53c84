//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/hitless/hitless/internal/handover"
	"github.com/hitless/hitless/internal/sdnotify"
	"github.com/hitless/hitless/upgrade"
)

// The supervisor's side of the connection hand-over (issue 17; the
// protocol and the Relay are package internal/handover's). Every child
// is told, with HITLESS_HANDOVER, that hitless relays connections; a
// child that takes part (childproc) sends its channel with a notification
// (HITLESS_HANDOVER=<version>, with the descriptor), which readNotify
// gives to attachHandOver. From then on the Relay reads that channel on
// goroutines of its own: no event goes through the machine. The driver
// tells the Relay which generation adopts, the serving one, after every
// step of the machine and before it carries out the step's actions, so
// that a generation told to drain asks a Relay that already knows its
// successor. A generation that exits is detached: what was passed on to
// it and not yet adopted is counted lost (the kernel closed it with the
// generation's end of the channel). The counts are in Status, per
// generation and in total.
//
// A child that sends no channel (any server but childproc, or one with
// the hand-over off) is untouched: it gets no descriptor, only the
// variable, and nothing is ever handed to it.

func (s *Supervisor) newRelay() *handover.Relay {
	return handover.NewRelay(handover.RelayOptions{MaxInFlight: s.cfg.HandOverMaxInFlight, Logger: s.log})
}

// handOverEnv is the variable every child gets.
func handOverEnv() string { return handover.EnvVar + "=" + strconv.Itoa(handover.Version) }

// attachHandOver takes the channel c sent with notification m, if m is
// one; it reports whether it was, and closes files either way.
func (s *Supervisor) attachHandOver(c *child, m sdnotify.Message, files []*os.File) bool {
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	v, ok := m.Get(handover.NotifyKey)
	if !ok {
		return false
	}
	if len(files) != 1 {
		s.log.Warn("hand-over: channel notification without exactly one descriptor ignored", "generation", c.id, "descriptors", len(files), "version", v)
		return true
	}
	if err := s.relay.Attach(c.id, files[0]); err != nil {
		s.log.Warn("hand-over: channel refused", "generation", c.id, "err", err)
	}
	return true
}

// setAdopter tells the Relay which generation serves now: the one in
// state Serving, none while a stop drains them all (the machine's
// serving generation is then draining too).
func (s *Supervisor) setAdopter() { s.relay.SetAdopter(s.m.Serving()) }

// handOverCounts adds the Relay's counts to a status.
func (s *Supervisor) handOverCounts(st *Status) {
	for i := range st.Generations {
		if c, ok := s.relay.Counts(st.Generations[i].ID); ok {
			st.Generations[i].HandOver = &c
		}
	}
	t := s.relay.Totals()
	st.HandOver = &t
}

// exportHandOver writes the paused Relay into the supervisor's section
// and names each channel to carry.
func (s *Supervisor) exportHandOver(h *handoff, carry func(string, syscall.Conn)) {
	rs := s.relay.Export()
	h.HandOver = &rs
	for gen, ch := range s.relay.Channels() {
		carry(fmt.Sprintf("handover/%d", gen), ch)
	}
}

// importHandOver makes the Relay of what an earlier image handed over; an
// image without hand-over carried none, and the Relay starts empty.
func (s *Supervisor) importHandOver(h handoff, st *upgrade.State) error {
	if h.HandOver == nil {
		s.relay = s.newRelay()
		return nil
	}
	r, err := handover.Import(*h.HandOver, func(gen int) *os.File {
		f := st.File(fmt.Sprintf("handover/%d", gen))
		if f != nil {
			st.CloseLater(f) // the Relay holds a duplicate
		}
		return f
	}, handover.RelayOptions{MaxInFlight: s.cfg.HandOverMaxInFlight, Logger: s.log})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	s.relay = r
	return nil
}
