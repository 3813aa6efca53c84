//go:build linux

package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// The connection hand-over (issue 17) through the real hitless and
// childproc: idle keep-alive connections move from a draining generation
// to the serving one, on the same TCP connection.

// kaConn is one keep-alive connection, spoken to by hand.
type kaConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKA(t *testing.T, addr string) *kaConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &kaConn{c: c, br: bufio.NewReader(c)}
}

// openKA opens n keep-alive connections, each with a request answered.
func openKA(t *testing.T, addr string, n int) []*kaConn {
	t.Helper()
	var ks []*kaConn
	for range n {
		k := dialKA(t, addr)
		if _, _, err := k.post(1, ""); err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	return ks
}

// post sends n POST /work requests in one write (n > 1: pipelined) and
// reads the answers: the generation of each, and whether the last said
// "Connection: close".
func (k *kaConn) post(n int, body string) (gens []string, closed bool, err error) {
	req := fmt.Sprintf("POST /work HTTP/1.1\r\nHost: e2e\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	k.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(k.c, strings.Repeat(req, n)); err != nil {
		return nil, false, err
	}
	for range n {
		resp, err := http.ReadResponse(k.br, nil)
		if err != nil {
			return gens, false, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return gens, false, err
		}
		if resp.StatusCode != http.StatusOK {
			return gens, false, fmt.Errorf("status %s: %s", resp.Status, b)
		}
		g, _, _ := strings.Cut(strings.TrimPrefix(string(b), "ok gen="), " ")
		gens = append(gens, g)
		closed = resp.Close
	}
	return gens, closed, nil
}

// Clients that send their next request at any moment around the
// hand-over (random pauses of 0-3 ms between requests, bodies of 0-4 KB)
// see no error and no closed connection across reloads: each reload
// hands every connection over, and every old generation drains at once.
func TestHandOverRacingClients(t *testing.T) {
	p := start(t, harness.Options{Args: []string{"--metrics", "127.0.0.1:0"}})
	const clients, reloads = 24, 6
	var mu sync.Mutex
	served := map[string]int{}
	errs := make(chan error, clients)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		k := dialKA(t, p.Addr())
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 17))
			for {
				select {
				case <-stop:
					return
				default:
				}
				gens, closed, err := k.post(1, strings.Repeat("x", r.IntN(4096)))
				if err == nil && closed {
					err = errors.New("Connection: close")
				}
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
				mu.Lock()
				served[gens[0]]++
				mu.Unlock()
				time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
			}
		})
	}
	waitServed := func(gen int) {
		t.Helper()
		waitUntil(t, 20*time.Second, fmt.Sprintf("generation %d serving the clients", gen), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return served[fmt.Sprint(gen)] >= clients
		})
	}
	waitServed(1)
	for range reloads {
		g := p.ReloadDrained()
		waitServed(g.Generation)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The adopters' answers reach hitless on their own time: wait for
	// them, then check everything else.
	st := p.WaitStatus(10*time.Second, func(s harness.Status) bool {
		return s.HandOver != nil && s.HandOver.Adopted >= clients*reloads
	})
	t.Logf("served %v; hand-over %+v", served, *st.HandOver)
	if h := st.HandOver; h == nil || h.Handed != clients*reloads || h.Adopted != clients*reloads || h.Closed != 0 || h.Lost != 0 || h.Refused != 0 {
		t.Errorf("status handover %+v: want %d handed and adopted, none closed, lost or refused", st.HandOver, clients*reloads)
	}
	if g, _ := st.Serving(); g.HandOver == nil || g.HandOver.Adopted != clients {
		t.Errorf("the serving generation's handover %+v, want %d adopted", g.HandOver, clients)
	}
	m := scrape(t, metricsAddr(t, p))
	if v, _ := m.Value("hitless_handover_connections_total", "result", "handed"); int(v) != clients*reloads {
		t.Errorf("hitless_handover_connections_total{result=handed} = %v, want %d", v, clients*reloads)
	}
	if v, ok := m.Value("hitless_generation_handover_connections", "result", "adopted"); !ok || int(v) != clients {
		t.Errorf("hitless_generation_handover_connections{result=adopted} = %v, want %d", v, clients)
	}
}

