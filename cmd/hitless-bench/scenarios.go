package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// startHitless runs hitless around the test server (with srv flags) on an
// ephemeral loopback port, and waits until the first child serves; a
// cleanup stops it.
func (s *scenario) startHitless(flags []string, srv ...string) *harness.Hitless {
	return harness.Start(s, harness.Options{
		Hitless: s.hitless,
		Args:    flags,
		Command: append([]string{s.server}, srv...),
	})
}

// startExample runs hitless around an example's server (examples/grpc,
// examples/wsecho), which takes -listen ADDR, on a free loopback port
// named name, and returns hitless and the address.
func (s *scenario) startExample(name, server string) (*harness.Hitless, string) {
	addr, err := harness.FreeAddr()
	s.check(err)
	return harness.Start(s, harness.Options{
		Hitless: s.hitless,
		Args:    []string{"--listen", name + "=tcp://" + addr},
		Command: []string{server, "-listen", addr},
	}), addr
}

// client is one class of HTTP/1.1 load: workers that POST /work in a
// closed loop, with keep-alive or a new connection per request.
type client struct {
	name      string
	keepAlive bool
	delay     time.Duration // handler time asked of /work
	workers   int
	rate      float64      // requests a second over all workers; 0: closed loop
	onBody    func([]byte) // if set, sees the body of each successful answer
}

// start sends the load to addr for at most d. Any 2xx is a success.
func (c client) start(addr string, d time.Duration) *harness.Load {
	return harness.StartLoad(context.Background(), harness.LoadOptions{
		URL:            harness.WorkURL(addr, c.delay),
		Workers:        c.workers,
		KeepAlive:      c.keepAlive,
		Rate:           c.rate,
		Requests:       10_000_000,
		Duration:       d,
		Timeout:        10 * time.Second,
		ConnectTimeout: 5 * time.Second,
		OnBody:         c.onBody,
	})
}

// startLoads starts the load of each client at addr, for at most d, in
// the order of clients.
func startLoads(clients []client, addr string, d time.Duration) []*harness.Load {
	var loads []*harness.Load
	for _, c := range clients {
		loads = append(loads, c.start(addr, d))
	}
	return loads
}

// endLoads ends each load with end ((*harness.Load).Wait, to its bound,
// or (*harness.Load).Stop, at once) and returns what each counted, in
// the order of loads.
func endLoads(loads []*harness.Load, end func(*harness.Load) *harness.Tally) []*harness.Tally {
	var ts []*harness.Tally
	for _, l := range loads {
		ts = append(ts, end(l))
	}
	return ts
}

// clientRows are the rows of one scenario's clients, counted over
// elapsed: the first row carries num, name and other.
func clientRows(num, name, other, suffix string, clients []client, tallies []*harness.Tally, elapsed time.Duration) []row {
	var rows []row
	for i, c := range clients {
		t := tallies[i]
		rw := row{setup: fmt.Sprintf("%s (%d clients)%s", c.name, c.workers, suffix),
			requests: strconv.FormatInt(t.Sent(), 10), failures: failureText(t),
			rps: fmt.Sprintf("%.0f", float64(t.OK())/elapsed.Seconds()),
			p50: ms(t.Latency(50)), p99: ms(t.Latency(99))}
		if i == 0 {
			rw.num, rw.scenario, rw.other = num, name, other
		}
		rows = append(rows, rw)
	}
	return rows
}

// logTotals logs the requests and failures of one variant, with an
// example of each class of failure (the table has only the counts), and
// returns the two sums.
func logTotals(name string, clients []client, tallies []*harness.Tally) (total, failed int64) {
	for _, t := range tallies {
		total += t.Sent()
		failed += t.Failed()
	}
	logf("%s: %d requests, %d failed", name, total, failed)
	for i, t := range tallies {
		if t.Failed() > 0 {
			logf("  %s: %s", clients[i].name, t)
		}
	}
	return total, failed
}

// ---- 1, 2: baseline and under hitless without reloads ----

