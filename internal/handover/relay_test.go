//go:build linux

package handover

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeGen is a generation's end of its channel, attached to a Relay.
type fakeGen struct {
	t  *testing.T
	ch *Conn
}

func attach(t *testing.T, r *Relay, gen int, kinds ...string) *fakeGen {
	t.Helper()
	ch, peer, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := ch.Send(Message{Version: Version, Type: TypeHello, Kinds: kinds}, -1); err != nil {
		t.Fatal(err)
	}
	if err := r.Attach(gen, peer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return &fakeGen{t: t, ch: ch}
}

func (g *fakeGen) recv() (Message, *os.File) {
	g.t.Helper()
	g.ch.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, f, err := g.ch.Recv()
	if err != nil {
		g.t.Fatal(err)
	}
	return m, f
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func (g *fakeGen) hand(id uint64, kind string, c syscall.Conn) {
	g.t.Helper()
	if err := g.ch.SendConn(Message{Version: Version, Type: TypeConn, ID: id, Kind: kind}, c); err != nil {
		g.t.Fatal(err)
	}
}

func TestRelayPassesConnections(t *testing.T) {
	r := NewRelay(RelayOptions{})
	defer r.Close()
	kind := HTTPKind("tcp", "127.0.0.1:1")
	a := attach(t, r, 1, kind)
	b := attach(t, r, 2, kind)

	// Nobody adopts yet: refused, and the sender keeps the connection.
	client, server := tcpPair(t)
	a.hand(1, kind, server)
	if m, _ := a.recv(); m.Type != TypeRefused || m.ID != 1 || !strings.Contains(m.Reason, "no serving generation") {
		t.Fatalf("without an adopter: %+v", m)
	}

	r.SetAdopter(2)
	a.ch.Send(Message{Version: Version, Type: TypeQuery, ID: 9}, -1)
	if m, _ := a.recv(); m.Type != TypeAdopter || m.ID != 9 || m.Adopter != 2 || len(m.Kinds) != 1 || m.Kinds[0] != kind {
		t.Fatalf("query: %+v", m)
	}
	// The adopter does not take what it does not adopt, nor its own.
	a.hand(2, StreamKind("other"), server)
	if m, _ := a.recv(); m.Type != TypeRefused || !strings.Contains(m.Reason, "does not adopt") {
		t.Fatalf("another kind: %+v", m)
	}
	b.hand(3, kind, server)
	if m, _ := b.recv(); m.Type != TypeRefused || !strings.Contains(m.Reason, "serving generation") {
		t.Fatalf("from the adopter itself: %+v", m)
	}

	a.hand(4, kind, server)
	m, f := b.recv()
	if m.Type != TypeConn || m.From != 1 || m.Kind != kind || f == nil {
		t.Fatalf("passed on: %+v %v", m, f)
	}
	if m2, _ := a.recv(); m2.Type != TypeTaken || m2.ID != 4 {
		t.Fatalf("answer to the sender: %+v", m2)
	}
	// The sender closes its copy: the client sees nothing; the adopter's
	// copy is the same connection.
	server.Close()
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	client.Write([]byte("ping"))
	buf := make([]byte, 4)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("adopter reads %q, %v", buf, err)
	}
	if got := r.InFlight(); got != 1 {
		t.Errorf("in flight before the answer: %d", got)
	}
	b.ch.Send(Message{Version: Version, Type: TypeAdopted, ID: m.ID}, -1)
	a.ch.Send(Message{Version: Version, Type: TypeReport, Closed: 2, ClosedIdle: 1}, -1)
	waitFor(t, func() bool { return r.InFlight() == 0 && r.Totals().Closed == 2 })
	ca, _ := r.Counts(1)
	cb, _ := r.Counts(2)
	if ca != (Counts{Handed: 1, Refused: 2, Closed: 2, ClosedIdle: 1}) || cb != (Counts{Adopted: 1, Refused: 1}) {
		t.Errorf("counts: 1 %+v, 2 %+v", ca, cb)
	}
	if _, ok := r.Counts(3); ok {
		t.Error("a generation without a channel has counts")
	}
}

// An adopter that exits with connections queued on its channel: they
// count as lost, and none stays open in the relay.
func TestRelayAdopterDiesWithConnectionsQueued(t *testing.T) {
	r := NewRelay(RelayOptions{})
	defer r.Close()
	a := attach(t, r, 1, "k")
	b := attach(t, r, 2, "k")
	r.SetAdopter(2)
	before := openFDs(t)
	var clients []*net.TCPConn
	for i := range 5 {
		c, s := tcpPair(t)
		clients = append(clients, c)
		a.hand(uint64(i+1), "k", s)
		if m, _ := a.recv(); m.Type != TypeTaken {
			t.Fatalf("%+v", m)
		}
		s.Close()
	}
	b.ch.Close() // the adopter dies unread
	before--     // its end was open at the count
	waitFor(t, func() bool { return r.InFlight() == 0 })
	cb, _ := r.Counts(2)
	if cb.Lost != 5 {
		t.Errorf("lost %d, want 5", cb.Lost)
	}
	// The kernel closed them with the channel: the clients see the end.
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("client reads %v, want EOF", err)
		}
	}
	for _, c := range clients {
		c.Close()
	}
	r.Detach(2)
	before-- // the relay's end of the channel
	if after := openFDs(t); after > before {
		t.Errorf("descriptors open: %d before, %d after", before, after)
	}
}