// A pipelining client and a TLS client are served and closed cleanly: the
// pipelined answers all come, and a connection that cannot move is closed
// after a response, with "Connection: close", never while idle.
func TestHandOverPipeliningAndTLS(t *testing.T) {
	t.Run("pipelining", func(t *testing.T) {
		p := start(t, harness.Options{})
		k := dialKA(t, p.Addr())
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				_, closed, err := k.post(3, "abc")
				if err != nil {
					done <- err
					return
				}
				if closed {
					k.c.Close()
					k = dialKA(t, p.Addr())
				}
			}
		}()
		for range 3 {
			p.ReloadDrained()
		}
		close(stop)
		if err := <-done; err != nil {
			t.Fatalf("pipelining client: %v", err)
		}
		if h := p.Status().HandOver; h == nil || h.Lost != 0 || h.ClosedIdle != 0 {
			t.Errorf("handover %+v: nothing may be lost or closed while idle", h)
		}
	})
	t.Run("tls", func(t *testing.T) {
		p := start(t, harness.Options{}, "-tls")
		tc, err := tls.Dial("tcp", p.Addr(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		k := &kaConn{c: tc, br: bufio.NewReader(tc)}
		defer tc.Close()
		gens, closed, err := k.post(1, "")
		if err != nil || closed || gens[0] != "1" {
			t.Fatalf("before the reload: %v %v %v", gens, closed, err)
		}
		p.Reload()
		p.WaitStatus(20*time.Second, func(s harness.Status) bool {
			g, ok := s.Gen(1)
			return ok && g.State == harness.StateDraining
		})
		// Past the lame duck's quiet time, when the drain without a
		// hand-over would close it while idle.
		time.Sleep(500 * time.Millisecond)
		gens, closed, err = k.post(1, "")
		if err != nil || !closed || gens[0] != "1" {
			t.Fatalf("during the drain: %v close=%v %v; want generation 1's answer with Connection: close", gens, closed, err)
		}
		p.WaitStatus(20*time.Second, gens1)
		st := p.Status()
		if h := st.HandOver; h == nil || h.Handed != 0 || h.Closed != 1 || h.ClosedIdle != 0 {
			t.Errorf("handover %+v: want the TLS connection closed after its response, nothing handed", h)
		}
	})
}

func gens1(s harness.Status) bool { return len(s.Generations) == 1 }

// A generation killed while connections are queued to it: hitless counts
// them lost and leaks no descriptor. The adopter is stopped (SIGSTOP)
// during a trial, so that nothing reads its channel when the old
// generation hands over at the promotion; then it is killed.
func TestHandOverAdopterKilled(t *testing.T) {
	p := start(t, harness.Options{Args: []string{"--trial", "1m", "--drain-timeout", "20s"}})
	const conns = 50
	ks := openKA(t, p.Addr(), conns)
	before := usage(t, p.PID()).FDs
	p.Signal(syscall.SIGHUP)
	st := p.WaitStatus(20*time.Second, func(s harness.Status) bool {
		g, ok := s.Gen(2)
		return ok && g.State == harness.StateTrial
	})
	g2, _ := st.Gen(2)
	syscall.Kill(g2.PID, syscall.SIGSTOP)
	if r := ctl(t, 20*time.Second, p, "promote"); r.Code != 0 {
		t.Fatalf("promote: %s", r)
	}
	p.WaitStatus(20*time.Second, func(s harness.Status) bool {
		return s.HandOver != nil && s.HandOver.Handed+s.HandOver.Refused == conns
	})
	syscall.Kill(g2.PID, syscall.SIGKILL)
	st = p.WaitStatus(30*time.Second, func(s harness.Status) bool {
		g, ok := s.Serving()
		return ok && g.Generation > 2 && len(s.Generations) == 1
	})
	h := st.HandOver
	t.Logf("after the kill: %+v", *h)
	if h.Lost != h.Handed || h.Adopted != 0 {
		t.Errorf("handover %+v: every connection handed to the killed generation is lost", *h)
	}
	// One serving generation again, as at the start: as many descriptors.
	waitUntil(t, 10*time.Second, "hitless's descriptors back to what they were", func() bool {
		return usage(t, p.PID()).FDs <= before
	})
	// The clients see their connections end, or are answered by the
	// old generation (refused ones), with Connection: close.
	for i, k := range ks {
		_, closed, err := k.post(1, "")
		if err == nil && !closed {
			t.Errorf("client %d: answered on a connection that should have ended", i)
		}
	}
}

// hitless upgrade carries each generation's channel: after an upgrade in
// place, a reload still hands every connection over.
func TestHandOverAcrossUpgrade(t *testing.T) {
	_, path := liveBinary(t)
	p := start(t, harness.Options{Hitless: path})
	const conns = 10
	ks := openKA(t, p.Addr(), conns)
	p.ReloadDrained()
	deploy(t, bin.hitless, path)
	if r := ctl(t, 3*time.Minute, p, "upgrade"); r.Code != 0 {
		t.Fatalf("upgrade: %s", r)
	}
	g := p.ReloadDrained()
	for i, k := range ks {
		gens, closed, err := k.post(1, "")
		if err != nil || closed || gens[0] != fmt.Sprint(g.Generation) {
			t.Errorf("client %d after the upgrade and a reload: %v close=%v %v", i, gens, closed, err)
		}
	}
	st := p.WaitStatus(10*time.Second, func(s harness.Status) bool { return s.HandOver != nil && s.HandOver.Adopted >= 2*conns })
	if h := st.HandOver; h.Handed != 2*conns || h.Adopted != 2*conns {
		t.Errorf("handover %+v: want %d handed and adopted across the upgrade", h, 2*conns)
	}
}

// With the hand-over off (childproc's option), nothing is handed: the
// drain closes idle connections as before.
func TestHandOverOff(t *testing.T) {
	p := start(t, harness.Options{}, "-no-handover")
	k := dialKA(t, p.Addr())
	if _, _, err := k.post(1, ""); err != nil {
		t.Fatal(err)
	}
	p.ReloadDrained()
	k.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := k.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection after the drain: %v, want EOF", err)
	}
	st := p.Status()
	if g, _ := st.Serving(); g.HandOver != nil {
		t.Errorf("a generation with the hand-over off has counts: %+v", g.HandOver)
	}
}

