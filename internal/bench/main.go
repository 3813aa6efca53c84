// Command bench measures what hitless claims: that clients see nothing of
// a reload. It runs the test server (internal/e2e/testserver) directly and
// under hitless, on 127.0.0.1 only, drives it with wrk, h2load and load
// clients of its own (POSTs, which no client retries), and prints one
// markdown table in which every figure comes from this run.
//
// scripts/bench.sh installs the tools, builds the binaries and runs it:
//
//	bench -hitless BIN -server BIN -wrk wrk -h2load h2load [-quick] [-out docs/benchmarks.md]
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type bins struct {
	hitless, server, wrk, h2load string
}

type row struct {
	num, scenario, setup, requests, failures, rps, p50, p99, other string
}

// plan holds the sizes of a run; -quick shrinks them.
type plan struct {
	rounds       int           // baseline rounds, alternating direct and hitless
	wrkTime      time.Duration // per wrk run
	reloadRun    time.Duration // scenarios 3, 4
	reloadEvery  time.Duration
	latencyN     int // scenario 5
	costReloads  int // scenario 6
	kills        int // scenario 7
	scaleConns   int
	scaleActive  int
	scaleRun     time.Duration
	scaleEvery   time.Duration
	sseStreams   int
	h2Run        time.Duration
	h2ReloadEach time.Duration
}

var fullPlan = plan{
	rounds: 5, wrkTime: 4 * time.Second,
	reloadRun: 30 * time.Second, reloadEvery: 1500 * time.Millisecond,
	latencyN: 50, costReloads: 1000, kills: 5,
	scaleConns: 10000, scaleActive: 100, scaleRun: 30 * time.Second, scaleEvery: 6 * time.Second, sseStreams: 100,
	h2Run: 20 * time.Second, h2ReloadEach: 2 * time.Second,
}

var quickPlan = plan{
	rounds: 2, wrkTime: 3 * time.Second,
	reloadRun: 10 * time.Second, reloadEvery: 1500 * time.Millisecond,
	latencyN: 50, costReloads: 200, kills: 3,
	scaleConns: 10000, scaleActive: 100, scaleRun: 15 * time.Second, scaleEvery: 6 * time.Second, sseStreams: 100,
	h2Run: 10 * time.Second, h2ReloadEach: 2 * time.Second,
}

func main() {
	var b bins
	flag.StringVar(&b.hitless, "hitless", "", "hitless binary")
	flag.StringVar(&b.server, "server", "", "test server binary (internal/e2e/testserver)")
	flag.StringVar(&b.wrk, "wrk", "wrk", "wrk binary")
	flag.StringVar(&b.h2load, "h2load", "h2load", "h2load binary")
	quick := flag.Bool("quick", false, "shorter runs (about 3 minutes instead of 5)")
	out := flag.String("out", "", "also write the report to this file")
	only := flag.String("only", "", "comma-separated scenario numbers to run (default: all)")
	commit := flag.String("commit", "", "commit being measured, for the header")
	flag.Parse()
	if b.hitless == "" || b.server == "" {
		fmt.Fprintln(os.Stderr, "bench: -hitless and -server are required")
		os.Exit(2)
	}
	p := fullPlan
	if *quick {
		p = quickPlan
	}
	raiseNoFile()
	tmp, err := os.MkdirTemp("", "hitless-bench-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(tmp)

	want := func(n string) bool {
		return *only == "" || slices.Contains(strings.Split(*only, ","), n)
	}
	r := &report{started: time.Now(), plan: p, quick: *quick}
	steps := []struct {
		nums string
		fn   func(*bins, plan, string) ([]row, error)
	}{
		{"1,2", benchBaseline},
		{"3,4", benchReloads},
		{"5,6", benchCost},
		{"7", benchCrash},
		{"8", benchScale},
		{"9", benchH2C},
	}
	for _, s := range steps {
		run := false
		for n := range strings.SplitSeq(s.nums, ",") {
			run = run || want(n)
		}
		if !run {
			continue
		}
		t := time.Now()
		log("scenario %s ...", s.nums)
		rows, err := s.fn(&b, p, tmp)
		if err != nil {
			fatal(fmt.Errorf("scenario %s: %w", s.nums, err))
		}
		log("scenario %s done in %v", s.nums, time.Since(t).Round(time.Second))
		r.rows = append(r.rows, rows...)
	}
	r.took = time.Since(r.started)
	text := r.markdown(b, *commit)
	fmt.Print(text)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
			fatal(err)
		}
	}
}