// Past MaxInFlight the relay waits for room, and refuses after Wait.
func TestRelayInFlightCap(t *testing.T) {
	r := NewRelay(RelayOptions{MaxInFlight: 2, Wait: 300 * time.Millisecond})
	defer r.Close()
	a := attach(t, r, 1, "k")
	b := attach(t, r, 2, "k")
	r.SetAdopter(2)
	_, s := tcpPair(t)
	var ids []uint64
	for i := range 2 {
		a.hand(uint64(i+1), "k", s)
		m, f := b.recv()
		f.Close()
		ids = append(ids, m.ID)
		if m, _ := a.recv(); m.Type != TypeTaken {
			t.Fatalf("%+v", m)
		}
	}
	a.hand(3, "k", s)
	if m, _ := a.recv(); m.Type != TypeRefused || !strings.Contains(m.Reason, "in flight") {
		t.Fatalf("past the cap: %+v", m)
	}
	// Room frees while one waits: it goes.
	a.hand(4, "k", s)
	b.ch.Send(Message{Version: Version, Type: TypeAdopted, ID: ids[0]}, -1)
	m, f := b.recv()
	f.Close()
	if m.Type != TypeConn {
		t.Fatalf("%+v", m)
	}
	if m, _ := a.recv(); m.Type != TypeTaken || m.ID != 4 {
		t.Fatalf("after room freed: %+v", m)
	}
}

// Pause stops the readers and keeps the channels; Resume goes on.
func TestRelayPauseResume(t *testing.T) {
	r := NewRelay(RelayOptions{})
	defer r.Close()
	a := attach(t, r, 1, "k")
	attach(t, r, 2, "k")
	r.SetAdopter(2)
	r.Pause()
	a.ch.Send(Message{Version: Version, Type: TypeQuery, ID: 1}, -1)
	r.Resume()
	if m, _ := a.recv(); m.Type != TypeAdopter || m.Adopter != 2 {
		t.Fatalf("after resume: %+v", m)
	}
}

func TestAttachRefuses(t *testing.T) {
	r := NewRelay(RelayOptions{})
	defer r.Close()
	// No hello.
	ch, peer, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := r.Attach(1, peer); err == nil {
		t.Error("a channel without a hello was attached")
	}
	peer.Close()
	// Not a SEQPACKET socket.
	fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	f := os.NewFile(uintptr(fds[0]), "stream")
	defer f.Close()
	defer unix.Close(fds[1])
	if err := r.Attach(1, f); err == nil || !strings.Contains(err.Error(), "SEQPACKET") {
		t.Errorf("a stream socket: %v", err)
	}
	attach(t, r, 1)
	ch2, peer2, _ := Pair()
	defer ch2.Close()
	ch2.Send(Message{Version: Version, Type: TypeHello}, -1)
	if err := r.Attach(1, peer2); err == nil {
		t.Error("a second channel for one generation was attached")
	}
	peer2.Close()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
