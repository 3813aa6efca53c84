package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// ---- 8: 10,000 connections and event streams across reloads ----

func benchScale(s *scenario) []row {
	var rows []row
	variants := []func() *scaleTarget{
		func() *scaleTarget {
			return hitlessScale(s, "childproc defaults: idle connections handed to the next generation at a request boundary")
		},
		func() *scaleTarget {
			return hitlessScale(s, "hand-over off (childproc's defaults before it: lame duck up to 5 s, idle connections closed once quiet 250 ms)",
				"-no-handover")
		},
		func() *scaleTarget {
			return hitlessScale(s, "hand-over off, lame duck up to 20 s, idle connections closed once quiet 16 s (longer than the clients' idle interval)",
				"-no-handover", "-lame-duck=20s", "-lame-duck-quiet=16s")
		},
	}
	if s.plan.scalePeers {
		variants = append(variants, peerScaleTargets(s)...)
	}
	for _, v := range variants {
		tg := v()
		var r []row
		if tg.skipped != "" {
			r = []row{{setup: tg.name + ": " + tg.skipped}}
		} else {
			r = benchScaleOnce(s, tg)
			r[0].setup = tg.name + "; " + r[0].setup
		}
		if len(rows) > 0 {
			r[0].num, r[0].scenario = "", ""
		} else {
			r[0].num, r[0].scenario = "8", "Scale: 10,000 keep-alive connections across reloads"
		}
		rows = append(rows, r...)
	}
	return rows
}

// scaleTarget is a server that row 8 drives, and how it reloads.
type scaleTarget struct {
	name    string // the variant, for the row
	skipped string // why it did not run, if it did not
	addr    string
	// reload begins one reload (it may return before the reload is done).
	reload func()
	// finish waits until the reloads are done and every replaced
	// backend has drained, and returns the time each drain took, and
	// that of the first one (the one that held the event streams).
	finish func(reloads int) (drains []time.Duration, first time.Duration)
	closer string // what closes an idle connection at a reload
	// How the row says what finish measured: of every drain, and of
	// the first one.
	drained, firstDrained string
	// proof says that the reloads happened, as the server tells it.
	proof func() string
	// pid is hitless's, whose memory the row samples; 0 for none.
	pid  int
	stop func()
	// begin, if set, is called just before the first reload, and cost
	// after the last drain: what the reloads cost, in words.
	begin func()
	cost  func() string
}

// hitlessScale is hitless around the test server, run with srv.
func hitlessScale(s *scenario, name string, srv ...string) *scaleTarget {
	h := s.startHitless(nil, srv...)
	m := h.Mark()
	var cpuStart cpuUse
	return &scaleTarget{name: name, addr: h.Addr(), pid: h.PID(), stop: h.Stop, closer: "a draining generation",
		begin:   func() { cpuStart = treeCPU(h) },
		cost:    func() string { return hitlessCost(h, m, treeCPU(h).sub(cpuStart)) },
		drained: "old generations drained in", firstDrained: "the generation holding them drained in",
		reload: func() { h.Signal(syscall.SIGHUP) },
		proof: func() string {
			st := h.Status()
			return fmt.Sprintf("hitless's status: %d reloads served, %d failed", st.ReloadsOK, st.ReloadsFailed)
		},
		// The log, not the status: how long each drain took is in the
		// log alone.
		finish: func(reloads int) ([]time.Duration, time.Duration) {
			_, last := h.WaitSince(m, 60*time.Second, harness.IsGen("serving", reloads+1))
			h.WaitSince(m, 60*time.Second, harness.IsGen("drained", last.Int("generation")-1))
			var drains []time.Duration
			var first time.Duration
			for _, r := range h.Records(m) {
				if r.Msg() == "drained" {
					d := time.Duration(r.Int("took"))
					drains = append(drains, d)
					if r.Int("generation") == 1 {
						first = d
					}
				}
			}
			return drains, first
		}}
}