func log(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func numCPU() int { return runtime.NumCPU() }

// raiseNoFile lifts the soft open-files limit to the hard one, for this
// process and what it starts: 10,000 connections need more than 1024.
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "0 ms"
	case d < time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	case d < 10*time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func median(d []time.Duration) time.Duration { return percentile(d, 50) }

func maxOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

// ---- 1, 2: baseline and under hitless without reloads ----

func benchBaseline(b *bins, p plan, tmp string) ([]row, error) {
	script, err := writeWrkScript(tmp)
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	d, err := startDirect(b, addr)
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	h, err := startHitless(b, nil)
	if err != nil {
		return nil, err
	}
	defer h.Stop()
	const conns = 16
	var direct, under []wrkResult
	// Alternate, so that drift of the machine hits both alike.
	for range p.rounds {
		for _, target := range []struct {
			addr string
			res  *[]wrkResult
		}{{d.Addr, &direct}, {h.Addr, &under}} {
			res, err := runWrk(b.wrk, script, target.addr, conns, p.wrkTime)
			if err != nil {
				return nil, err
			}
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
	}, nil
}

// ---- 3, 4: reloads under load, and what each part buys ----

func reloadClients() []*Client {
	return []*Client{
		{Name: "keep-alive, fast", KeepAlive: true, MS: 0, Workers: 2},
		{Name: "keep-alive, 50 ms", KeepAlive: true, MS: 50, Workers: 4},
		{Name: "per-request, fast", KeepAlive: false, MS: 0, Workers: 2},
		{Name: "per-request, 50 ms", KeepAlive: false, MS: 50, Workers: 4},
	}
}

func benchReloads(b *bins, p plan, tmp string) ([]row, error) {
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
		clients := reloadClients()
		ctx, cancel := context.WithTimeout(context.Background(), p.reloadRun)
		var addr string
		var reload func() error
		var stop func()
		var h *Hitless
		var gaps []time.Duration
		if cfg.naive {
			a, err := freeAddr()
			if err != nil {
				cancel()
				return nil, err
			}
			d, err := startDirect(b, a, cfg.srv...)
			if err != nil {
				cancel()
				return nil, err
			}
			addr, stop = d.Addr, d.Stop
			reload = func() error {
				t := time.Now()
				err := d.restart()
				gaps = append(gaps, time.Since(t))
				return err
			}
		} else {
			var err error
			h, err = startHitless(b, nil, cfg.srv...)
			if err != nil {
				cancel()
				return nil, err
			}
			addr, stop = h.Addr, h.Stop
			reload = func() error { return h.signal(syscall.SIGHUP) }
		}
		var m int
		if h != nil {
			m = h.mark()
		}
		done := make(chan struct{})
		go func() { runClients(ctx, addr, clients); close(done) }()
		reloads, t := 0, time.NewTicker(p.reloadEvery)
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-t.C:
				if err := reload(); err != nil {
					cancel()
					return nil, err
				}
				reloads++
			}
		}
		t.Stop()
		<-done
		cancel()
		other := fmt.Sprintf("%d reloads in %v, one every %v", reloads, p.reloadRun, p.reloadEvery)
		if h != nil {
			served, failed := 0, 0
			for _, r := range h.since(m) {
				switch r.msg() {
				case "serving":
					served++
				case "reload failed":
					failed++
				}
			}
			other = fmt.Sprintf("%d SIGHUPs in %v (one every %v): %d new generations served, %d failed", reloads, p.reloadRun, p.reloadEvery, served, failed)
		} else {
			other += fmt.Sprintf("; each restart (SIGTERM → serving again) took median %s, max %s", ms(median(gaps)), ms(maxOf(gaps)))
		}
		stop()
		for i, c := range clients {
			rw := row{num: cfg.num, scenario: cfg.name, setup: fmt.Sprintf("%s (%d clients)", c.Name, c.Workers),
				requests: strconv.Itoa(c.Tally.Sent), failures: c.Tally.failureText(),
				rps: fmt.Sprintf("%.0f", float64(c.Tally.OK)/p.reloadRun.Seconds()),
				p50: ms(c.Tally.Pct(50)), p99: ms(c.Tally.Pct(99))}
			if i == 0 {
				rw.other = other
			}
			if i > 0 {
				rw.num, rw.scenario = "", ""
			}
			rows = append(rows, rw)
		}
		total, failed := 0, 0
		for _, c := range clients {
			total += c.Tally.Sent
			failed += c.Tally.Failed()
		}
		log("%s: %d requests, %d failed", cfg.name, total, failed)
		summary.set(cfg.name, total, failed)
	}
	return rows, nil
}

