// Command hitless-bench measures what hitless claims: that clients see
// nothing of a reload. It runs the test server (internal/e2e/testserver)
// directly and under hitless, on 127.0.0.1 only, drives it with wrk,
// h2load and load clients of its own (POSTs, which no client retries;
// internal/harness), and prints one markdown table in which every figure
// comes from this run. Each scenario is bounded in time; one that fails
// stops what it started, and ends the run with an error.
//
// scripts/bench.sh installs the tools, builds the binaries and runs it:
//
//	hitless-bench -hitless BIN -server BIN -tableflip BIN -wrk wrk -h2load h2load \
//		[-nginx nginx -haproxy haproxy -caddy caddy] [-quick] [-out docs/benchmarks.md]
//
// -tableflip is cmd/hitless-bench/tableflipserver, which scenario 11
// upgrades beside hitless. nginx, HAProxy and Caddy are the peers of
// scenario 13, which compares deploys under load: hitless's reload
// beside a blue/green switch behind each proxy (and scenario 8 runs
// behind nginx and HAProxy too); a peer not given is skipped, with a
// row that says so.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type bins struct {
	hitless, server, tableflip, wrk, h2load string
	grpcServer, grpcLoad                    string // scenario 12 (grpc.go)
	wsServer, wsLoad                        string // scenario 14 (ws.go)
	nginx, haproxy, caddy                   string // the peers of scenario 13; "" skips a peer's rows
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
	trialRun     time.Duration // scenario 10, per variant
	upgrades     int           // scenario 11, per variant
	upgradeEvery time.Duration
	scalePeers   bool          // scenario 8 also behind nginx and HAProxy
	deployQuiet  time.Duration // scenario 13, per setup: load without deploys first
	deployN      int           // then this many deploys
	deployEvery  time.Duration // one every
	deployOnly   []string      // the setups of scenario 13 that run (nil: all)
}

func fullPlan() plan {
	return plan{
		rounds: 5, wrkTime: 4 * time.Second,
		reloadRun: 30 * time.Second, reloadEvery: 1500 * time.Millisecond,
		latencyN: 50, costReloads: 1000, kills: 5,
		scaleConns: 10000, scaleActive: 100, scaleRun: 30 * time.Second, scaleEvery: 6 * time.Second, sseStreams: 100,
		h2Run: 20 * time.Second, h2ReloadEach: 2 * time.Second,
		trialRun: 20 * time.Second,
		upgrades: 5, upgradeEvery: 2 * time.Second,
		scalePeers:  true,
		deployQuiet: 5 * time.Second, deployN: 20, deployEvery: time.Second,
	}
}

// quickPlan is fullPlan with shorter runs and fewer repetitions, and of
// the peers only nginx, in scenario 13.
func quickPlan() plan {
	p := fullPlan()
	p.rounds, p.wrkTime = 2, 3*time.Second
	p.reloadRun = 10 * time.Second
	p.costReloads, p.kills = 200, 3
	p.scaleRun = 15 * time.Second
	p.h2Run = 10 * time.Second
	p.trialRun = 10 * time.Second
	p.upgrades = 3
	p.scalePeers = false
	p.deployQuiet, p.deployN = 2*time.Second, 5
	p.deployOnly = []string{"hitless", "nginx"}
	return p
}

// bench is one run: what every scenario needs, and the totals of the
// reload scenarios for the headline.
type bench struct {
	bins
	plan   plan
	tmp    string
	totals map[string][2]int // scenario name -> requests, failed

	// What scenarios add to the report beside their rows: lines of
	// the headline, sections before the table and after the methods,
	// and the config files of other programs as the run wrote them.
	headlines []string
	summaries []string
	appendix  []string
	configs   []config
}

// config is a config file that a scenario wrote, for the report.
type config struct{ label, name, text string }