func benchBaseline(s *scenario) []row {
	p := s.plan
	script, err := writeWrkScript(s.tmp)
	s.check(err)
	addr, err := harness.FreeAddr()
	s.check(err)
	d := s.startDirect(addr)
	h := s.startHitless(nil)
	const conns = 16
	var direct, under []wrkResult
	// Alternate, so that drift of the machine hits both alike.
	for range p.rounds {
		for _, target := range []struct {
			addr string
			res  *[]wrkResult
		}{{d.addr, &direct}, {h.Addr(), &under}} {
			res, err := runWrk(s.wrk, script, target.addr, conns, p.wrkTime)
			s.check(err)
			*target.res = append(*target.res, res)
		}
	}
	med := func(rs []wrkResult) (rps float64, p50, p99 time.Duration, reqs int64, errs []string) {
		var r []float64
		var a, c []time.Duration
		for _, x := range rs {
			r = append(r, x.RPS)
			a = append(a, x.P50)
			c = append(c, x.P99)
			reqs += x.Requests
			if x.Errors != "" {
				errs = append(errs, x.Errors)
			}
		}
		slices.Sort(r)
		return r[len(r)/2], median(a), median(c), reqs, errs
	}
	dr, d50, d99, dn, derr := med(direct)
	hr, h50, h99, hn, herr := med(under)
	setup := fmt.Sprintf("wrk, %d keep-alive connections, POST /work (fast); median of %d runs of %v", conns, p.rounds, p.wrkTime)
	errText := func(e []string) string {
		if len(e) == 0 {
			return "0"
		}
		return strings.Join(e, "; ")
	}
	return []row{
		{"1", "Baseline: test server alone", setup, strconv.FormatInt(dn, 10), errText(derr),
			fmt.Sprintf("%.0f", dr), ms(d50), ms(d99), ""},
		{"2", "Under hitless, no reloads", setup + ", alternating with (1)", strconv.FormatInt(hn, 10), errText(herr),
			fmt.Sprintf("%.0f (**×%.2f**)", hr, hr/dr), ms(h50), fmt.Sprintf("%s (**×%.2f**)", ms(h99), float64(h99)/float64(d99)),
			"ratios to (1), same run"},
	}
}

// ---- 3, 4: reloads under load, and what each part buys ----

func reloadClients() []client {
	return []client{
		{name: "keep-alive, fast", keepAlive: true, workers: 2},
		{name: "keep-alive, 50 ms", keepAlive: true, delay: 50 * time.Millisecond, workers: 4},
		{name: "per-request, fast", keepAlive: false, workers: 2},
		{name: "per-request, 50 ms", keepAlive: false, delay: 50 * time.Millisecond, workers: 4},
	}
}

// fastClients are the fast ones of reloadClients: keep-alive, then
// per-request.
func fastClients() []client {
	c := reloadClients()
	return []client{c[0], c[2]}
}

func benchReloads(s *scenario) []row {
	p := s.plan
	var rows []row
	for _, cfg := range []struct {
		num, name string
		naive     bool
		srv       []string
	}{
		{"3", "hitless", false, nil},
		{"4", "hitless, lame duck off", false, []string{"-lame-duck=-1s"}},
		{"4", "naive stop-then-start (no hitless)", true, nil},
	} {
		var addr string
		var reload func() error
		var stop func()
		var h *harness.Hitless
		var gaps []time.Duration
		if cfg.naive {
			a, err := harness.FreeAddr()
			s.check(err)
			d := s.startDirect(a, cfg.srv...)
			addr, stop = d.addr, d.stop
			reload = func() error {
				t := time.Now()
				err := d.restart()
				gaps = append(gaps, time.Since(t))
				return err
			}
		} else {
			h = s.startHitless(nil, cfg.srv...)
			addr, stop = h.Addr(), h.Stop
			reload = func() error { return syscall.Kill(h.PID(), syscall.SIGHUP) }
		}
		clients := reloadClients()
		loads := startLoads(clients, addr, p.reloadRun)
		reloads := s.reloadAtPace(reload)
		tallies := endLoads(loads, (*harness.Load).Wait)
		other := fmt.Sprintf("%d reloads in %v, one every %v", reloads, p.reloadRun, p.reloadEvery)
		if h != nil {
			st := h.Status()
			other = fmt.Sprintf("%d SIGHUPs in %v (one every %v): %d new generations served, %d failed", reloads, p.reloadRun, p.reloadEvery, st.ReloadsOK, st.ReloadsFailed)
		} else {
			other += fmt.Sprintf("; each restart (SIGTERM → serving again) took median %s, max %s", ms(median(gaps)), ms(maxOf(gaps)))
		}
		stop()
		rows = append(rows, clientRows(cfg.num, cfg.name, other, "", clients, tallies, p.reloadRun)...)
		total, failed := logTotals(cfg.name, clients, tallies)
		s.totals[cfg.name] = [2]int{int(total), int(failed)}
	}
	return rows
}

// reloadAtPace calls reload every plan.reloadEvery, not waiting for the
// reloads, for plan.reloadRun (while a load runs to that time bound),
// and returns how many it made.
func (s *scenario) reloadAtPace(reload func() error) int {
	reloads, t := 0, time.NewTicker(s.plan.reloadEvery)
	defer t.Stop()
	end := time.NewTimer(s.plan.reloadRun)
	defer end.Stop()
	for {
		select {
		case <-end.C:
			return reloads
		case <-t.C:
			s.check(reload())
			reloads++
		}
	}
}