// summary collects the figures of the headline.
type totals struct {
	mu    sync.Mutex
	total map[string][2]int
}

var summary = &totals{total: map[string][2]int{}}

func (s *totals) set(k string, total, failed int) {
	s.mu.Lock()
	s.total[k] = [2]int{total, failed}
	s.mu.Unlock()
}

// ---- 5, 6: reload latency and hitless's own cost ----

func benchCost(b *bins, p plan, tmp string) ([]row, error) {
	timing := tmp + "/timing"
	h, err := startHitless(b, nil, "-timing-file", timing)
	if err != nil {
		return nil, err
	}
	defer h.Stop()
	// At rest: started, one child serving, nothing happening.
	restWait := 2 * time.Second
	time.Sleep(restWait)
	rest, err := usage(h.PID())
	if err != nil {
		return nil, err
	}
	type sample struct {
		gen   int64
		total time.Duration // SIGHUP sent -> "serving" read
	}
	var samples []sample
	for i := range p.costReloads {
		m := h.mark()
		t0 := time.Now()
		if err := h.signal(syscall.SIGHUP); err != nil {
			return nil, err
		}
		_, r, err := h.waitFor(m, 30*time.Second, is("serving"))
		if err != nil {
			return nil, err
		}
		if i < p.latencyN {
			samples = append(samples, sample{gen: r.int("generation"), total: r.at.Sub(t0)})
		}
		old := r.int("generation") - 1
		if _, _, err := h.waitFor(m, 30*time.Second, func(r record) bool { return r.msg() == "drained" && r.int("generation") == old }); err != nil {
			return nil, err
		}
		if (i+1)%200 == 0 {
			log("  %d reloads", i+1)
		}
	}
	time.Sleep(restWait)
	after, err := usage(h.PID())
	if err != nil {
		return nil, err
	}
	own, err := readTiming(timing)
	if err != nil {
		return nil, err
	}
	direct, err := directStarts(b, p.latencyN, tmp)
	if err != nil {
		return nil, err
	}
	var overhead, totals, owns []time.Duration
	for _, s := range samples {
		o, ok := own[s.gen]
		if !ok {
			return nil, fmt.Errorf("no timing line for generation %d", s.gen)
		}
		overhead = append(overhead, s.total-o)
		totals = append(totals, s.total)
		owns = append(owns, o)
	}
	return []row{
		{"5", "Reload latency: hitless's own overhead", fmt.Sprintf("%d reloads, idle; SIGHUP → \"serving\" minus the child's own start-up (its main() → READY=1)", len(samples)),
			"", "", "", "median " + ms(median(overhead)), "max " + ms(maxOf(overhead)),
			fmt.Sprintf("SIGHUP → serving: median %s, max %s. The child's own start-up, measured inside it: median %s. "+
				"The same child started %d times by the bench itself (fork+exec → READY=1, no hitless): median %s, so hitless adds median %s over a bare fork+exec",
				ms(median(totals)), ms(maxOf(totals)), ms(median(owns)), len(direct), ms(median(direct)), ms(median(totals)-median(direct)))},
		{"6", "hitless's own cost", fmt.Sprintf("at rest (%v after start), and after %d reloads", restWait, p.costReloads),
			"", "", "", "", "",
			fmt.Sprintf("RSS %s at rest → %s after %d reloads; CPU time (user+system) %s at rest, %s after (%s per reload); open fds %d → %d",
				mib(rest.RSS), mib(after.RSS), p.costReloads, ms(rest.CPU), ms(after.CPU),
				ms((after.CPU-rest.CPU)/time.Duration(p.costReloads)), rest.FDs, after.FDs)},
	}, nil
}