func benchScaleOnce(s *scenario, tg *scaleTarget) []row {
	p := s.plan
	defer tg.stop() // before the next variant starts, not at the scenario's end
	var restPSS int64
	if tg.pid != 0 {
		fp, err := readFootprint(tg.pid)
		s.check(err)
		restPSS = fp.pss()
	}
	st := &scaleStats{}
	ctx, cancel := context.WithTimeout(context.Background(), p.scaleRun+60*time.Second)
	defer cancel()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
	defer wg.Wait() // if the scenario fails: stopRun (deferred after) ends them
	// Open the connections at a bounded pace so as not to overflow the
	// accept queue (a SYN dropped there costs a 1 s retransmit).
	sem := make(chan struct{}, 64)
	var opened sync.WaitGroup
	idle := p.scaleConns - p.scaleActive
	openStart := time.Now()
	for i := range p.scaleConns {
		think := 10 * time.Second // idle: one request every 5-15 s
		if i >= idle {
			think = 50 * time.Millisecond // active
		}
		sem <- struct{}{}
		opened.Add(1)
		rc := &rawConn{addr: tg.addr, stats: st}
		wg.Go(func() {
			rc.do()
			opened.Done()
			<-sem
			rc.loopAfterFirst(runCtx, think)
		})
	}
	opened.Wait()
	openTook := time.Since(openStart)
	logf("  %d connections open (%d) in %v", p.scaleConns, st.open.Load(), openTook.Round(time.Millisecond))
	peakOpen := st.open.Load()

	// Event streams that outlive the first reload.
	sseEvents, sseEvery := 60, 100*time.Millisecond
	var streams []*harness.Stream
	for range p.sseStreams {
		streams = append(streams, harness.OpenStream(tg.addr, sseEvents, sseEvery))
	}
	for _, x := range streams {
		<-x.First()
	}

	var maxPSS int64
	sampler := time.NewTicker(250 * time.Millisecond)
	defer sampler.Stop()
	reloadT := time.NewTicker(p.scaleEvery)
	defer reloadT.Stop()
	end := time.After(p.scaleRun)
	reloads := 0
	minOpen := peakOpen
	runStart := time.Now()
	if tg.begin != nil {
		tg.begin()
	}
	tg.reload() // the first at once, under the streams
	reloads++
loop:
	for {
		// The end first: a reload that took long (a proxy's) must not
		// be followed by another past the end.
		select {
		case <-end:
			break loop
		default:
		}
		select {
		case <-sampler.C:
			if fp, err := readFootprint(tg.pid); tg.pid != 0 && err == nil {
				maxPSS = max(maxPSS, fp.pss())
			}
			minOpen = min(minOpen, st.open.Load())
		case <-reloadT.C:
			tg.reload()
			reloads++
		case <-end:
			break loop
		}
	}
	broken := map[string]int{}
	complete, events := 0, int64(0)
	for _, x := range streams {
		switch err := x.Err(); {
		case err != nil:
			broken[string(harness.Classify(err))]++
		case x.Events() != int64(sseEvents):
			broken[fmt.Sprintf("ended after %d of %d events", x.Events(), sseEvents)]++
		default:
			complete++
		}
		events += x.Events()
	}
	// Every backend but the last must have drained.
	drains, firstDrain := tg.finish(reloads)
	proof := tg.proof()
	cost := ""
	if tg.cost != nil {
		cost = "; " + tg.cost()
	}
	stopRun()
	ran := time.Since(runStart) // the clients ran until every drain was done
	wg.Wait()
	t := &st.tally
	nBroken := 0
	var brokenText []string
	for k, v := range broken {
		nBroken += v
		brokenText = append(brokenText, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(brokenText)
	brokenSummary := fmt.Sprintf("broken %d", nBroken)
	if len(brokenText) > 0 {
		brokenSummary += " (" + strings.Join(brokenText, ", ") + ")"
	}
	closed := st.idleClosed.Load()
	other := fmt.Sprintf("%s; %d connections opened in %s; connections dialled in all %d (new handshakes after the start: %d); closed by %s while idle (reopened at their next request): %d, %d per reload; "+
		"closed after a response with Connection: close: %d; fewest open at once: %d; failures on a connection that had served before (the idle keep-alive race): %d, on a fresh one: %d; %s median %s, max %s%s",
		proof, peakOpen, ms(openTook), st.dials.Load(), st.dials.Load()-peakOpen, tg.closer, closed, closed/int64(reloads),
		st.closedAfter.Load(), minOpen, st.failReused.Load(), st.failFresh.Load(),
		tg.drained, ms(median(drains)), ms(maxOf(drains)), cost)
	if tg.pid != 0 {
		other += fmt.Sprintf("; hitless, its watcher and its standby: PSS %s at rest, at most %s during the run", mib(restPSS), mib(maxPSS))
	}
	return []row{
		{"8", "Scale: 10,000 keep-alive connections across reloads",
			fmt.Sprintf("%d idle connections (a POST every 5-15 s each) + %d active (a POST every ~50 ms each), %d reloads in %v",
				idle, p.scaleActive, reloads, p.scaleRun),
			strconv.FormatInt(t.Sent(), 10), failureText(t), fmt.Sprintf("%.0f", float64(t.OK())/ran.Seconds()), ms(t.Latency(50)), ms(t.Latency(99)),
			other},
		{"", "", fmt.Sprintf("%d server-sent event streams of %d events × %v, open across the first reload", p.sseStreams, sseEvents, sseEvery),
			fmt.Sprintf("%d streams", p.sseStreams), brokenSummary,
			"", "", "",
			fmt.Sprintf("%d of %d streams got all %d events (%d events in all); %s %s",
				complete, p.sseStreams, sseEvents, events, tg.firstDrained, ms(firstDrain))},
	}
}

// rawConn is one hand-driven HTTP/1.1 keep-alive connection of the scale
// scenario. Between requests it waits on a read: a server that closes the
// idle connection is seen at once, and the client reconnects with a
// request, as a pool that keeps its connections warm would.
type rawConn struct {
	addr  string
	c     net.Conn
	br    *bufio.Reader
	stats *scaleStats
}

type scaleStats struct {
	tally       harness.Tally
	dials       atomic.Int64 // connections opened, the first ones included
	closedAfter atomic.Int64 // closed after a response that said Connection: close
	open        atomic.Int64 // connections open now
	idleClosed  atomic.Int64 // closed by the server while idle, then reopened
	failFresh   atomic.Int64 // failures on a connection dialed for this request
	failReused  atomic.Int64 // failures on a connection that had served before
}

var scaleRequest = []byte("POST /work HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\npayload")

func (rc *rawConn) dial() error {
	c, err := net.DialTimeout("tcp", rc.addr, 10*time.Second)
	if err != nil {
		rc.stats.tally.AddFailure(err)
		return err
	}
	rc.c, rc.br = c, bufio.NewReader(c)
	rc.stats.open.Add(1)
	rc.stats.dials.Add(1)
	return nil
}

func (rc *rawConn) close() {
	if rc.c != nil {
		rc.c.Close()
		rc.c = nil
		rc.stats.open.Add(-1)
	}
}

// do sends one request on the connection (dialing first if needed) and
// reads the answer.
func (rc *rawConn) do() {
	fresh := rc.c == nil
	if fresh && rc.dial() != nil {
		return
	}
	start := time.Now()
	resp, err := rc.roundTrip(start.Add(10 * time.Second))
	if err != nil {
		rc.stats.tally.AddFailure(err)
		if fresh {
			rc.stats.failFresh.Add(1)
		} else {
			rc.stats.failReused.Add(1)
		}
		if _, answered := err.(*harness.StatusError); !answered {
			rc.close()
			return
		}
	} else {
		rc.stats.tally.AddOK(time.Since(start))
	}
	if resp != nil && resp.Close {
		rc.stats.closedAfter.Add(1)
		rc.close()
	}
}

// roundTrip writes the request and reads the whole answer by deadline;
// an answer other than 2xx comes back with a *harness.StatusError.
func (rc *rawConn) roundTrip(deadline time.Time) (*http.Response, error) {
	rc.c.SetDeadline(deadline)
	if _, err := rc.c.Write(scaleRequest); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	rc.c.SetDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return resp, &harness.StatusError{Code: resp.StatusCode, Status: resp.Status}
	}
	return resp, nil
}

// loopAfterFirst sends a request every think (randomized ±50%) until ctx
// ends; the first was sent while opening. Between requests it waits on a
// read, so a connection the server closes while idle is seen at once and
// closed; the next request opens a new one, as a client's pool does.
func (rc *rawConn) loopAfterFirst(ctx context.Context, think time.Duration) {
	defer rc.close()
	for ctx.Err() == nil {
		next := time.Now().Add(think/2 + time.Duration(rand.Int64N(int64(think)+1)))
		if rc.c != nil {
			rc.c.SetReadDeadline(next)
			_, err := rc.br.Peek(1)
			if ctx.Err() != nil {
				return
			}
			if ne, ok := err.(net.Error); err == nil || !ok || !ne.Timeout() {
				rc.stats.idleClosed.Add(1)
				rc.close()
			}
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		rc.do()
	}
}

// hitlessCost says what hitless's reloads cost: the hand-over's counts,
// the reload's latency (SIGHUP to the new generation serving, from the
// log since m) and cpu.
func hitlessCost(h *harness.Hitless, m int, cpu cpuUse) string {
	var took []time.Duration
	var hup time.Time
	for _, r := range h.Records(m) {
		switch r.Msg() {
		case "SIGHUP: reload":
			hup = r.At
		case "serving":
			if !hup.IsZero() {
				took = append(took, r.At.Sub(hup))
				hup = time.Time{}
			}
		}
	}
	ho := "hand-over not in play"
	if c := h.Status().HandOver; c != nil && c.Handed+c.Refused+c.Closed > 0 {
		ho = fmt.Sprintf("hitless's hand-over counts: handed %d, adopted %d, refused %d, lost %d; closed by the drains %d (%d while idle)",
			c.Handed, c.Adopted, c.Refused, c.Lost, c.Closed, c.ClosedIdle)
	}
	return fmt.Sprintf("%s; reload (SIGHUP to the new generation serving) median %s; CPU of hitless and every generation during the run %s (hitless alone %s)",
		ho, ms(median(took)), ms(cpu.tree), ms(cpu.hitless))
}

// cpuUse is CPU time used: by hitless and every generation it ran (tree),
// and by hitless alone.
type cpuUse struct{ tree, hitless time.Duration }

func (a cpuUse) sub(b cpuUse) cpuUse { return cpuUse{a.tree - b.tree, a.hitless - b.hitless} }

// treeCPU is the CPU time of hitless, of the generations it reaped, and
// of those running now; the difference of two readings is what the
// tree used in between.
func treeCPU(h *harness.Hitless) cpuUse {
	u, err := harness.ProcUsage(h.PID())
	if err != nil {
		return cpuUse{}
	}
	c := cpuUse{tree: u.CPU + u.ChildCPU, hitless: u.CPU}
	for _, g := range h.Status().Generations {
		if gu, err := harness.ProcUsage(g.PID); err == nil {
			c.tree += gu.CPU
		}
	}
	return c
}