// ---- 5, 6: reload latency and hitless's own cost ----

// Both read hitless's log, not its status: the time at which the
// "serving" record comes is the measurement, and status requests would
// add their own CPU time and memory to what scenario 6 measures. hitless
// runs with --log-level debug for its "reload steps" records.
func benchCost(s *scenario) []row {
	p := s.plan
	timing := s.tmp + "/timing"
	h := s.startHitless([]string{"--log-level", "debug"}, "-timing-file", timing)
	bare, err := newBareStarter(s.server, s.tmp)
	s.check(err)
	defer bare.Close()
	// At rest: started, one child serving, nothing happening.
	restWait := 2 * time.Second
	time.Sleep(restWait)
	rest, err := readFootprint(h.PID())
	s.check(err)
	type sample struct {
		gen   int
		total time.Duration // SIGHUP sent -> "serving" read
		steps harness.Record
		bare  bareStart // the same child started bare, just before
	}
	var samples []sample
	const early = 10 // reloads before the first memory reading after rest
	var afterEarly footprint
	for i := range p.costReloads {
		var b bareStart
		if i < p.latencyN {
			b, err = bare.start()
			s.check(err)
		}
		m := h.Mark()
		t0 := time.Now()
		h.Signal(syscall.SIGHUP)
		_, r := h.WaitSince(m, 30*time.Second, harness.Is("serving"))
		gen := r.Int("generation")
		if i < p.latencyN {
			_, steps := h.WaitSince(m, 30*time.Second, harness.IsGen("reload steps", gen))
			samples = append(samples, sample{gen: gen, total: r.At.Sub(t0), steps: steps, bare: b})
		}
		h.WaitSince(m, 30*time.Second, harness.IsGen("drained", gen-1))
		if i+1 == early {
			time.Sleep(restWait)
			afterEarly, err = readFootprint(h.PID())
			s.check(err)
		}
		if (i+1)%200 == 0 {
			logf("  %d reloads", i+1)
		}
	}
	time.Sleep(restWait)
	after, err := readFootprint(h.PID())
	s.check(err)
	own, err := readTiming(timing)
	s.check(err)
	var overhead, totals, owns, bares, bareForks, bareReady []time.Duration
	var steps []harness.Record
	for _, x := range samples {
		o, ok := own[x.gen]
		if !ok {
			s.Fatalf("no timing line for generation %d", x.gen)
		}
		overhead = append(overhead, x.total-o)
		totals = append(totals, x.total)
		owns = append(owns, o)
		bares = append(bares, x.bare.total())
		bareForks = append(bareForks, x.bare.fork)
		bareReady = append(bareReady, x.bare.toReady)
		steps = append(steps, x.steps)
	}
	added := median(totals) - median(bares)
	ratio := float64(median(totals)) / float64(median(bares))
	perReload := (after.hitless.CPU - rest.hitless.CPU) / time.Duration(p.costReloads)
	return []row{
		{"5", "Reload latency: hitless's own overhead", fmt.Sprintf("%d reloads, idle, each just after a bare start of the same child; SIGHUP → \"serving\" minus the child's own start-up (its main() → READY=1)", len(samples)),
			"", "", "", "median " + ms(median(overhead)), "max " + ms(maxOf(overhead)),
			fmt.Sprintf("SIGHUP → serving: median %s, max %s. The same child started bare (fork+exec → READY=1, no hitless), alternating with the reloads: median %s, so hitless adds **%s (×%.2f)** over a bare fork+exec. "+
				"Steps, medians from hitless's debug log: %s; bare: fork+exec %s, exec → READY=1 %s. The child's own start-up, measured inside it: median %s",
				ms(median(totals)), ms(maxOf(totals)), ms(median(bares)), ms(added), ratio,
				stepMedians(steps), ms(median(bareForks)), ms(median(bareReady)), ms(median(owns)))},
		{"6", "hitless's own cost", fmt.Sprintf("at rest (%v after start), after %d reloads and after %d", restWait, early, p.costReloads),
			"", "", "", "", "",
			fmt.Sprintf("hitless, its watcher and its standby at rest: **%s**; RSS %s + %s + %s. After %d reloads: anonymous %s; after %d: %s, so anonymous memory **%+.2f MiB** from %d reloads to %d. "+
				"CPU time of hitless (user+system, 10 ms ticks) %s at rest, %s after (%s per reload; the shim's, the standby's included, runs in the child's process); open fds %d → %d",
				rest, mib(rest.hitless.RSS), mib(rest.watcher.RSS), mib(rest.standby.RSS), early, mib(afterEarly.anon()), p.costReloads, after,
				float64(after.anon()-afterEarly.anon())/(1<<20), early, p.costReloads,
				ms(rest.hitless.CPU), ms(after.hitless.CPU), ms(perReload), rest.hitless.FDs, after.hitless.FDs)},
	}
}