// readTiming reads the test server's -timing-file: generation -> its own
// start-up time.
func readTiming(path string) (map[int64]time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[int64]time.Duration{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		gen, _ := strconv.ParseInt(f[0], 10, 64)
		start, _ := strconv.ParseInt(f[2], 10, 64)
		ready, _ := strconv.ParseInt(f[3], 10, 64)
		out[gen] = time.Duration(ready - start)
	}
	return out, nil
}

// ---- 7: crash of the serving child under load ----

func benchCrash(b *bins, p plan, tmp string) ([]row, error) {
	// --stable-after 1s and a pause of more than that between kills, so
	// that each kill meets the first backoff step, not a doubled one.
	h, err := startHitless(b, []string{"--stable-after", "1s"})
	if err != nil {
		return nil, err
	}
	defer h.Stop()
	clients := []*Client{
		{Name: "keep-alive, fast", KeepAlive: true, Workers: 2},
		{Name: "per-request, fast", KeepAlive: false, Workers: 2},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { runClients(ctx, h.Addr, clients); close(done) }()
	var back []time.Duration
	start := time.Now()
	for range p.kills {
		time.Sleep(1500 * time.Millisecond)
		recs := h.since(0)
		var pid int64
		for _, r := range recs {
			if r.msg() == "serving" {
				pid = r.int("pid")
			}
		}
		m := h.mark()
		t0 := time.Now()
		if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
			cancel()
			return nil, err
		}
		_, r, err := h.waitFor(m, 30*time.Second, is("serving"))
		if err != nil {
			cancel()
			return nil, err
		}
		back = append(back, r.at.Sub(t0))
	}
	time.Sleep(time.Second)
	cancel()
	<-done
	elapsed := time.Since(start)
	var rows []row
	for i, c := range clients {
		rw := row{setup: fmt.Sprintf("%s (%d clients), %d SIGKILLs", c.Name, c.Workers, p.kills),
			requests: strconv.Itoa(c.Tally.Sent), failures: c.Tally.failureText(),
			rps: fmt.Sprintf("%.0f", float64(c.Tally.OK)/elapsed.Seconds()),
			p50: ms(c.Tally.Pct(50)), p99: ms(c.Tally.Pct(99))}
		if i == 0 {
			rw.num, rw.scenario = "7", "Crash: serving child gets SIGKILL under load"
			rw.other = fmt.Sprintf("serving again after median %s, max %s (includes --backoff-min 100 ms); other failures are the requests the killed child held", ms(median(back)), ms(maxOf(back)))
		}
		rows = append(rows, rw)
	}
	return rows, nil
}

// ---- 8: 10,000 connections and event streams across reloads ----

