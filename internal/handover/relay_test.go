//go:build linux

package handover

import (
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeGen is a generation's end of its channel, attached to a Relay. It
// speaks version 1, as a childproc built before the batch (version 2)
// does, unless attachV gave another: the tests written for version 1
// keep checking that a new hitless serves an old childproc as before.
type fakeGen struct {
	t       *testing.T
	ch      *Conn
	version int
}

func attach(t *testing.T, r *Relay, gen int, kinds ...string) *fakeGen {
	t.Helper()
	return attachV(t, r, gen, 1, kinds...)
}

func attachV(t *testing.T, r *Relay, gen, version int, kinds ...string) *fakeGen {
	t.Helper()
	ch, peer, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := ch.Send(Message{Version: version, Type: TypeHello, Kinds: kinds}); err != nil {
		t.Fatal(err)
	}
	if err := r.Attach(gen, peer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return &fakeGen{t: t, ch: ch, version: version}
}

// recv reads a record, which must be of the generation's version: a
// relay answers each generation in the version of its hello.
func (g *fakeGen) recv() (Message, *os.File) {
	g.t.Helper()
	m, fds := g.recvFDs()
	if len(fds) > 1 {
		closeFDs(fds)
		g.t.Fatalf("a record with %d descriptors: %+v", len(fds), m)
	}
	if len(fds) == 1 {
		return m, os.NewFile(uintptr(fds[0]), "handed")
	}
	return m, nil
}

func (g *fakeGen) recvFDs() (Message, []int) {
	g.t.Helper()
	g.ch.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, fds, err := g.ch.Recv()
	if err != nil {
		g.t.Fatal(err)
	}
	if m.Version != g.version {
		closeFDs(fds)
		g.t.Fatalf("a record of version %d to a generation of version %d: %+v", m.Version, g.version, m)
	}
	return m, fds
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
	if err := g.ch.SendConn(Message{Version: g.version, Type: TypeConn, ID: id, Kind: kind}, c); err != nil {
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
	a.ch.Send(Message{Version: 1, Type: TypeQuery, ID: 9})
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
	b.ch.Send(Message{Version: 1, Type: TypeAdopted, ID: m.ID})
	a.ch.Send(Message{Version: 1, Type: TypeReport, Closed: 2, ClosedIdle: 1})
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
	b.ch.Send(Message{Version: 1, Type: TypeAdopted, ID: ids[0]})
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
	a.ch.Send(Message{Version: 1, Type: TypeQuery, ID: 1})
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
	ch2.Send(Message{Version: 1, Type: TypeHello})
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

// handBatch sends the server ends of conns as one conns record.
func (g *fakeGen) handBatch(ids []uint64, kind string, conns ...*net.TCPConn) {
	g.t.Helper()
	rcs := make([]syscall.RawConn, len(conns))
	for i, c := range conns {
		rc, err := c.SyscallConn()
		if err != nil {
			g.t.Fatal(err)
		}
		rcs[i] = rc
	}
	skipped, err := g.ch.SendConns(Message{Version: g.version, Type: TypeConns, IDs: ids, Kind: kind}, rcs)
	if err != nil || len(skipped) > 0 {
		g.t.Fatalf("send a batch: skipped %v, %v", skipped, err)
	}
}

// batchPairs returns n loopback connections: the clients' ends, and the
// servers' ends to hand over.
func batchPairs(t *testing.T, n int) (clients, servers []*net.TCPConn) {
	for range n {
		c, s := tcpPair(t)
		clients, servers = append(clients, c), append(servers, s)
	}
	return clients, servers
}

// checkSame checks that each descriptor is the server end of the client
// of the same index: what a client writes, it reads.
func checkSame(t *testing.T, clients []*net.TCPConn, fds []int) {
	t.Helper()
	if len(fds) != len(clients) {
		t.Fatalf("%d descriptors for %d connections", len(fds), len(clients))
	}
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "handed")
		nc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte{'a' + byte(i)}
		clients[i].Write(msg)
		buf := make([]byte, 1)
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadFull(nc, buf)
		nc.Close()
		if err != nil || buf[0] != msg[0] {
			t.Errorf("descriptor %d reads %q, %v; want %q", i, buf, err, msg)
		}
	}
}

// Version 2: a batch goes on to the adopter as one record, in order, and
// both answers name every connection at once.
func TestRelayPassesBatches(t *testing.T) {
	r := NewRelay(RelayOptions{})
	defer r.Close()
	kind := HTTPKind("tcp", "127.0.0.1:1")
	a := attachV(t, r, 1, 2, kind)
	b := attachV(t, r, 2, 2, kind)
	r.SetAdopter(2)
	clients, servers := batchPairs(t, 3)
	a.handBatch([]uint64{5, 6, 7}, kind, servers...)
	m, fds := b.recvFDs()
	if m.Type != TypeConns || len(m.IDs) != 3 || m.From != 1 || m.Kind != kind {
		closeFDs(fds)
		t.Fatalf("passed on: %+v", m)
	}
	if ans, _ := a.recv(); ans.Type != TypeTaken || !slices.Equal(ans.Answered(), []uint64{5, 6, 7}) {
		t.Fatalf("answer to the sender: %+v", ans)
	}
	for _, s := range servers {
		s.Close()
	}
	checkSame(t, clients, fds)
	if got := r.InFlight(); got != 3 {
		t.Errorf("in flight before the answer: %d", got)
	}
	b.ch.Send(Message{Version: 2, Type: TypeAdopted, IDs: m.IDs[:2]})
	b.ch.Send(Message{Version: 2, Type: TypeClosed, IDs: m.IDs[2:], Reason: "test"})
	waitFor(t, func() bool { return r.InFlight() == 0 })
	ca, _ := r.Counts(1)
	cb, _ := r.Counts(2)
	if ca != (Counts{Handed: 3}) || cb != (Counts{Adopted: 2, Lost: 1}) {
		t.Errorf("counts: 1 %+v, 2 %+v", ca, cb)
	}
	// Refused as a batch: one answer names them all.
	r.SetAdopter(0)
	_, servers = batchPairs(t, 2)
	a.handBatch([]uint64{8, 9}, kind, servers...)
	if ans, _ := a.recv(); ans.Type != TypeRefused || !slices.Equal(ans.Answered(), []uint64{8, 9}) || ans.Reason == "" {
		t.Fatalf("refused: %+v", ans)
	}
}

// A new childproc hands a batch to an adopter of version 1 (an older
// childproc, after a rollback): it gets one conn record each, in its
// version; and an old childproc's single connections reach a new
// adopter.
func TestRelayMixesVersions(t *testing.T) {
	r := NewRelay(RelayOptions{})
	defer r.Close()
	kind := HTTPKind("tcp", "127.0.0.1:1")
	newer := attachV(t, r, 1, 2, kind)
	older := attachV(t, r, 2, 1, kind) // recv checks every record is of version 1
	r.SetAdopter(2)
	clients, servers := batchPairs(t, 3)
	newer.handBatch([]uint64{5, 6, 7}, kind, servers...)
	var fds []int
	for range 3 {
		m, f := older.recv()
		if m.Type != TypeConn || m.From != 1 || f == nil {
			t.Fatalf("passed on to version 1: %+v", m)
		}
		fd, err := unix.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		older.ch.Send(Message{Version: 1, Type: TypeAdopted, ID: m.ID})
	}
	if ans, _ := newer.recv(); ans.Type != TypeTaken || !slices.Equal(ans.Answered(), []uint64{5, 6, 7}) {
		t.Fatalf("answer to the sender: %+v", ans)
	}
	checkSame(t, clients, fds)
	waitFor(t, func() bool { return r.InFlight() == 0 })

	// And back: the old generation drains into the new one.
	r.SetAdopter(1)
	clients, servers = batchPairs(t, 1)
	older.hand(11, kind, servers[0])
	m, fds := newer.recvFDs()
	if m.Type != TypeConn || m.From != 2 || len(fds) != 1 {
		closeFDs(fds)
		t.Fatalf("passed on to version 2: %+v", m)
	}
	if ans, _ := older.recv(); ans.Type != TypeTaken || ans.ID != 11 || ans.IDs != nil {
		t.Fatalf("answer to version 1: %+v", ans)
	}
	checkSame(t, clients, fds)
	newer.ch.Send(Message{Version: 2, Type: TypeAdopted, IDs: []uint64{m.ID}})
	waitFor(t, func() bool { return r.InFlight() == 0 })
	c1, _ := r.Counts(1)
	c2, _ := r.Counts(2)
	if c1 != (Counts{Handed: 3, Adopted: 1}) || c2 != (Counts{Handed: 1, Adopted: 3}) {
		t.Errorf("counts: 1 %+v, 2 %+v", c1, c2)
	}
}

// A batch larger than the room under MaxInFlight goes in part: what fits
// is passed on and answered at once, the rest when room frees, or is
// refused after Wait.
func TestRelayBatchInFlightCap(t *testing.T) {
	r := NewRelay(RelayOptions{MaxInFlight: 2, Wait: 300 * time.Millisecond})
	defer r.Close()
	a := attachV(t, r, 1, 2, "k")
	b := attachV(t, r, 2, 2, "k")
	r.SetAdopter(2)
	_, servers := batchPairs(t, 3)
	a.handBatch([]uint64{1, 2, 3}, "k", servers...)
	m, fds := b.recvFDs()
	closeFDs(fds)
	if m.Type != TypeConns || len(m.IDs) != 2 {
		t.Fatalf("within the room: %+v", m)
	}
	if ans, _ := a.recv(); ans.Type != TypeTaken || !slices.Equal(ans.Answered(), []uint64{1, 2}) {
		t.Fatalf("what fit: %+v", ans)
	}
	if ans, _ := a.recv(); ans.Type != TypeRefused || !slices.Equal(ans.Answered(), []uint64{3}) || !strings.Contains(ans.Reason, "in flight") {
		t.Fatalf("past the cap: %+v", ans)
	}
	// Room frees while a batch waits: it goes.
	a.handBatch([]uint64{4, 5}, "k", servers[:2]...)
	b.ch.Send(Message{Version: 2, Type: TypeAdopted, IDs: m.IDs})
	m, fds = b.recvFDs()
	closeFDs(fds)
	if m.Type != TypeConns || len(m.IDs) != 2 {
		t.Fatalf("after room freed: %+v", m)
	}
	if ans, _ := a.recv(); ans.Type != TypeTaken || !slices.Equal(ans.Answered(), []uint64{4, 5}) {
		t.Fatalf("after room freed: %+v", ans)
	}
}

// SendConns leaves out a connection closed before it was sent, and says
// which.
func TestSendConnsSkipsClosed(t *testing.T) {
	ch, peer, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	other, err := FileConn(peer)
	peer.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	clients, servers := batchPairs(t, 3)
	var rcs []syscall.RawConn
	for _, s := range servers {
		rc, _ := s.SyscallConn()
		rcs = append(rcs, rc)
	}
	servers[1].Close()
	skipped, err := ch.SendConns(Message{Version: 2, Type: TypeConns, IDs: []uint64{1, 2, 3}, Kind: "k"}, rcs)
	if err != nil || !slices.Equal(skipped, []int{1}) {
		t.Fatalf("skipped %v, %v", skipped, err)
	}
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, fds, err := other.Recv()
	if err != nil || !slices.Equal(m.IDs, []uint64{1, 3}) {
		closeFDs(fds)
		t.Fatalf("received %+v, %v", m, err)
	}
	checkSame(t, []*net.TCPConn{clients[0], clients[2]}, fds)
}