func main() {
	var b bins
	flag.StringVar(&b.hitless, "hitless", "", "hitless binary")
	flag.StringVar(&b.server, "server", "", "test server binary (internal/e2e/testserver)")
	flag.StringVar(&b.tableflip, "tableflip", "", "tableflip server binary (cmd/hitless-bench/tableflipserver), for scenario 11")
	flag.StringVar(&b.wrk, "wrk", "wrk", "wrk binary")
	flag.StringVar(&b.h2load, "h2load", "h2load", "h2load binary")
	flag.StringVar(&b.grpcServer, "grpc-server", "", "gRPC example server (examples/grpc), for scenario 12")
	flag.StringVar(&b.grpcLoad, "grpc-load", "", "its load client (examples/grpc/cmd/grpcload), for scenario 12")
	flag.StringVar(&b.wsServer, "ws-server", "", "WebSocket example server (examples/wsecho), for scenario 14")
	flag.StringVar(&b.wsLoad, "ws-load", "", "its load client (examples/wsecho/cmd/wsload), for scenario 14")
	scaleConns := flag.Int("scale-conns", 0, "connections of scenario 8 (default 10000; fewer for a short run while developing)")
	flag.StringVar(&b.nginx, "nginx", "", "nginx binary, for the rows of scenario 13 that use it (empty: skipped, with a line that says so)")
	flag.StringVar(&b.haproxy, "haproxy", "", "haproxy binary, for scenario 13 (empty: skipped)")
	flag.StringVar(&b.caddy, "caddy", "", "caddy binary, for scenario 13 (empty: skipped)")
	quick := flag.Bool("quick", false, "shorter runs, and only nginx of the peers (about 3.5 minutes instead of 12)")
	out := flag.String("out", "", "also write the report to this file")
	only := flag.String("only", "", "comma-separated scenario numbers to run (default: all)")
	commit := flag.String("commit", "", "commit being measured, for the header")
	flag.Parse()
	if b.hitless == "" || b.server == "" {
		fmt.Fprintln(os.Stderr, "hitless-bench: -hitless and -server are required")
		os.Exit(2)
	}
	if err := run(b, *quick, *only, *commit, *out, *scaleConns); err != nil {
		fmt.Fprintln(os.Stderr, "hitless-bench:", err)
		os.Exit(1)
	}
}

func run(b bins, quick bool, only, commit, out string, scaleConns int) error {
	p := fullPlan()
	if quick {
		p = quickPlan()
	}
	if scaleConns > 0 {
		p.scaleConns = scaleConns
		p.scaleActive = min(p.scaleActive, scaleConns/10)
		p.sseStreams = min(p.sseStreams, scaleConns/100)
	}
	raiseNoFile()
	tmp, err := os.MkdirTemp("", "hitless-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bn := &bench{bins: b, plan: p, tmp: tmp, totals: map[string][2]int{}}

	want := func(n string) bool {
		return only == "" || slices.Contains(strings.Split(only, ","), n)
	}
	r := &report{started: time.Now(), quick: quick}
	steps := []struct {
		nums string
		fn   func(*scenario) []row
	}{
		{"1,2", benchBaseline},
		{"3,4", benchReloads},
		{"5,6", benchCost},
		{"7", benchCrash},
		{"8", benchScale},
		{"9", benchH2C},
		{"10", benchTrial},
		{"11", benchUpgrade},
		{"12", benchGRPC},
		{deploysNum, benchDeploys},
		{"14", benchWS},
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
		logf("scenario %s ...", s.nums)
		rows, err := bn.run(s.fn)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", s.nums, err)
		}
		logf("scenario %s done in %v", s.nums, time.Since(t).Round(time.Second))
		r.rows = append(r.rows, rows...)
	}
	r.took = time.Since(r.started)
	text := r.markdown(bn, commit)
	fmt.Print(text)
	if out != "" {
		return os.WriteFile(out, []byte(text), 0o644)
	}
	return nil
}

// scenario is the run of one scenario, and the harness.TB it gives
// internal/harness: as a failed test ends its goroutine, a failed
// scenario ends its own (runtime.Goexit), and the cleanups it registered
// stop what it started.
type scenario struct {
	*bench
	err      error
	cleanups []func()
}

// run runs fn on a goroutine of its own and returns its rows, or the
// failure that ended it.
func (b *bench) run(fn func(*scenario) []row) ([]row, error) {
	s := &scenario{bench: b}
	var rows []row
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			for i := len(s.cleanups) - 1; i >= 0; i-- {
				s.cleanups[i]()
			}
		}()
		rows = fn(s)
	}()
	<-done
	return rows, s.err
}

func (s *scenario) Helper()          {}
func (s *scenario) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }
func (s *scenario) Failed() bool     { return s.err != nil }

// Fatalf records the failure and ends the scenario's goroutine.
func (s *scenario) Fatalf(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf(format, args...)
	}
	runtime.Goexit()
}

// Logf logs to stderr; of a long text (hitless's whole log when a
// scenario fails) only the end.
func (s *scenario) Logf(format string, args ...any) {
	const most = 16 << 10
	msg := fmt.Sprintf(format, args...)
	if len(msg) > most {
		msg = "…" + msg[len(msg)-most:]
	}
	logf("%s", msg)
}

// check ends the scenario if err is not nil.
func (s *scenario) check(err error) {
	if err != nil {
		s.Fatalf("%v", err)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "hitless-bench: "+format+"\n", args...)
}

// raiseNoFile lifts the soft open-files limit to the hard one, for this
// process and what it starts: 10,000 connections need more than 1024.
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