func benchScale(b *bins, p plan, tmp string) ([]row, error) {
	var rows []row
	for _, v := range []struct {
		name string
		srv  []string
	}{
		{"childproc defaults (lame duck up to 5 s, idle connections closed once quiet 250 ms)", nil},
		{"lame duck up to 20 s, idle connections closed once quiet 16 s (longer than the clients' idle interval)", []string{"-lame-duck=20s", "-lame-duck-quiet=16s"}},
	} {
		r, err := benchScaleOnce(b, p, v.srv)
		if err != nil {
			return nil, err
		}
		r[0].setup = v.name + "; " + r[0].setup
		if len(rows) > 0 {
			r[0].num, r[0].scenario = "", ""
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

func benchScaleOnce(b *bins, p plan, srv []string) ([]row, error) {
	h, err := startHitless(b, nil, srv...)
	if err != nil {
		return nil, err
	}
	defer h.Stop()
	restUsage, _ := usage(h.PID())
	st := &scaleStats{tally: newTally()}
	ctx, cancel := context.WithTimeout(context.Background(), p.scaleRun+60*time.Second)
	defer cancel()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
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
		rc := &rawConn{addr: h.Addr, stats: st}
		wg.Go(func() {
			rc.do()
			opened.Done()
			<-sem
			rc.loopAfterFirst(runCtx, think)
		})
	}
	opened.Wait()
	openTook := time.Since(openStart)
	log("  %d connections open (%d) in %v", p.scaleConns, st.open.Load(), openTook.Round(time.Millisecond))
	peakOpen := st.open.Load()

	// Event streams that outlive the first reload.
	sse := &sseResult{broken: map[string]int{}}
	sseEvents, sseEvery := 60, 100*time.Millisecond
	var sseStarted, sseDone sync.WaitGroup
	for range p.sseStreams {
		sseStarted.Add(1)
		sseDone.Go(func() { streamSSE(h.Addr, sseEvents, sseEvery, sse, &sseStarted) })
	}
	sseStarted.Wait()

	m := h.mark()
	var maxRSS int64
	sampler := time.NewTicker(250 * time.Millisecond)
	defer sampler.Stop()
	reloadT := time.NewTicker(p.scaleEvery)
	defer reloadT.Stop()
	end := time.After(p.scaleRun)
	reloads := 0
	minOpen := peakOpen
	if err := h.signal(syscall.SIGHUP); err != nil { // the first at once, under the streams
		return nil, err
	}
	reloads++
loop:
	for {
		select {
		case <-sampler.C:
			if u, err := usage(h.PID()); err == nil {
				maxRSS = max(maxRSS, u.RSS)
			}
			minOpen = min(minOpen, st.open.Load())
		case <-reloadT.C:
			if err := h.signal(syscall.SIGHUP); err != nil {
				return nil, err
			}
			reloads++
		case <-end:
			break loop
		}
	}
	sseDone.Wait()
	// Every generation but the last must have drained.
	_, last, err := h.waitFor(m, 60*time.Second, func(r record) bool { return r.msg() == "serving" && r.int("generation") == int64(reloads+1) })
	if err != nil {
		return nil, err
	}
	if _, _, err := h.waitFor(m, 60*time.Second, func(r record) bool { return r.msg() == "drained" && r.int("generation") == last.int("generation")-1 }); err != nil {
		return nil, err
	}
	stopRun()
	wg.Wait()
	var drains []time.Duration
	var firstDrain time.Duration
	for _, r := range h.since(m) {
		if r.msg() == "drained" {
			d := time.Duration(r.int("took"))
			drains = append(drains, d)
			if r.int("generation") == 1 {
				firstDrain = d
			}
		}
	}
	t := st.tally
	broken := 0
	var brokenText []string
	for k, v := range sse.broken {
		broken += v
		brokenText = append(brokenText, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(brokenText)
	return []row{
		{"8", "Scale: 10,000 keep-alive connections across reloads",
			fmt.Sprintf("%d idle connections (a POST every 5-15 s each) + %d active (a POST every ~50 ms each), %d reloads in %v",
				idle, p.scaleActive, reloads, p.scaleRun),
			strconv.Itoa(t.Sent), t.failureText(), fmt.Sprintf("%.0f", float64(t.OK)/p.scaleRun.Seconds()), ms(t.Pct(50)), ms(t.Pct(99)),
			fmt.Sprintf("%d connections opened in %s; closed by a draining generation while idle (reopened at their next request): %d; fewest open at once: %d; failures on a connection that had served before (the idle keep-alive race): %d, on a fresh one: %d; old generations drained in median %s, max %s; hitless RSS %s at rest, at most %s during the run",
				peakOpen, ms(openTook), st.idleClosed.Load(), minOpen, st.failReused.Load(), st.failFresh.Load(), ms(median(drains)), ms(maxOf(drains)), mib(restUsage.RSS), mib(maxRSS))},
		{"", "", fmt.Sprintf("%d server-sent event streams of %d events × %v, open across the first reload", p.sseStreams, sseEvents, sseEvery),
			fmt.Sprintf("%d streams", p.sseStreams), fmt.Sprintf("broken %d%s", broken, strings.TrimPrefix(" ("+strings.Join(brokenText, ", ")+")", map[bool]string{true: " ()", false: ""}[len(brokenText) == 0])),
			"", "", "",
			fmt.Sprintf("%d of %d streams got all %d events (%d events in all); the generation holding them drained in %s",
				sse.complete, p.sseStreams, sseEvents, sse.events, ms(firstDrain))},
	}, nil
}

// loopAfterFirst sends a request every think (randomized ±50%) until ctx
// ends; the first was sent while opening. Between requests it waits on a
// read, so a connection the server closes while idle is seen at once and
// closed; the next request opens a new one, as a client's pool does.
func (rc *rawConn) loopAfterFirst(ctx context.Context, think time.Duration) {
	defer rc.close()
	for ctx.Err() == nil {
		next := time.Now().Add(think/2 + time.Duration(randN(int64(think)+1)))
		if rc.c != nil {
			rc.c.SetReadDeadline(next)
			_, err := rc.br.Peek(1)
			if ctx.Err() != nil {
				return
			}
			if err == nil || !isTimeout(err) {
				rc.stats.idleClosed.Add(1)
				rc.close()
			}
		}
		select {
		case <-time.After(time.Until(next)):
		case <-ctx.Done():
			return
		}
		rc.do()
	}
}

// ---- 9: HTTP/2 over cleartext across reloads ----

func benchH2C(b *bins, p plan, tmp string) ([]row, error) {
	h, err := startHitless(b, nil, "-h2c")
	if err != nil {
		return nil, err
	}
	defer h.Stop()
	payload := tmp + "/payload"
	if err := os.WriteFile(payload, []byte("payload"), 0o644); err != nil {
		return nil, err
	}
	const conns, streams = 16, 10
	m := h.mark()
	cmd := exec.Command(b.h2load, "-c", strconv.Itoa(conns), "-m", strconv.Itoa(streams),
		"-D", strconv.Itoa(int(p.h2Run.Seconds())), "-d", payload, "http://"+h.Addr+"/work")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	reloads := 0
	t := time.NewTicker(p.h2ReloadEach)
	defer t.Stop()
loop:
	for {
		select {
		case err := <-waitc:
			if err != nil {
				return nil, fmt.Errorf("h2load: %v: %s", err, out.String())
			}
			break loop
		case <-t.C:
			h.signal(syscall.SIGHUP)
			reloads++
		}
	}
	res, err := parseH2load(out.String())
	if err != nil {
		return nil, err
	}
	var drains []time.Duration
	for _, r := range h.since(m) {
		if r.msg() == "drained" {
			drains = append(drains, time.Duration(r.int("took")))
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
	}, nil
}

// ---- the report ----

type report struct {
	started time.Time
	took    time.Duration
	plan    plan
	quick   bool
	rows    []row
}

func version(cmd string, args ...string) string {
	out, _ := exec.Command(cmd, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func (r *report) markdown(b bins, commit string) string {
	var s strings.Builder
	mode := "full"
	cmd := "./scripts/bench.sh"
	if r.quick {
		mode, cmd = "quick", "./scripts/bench.sh --quick"
	}
	fmt.Fprintf(&s, "# Benchmarks\n\n")
	fmt.Fprintf(&s, "Written by `%s` (%s run, %v). Every figure below comes from that run; to reproduce, run the same command.\n\n", cmd, mode, r.took.Round(time.Second))
	fmt.Fprintf(&s, "- Date: %s\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&s, "- Machine: %s\n", machine())
	if commit != "" {
		fmt.Fprintf(&s, "- Commit: %s\n", commit)
	}
	fmt.Fprintf(&s, "- %s; %s; %s\n", runtime.Version(), version(b.wrk, "-v"), version(b.h2load, "--version"))
	fmt.Fprintf(&s, "- Traffic: 127.0.0.1 only; load generators and servers share the machine.\n\n")
	if head := headline(); head != "" {
		fmt.Fprintf(&s, "**Headline:** %s\n\n", head)
	}
	fmt.Fprintf(&s, "| # | scenario | clients and setup | requests | failed: by class | req/s | p50 | p99 | other figures |\n")
	fmt.Fprintf(&s, "|---|---|---|--:|---|--:|--:|--:|---|\n")
	esc := func(x string) string { return strings.ReplaceAll(x, "|", "\\|") }
	for _, rw := range r.rows {
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", esc(rw.num), esc(rw.scenario), esc(rw.setup), esc(rw.requests),
			esc(rw.failures), esc(rw.rps), esc(rw.p50), esc(rw.p99), esc(rw.other))
	}
	s.WriteString(methods)
	return s.String()
}

func headline() string {
	summary.mu.Lock()
	defer summary.mu.Unlock()
	h, ok1 := summary.total["hitless"]
	n, ok2 := summary.total["naive stop-then-start (no hitless)"]
	l, ok3 := summary.total["hitless, lame duck off"]
	if !ok1 || !ok2 || !ok3 {
		return ""
	}
	pct := func(x [2]int) string {
		if x[0] == 0 {
			return "0"
		}
		return strconv.FormatFloat(math.Round(1e4*float64(x[1])/float64(x[0]))/100, 'f', -1, 64) + "%"
	}
	return fmt.Sprintf("a reload every 1.5 s under POST load (keep-alive and connection-per-request clients, fast and 50 ms handlers): "+
		"**%d failed of %d requests under hitless**; %d of %d (%s) with the lame duck switched off; %d of %d (%s) with a naive stop-then-start restart.",
		h[1], h[0], l[1], l[0], pct(l), n[1], n[0], pct(n))
}

const methods = `
## How each figure is measured

The test server is ` + "`internal/e2e/testserver`" + ` (Go, net/http, ` + "`childproc`" + `), the same binary in
every row; "fast" is ` + "`POST /work`" + `, "50 ms" is ` + "`POST /work?ms=50`" + `. The driver is
` + "`internal/bench`" + `; its clients send POSTs, which no HTTP client retries on its own, so
every failure the server side causes is counted. A failure is filed under the first class
that matches: **refused** (connect got ECONNREFUSED), **reset** (ECONNRESET or EPIPE),
**EOF** (the connection closed before a whole response), **timeout** (10 s), **non-2xx**.
Latency percentiles are over successful requests.

1. The test server binds 127.0.0.1 itself (` + "`-addr`" + `); wrk (1 thread) sends POST /work.
2. The same under ` + "`hitless run`" + `, runs alternating with (1) in the same process of the
   bench, so that drift of the machine hits both alike; ratios are (2)/(1) of the medians.
3. ` + "`hitless run`" + ` with default settings; four client kinds at once for the whole run
   while the driver sends SIGHUP at a fixed interval without waiting for the reloads.
4. The same with the child's lame-duck window off (` + "`-lame-duck=-1`" + `: the drain goes from
   closing its listener straight to ` + "`http.Server.Shutdown`" + `), and without hitless: SIGTERM
   to the server, wait for it to exit, start it again, wait until it serves.
5. For each reload: the driver's clock at SIGHUP to the moment it reads hitless's "serving"
   record, minus the new child's own start-up (its main() entered → about to send READY=1,
   both taken by the child, ` + "`-timing-file`" + `). What is left is fork, hitless's shim
   re-exec, the exec of the child binary and Go runtime start, READY delivery, and logging.
   For scale, the bench also starts the same child itself (fork+exec with the socket and a
   notify socket of its own) and times start → READY=1: what any supervisor pays.
6. hitless's VmRSS, utime+stime (10 ms ticks) and /proc/PID/fd count, read from /proc.
7. SIGKILL to the serving child's pid while clients run; time from the kill to hitless's next
   "serving" record. Connections made meanwhile wait in the socket's backlog (hitless holds it).
8. Raw HTTP/1.1 connections, one goroutine each; between requests each waits on a read, so a
   connection that a draining generation closes is seen and reopened with a request. The
   script raises the open-files limit (` + "`ulimit -n`" + `) for itself and what it starts.
9. h2load (nghttp2) with prior-knowledge h2c; h2load does not retry a stream that a GOAWAY
   refused, so refused streams show as "errored".
`