// Generations of childproc builds on both sides of the batch (protocol
// version 2) hand connections to each other under one hitless: a
// generation of version 1 (the test server's handover-v1 mode) drains
// into one of version 2 and back, connection by connection one way and
// in batches the other, and no client sees an error or a closed
// connection.
func TestHandOverMixedVersions(t *testing.T) {
	modeFile := t.TempDir() + "/mode"
	setMode := func(mode string) {
		t.Helper()
		if err := os.WriteFile(modeFile, []byte(mode), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setMode("handover-v1")
	p := start(t, harness.Options{}, "-mode-file", modeFile)
	const clients, reloads = 40, 4
	var ks []*kaConn
	for range clients {
		ks = append(ks, dialKA(t, p.Addr()))
	}
	for i := range reloads + 1 {
		if i > 0 {
			// Generations 2 and 4 speak version 2, 3 and 5 version 1.
			if i%2 == 1 {
				setMode("serve")
			} else {
				setMode("handover-v1")
			}
			p.ReloadDrained()
		}
		gen := fmt.Sprint(i + 1)
		for j, k := range ks {
			gens, closed, err := k.post(1, "")
			if err == nil && closed {
				err = errors.New("Connection: close")
			}
			if err != nil {
				t.Fatalf("generation %s, client %d: %v", gen, j, err)
			}
			if gens[0] != gen {
				t.Fatalf("client %d answered by generation %s, want %s", j, gens[0], gen)
			}
		}
	}
	st := p.WaitStatus(10*time.Second, func(s harness.Status) bool {
		return s.HandOver != nil && s.HandOver.Adopted >= clients*reloads
	})
	if h := st.HandOver; h.Handed != clients*reloads || h.Adopted != clients*reloads || h.Closed != 0 || h.Lost != 0 || h.Refused != 0 {
		t.Errorf("status handover %+v: want %d handed and adopted, none closed, lost or refused", *h, clients*reloads)
	}
	// Each generation spoke the version it was meant to.
	spoke := map[int]int{}
	for _, r := range p.Records(0) {
		if r.Msg() == "handover: generation takes part" {
			spoke[r.Int("generation")] = r.Int("version")
		}
	}
	for g := 1; g <= reloads+1; g++ {
		if want := 2 - g%2; spoke[g] != want {
			t.Errorf("generation %d spoke version %d, want %d (all: %v)", g, spoke[g], want, spoke)
		}
	}
}