// readTiming reads the test server's -timing-file: generation -> its own
// start-up time.
func readTiming(path string) (map[int]time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[int]time.Duration{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		gen, _ := strconv.Atoi(f[0])
		start, _ := strconv.ParseInt(f[2], 10, 64)
		ready, _ := strconv.ParseInt(f[3], 10, 64)
		out[gen] = time.Duration(ready - start)
	}
	return out, nil
}

// ---- 7: crash of the serving child under load ----

func benchCrash(s *scenario) []row {
	p := s.plan
	// --stable-after 1s and a pause of more than that between kills, so
	// that each kill meets the first backoff step, not a doubled one.
	h := s.startHitless([]string{"--stable-after", "1s"})
	clients := fastClients()
	// At most: the pauses, the restarts, and a margin; stopped sooner.
	bound := time.Duration(p.kills)*(1500*time.Millisecond+30*time.Second) + time.Second
	loads := startLoads(clients, h.Addr(), bound)
	var back []time.Duration
	start := time.Now()
	for range p.kills {
		time.Sleep(1500 * time.Millisecond)
		g, ok := h.Status().Serving()
		if !ok {
			s.Fatalf("no generation serves")
		}
		m := h.Mark()
		t0 := time.Now()
		s.check(syscall.Kill(g.PID, syscall.SIGKILL))
		// The log: the time the record comes is the measurement.
		_, r := h.WaitSince(m, 30*time.Second, harness.Is("serving"))
		back = append(back, r.At.Sub(t0))
	}
	time.Sleep(time.Second)
	tallies := endLoads(loads, (*harness.Load).Stop)
	elapsed := time.Since(start)
	other := fmt.Sprintf("serving again after median %s, max %s (includes --backoff-min 100 ms); other failures are the requests the killed child held", ms(median(back)), ms(maxOf(back)))
	return clientRows("7", "Crash: serving child gets SIGKILL under load", other, fmt.Sprintf(", %d SIGKILLs", p.kills), clients, tallies, elapsed)
}

// ---- 9: HTTP/2 over cleartext across reloads ----

func benchH2C(s *scenario) []row {
	p := s.plan
	h := s.startHitless(nil, "-h2c")
	payload := s.tmp + "/payload"
	s.check(os.WriteFile(payload, []byte("payload"), 0o644))
	const conns, streams = 16, 10
	m := h.Mark()
	cmd := exec.Command(s.h2load, "-c", strconv.Itoa(conns), "-m", strconv.Itoa(streams),
		"-D", strconv.Itoa(int(p.h2Run.Seconds())), "-d", payload, "http://"+h.Addr()+"/work")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	s.check(cmd.Start())
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }() // owned here: h2load ends at -D
	reloads := 0
	t := time.NewTicker(p.h2ReloadEach)
	defer t.Stop()
loop:
	for {
		select {
		case err := <-waitc:
			if err != nil {
				s.Fatalf("h2load: %v: %s", err, out.String())
			}
			break loop
		case <-t.C:
			h.Signal(syscall.SIGHUP)
			reloads++
		}
	}
	res, err := parseH2load(out.String())
	s.check(err)
	// How long each drain took is in the log alone.
	var drains []time.Duration
	for _, r := range h.Records(m) {
		if r.Msg() == "drained" {
			drains = append(drains, time.Duration(r.Int("took")))
		}
	}
	return []row{
		{"9", "HTTP/2 over cleartext (h2c) across reloads",
			fmt.Sprintf("h2load, %d connections × %d streams, POST /work, %d reloads in %v", conns, streams, reloads, p.h2Run),
			strconv.FormatInt(res.Total, 10),
			fmt.Sprintf("failed %d (errored %d, timeout %d, non-2xx %d)", res.Failed, res.Errored, res.Timeout, res.Total-res.Succeeded-res.Errored-res.Timeout),
			fmt.Sprintf("%.0f", res.RPS), "", "",
			fmt.Sprintf("h2load time per request: mean %s, max %s; %d old generations drained (GOAWAY sent) in median %s, max %s",
				res.Mean, res.Max, len(drains), ms(median(drains)), ms(maxOf(drains)))},
	}
}
