//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// ---- 13: deploys compared: hitless beside nginx, HAProxy and Caddy ----

// deploysNum is the number of this scenario in the table.
const deploysNum = "13"

// A deploySetup is one way to put a new version of a server in place
// under load: hitless's reload, or the blue/green switch that people
// build instead with a reverse proxy in front of two backends. Every
// setup serves the same test server to the same clients, and deploys
// at the same pace.
type deploySetup struct {
	key   string // short, for the logs and the summary
	name  string // the row's scenario
	peer  string // the proxy it needs ("nginx", "haproxy", "caddy"), or ""
	start func(s *scenario, dir string) *deployTarget
	// showConf: the report shows the proxy's config as written (one
	// of each kind; a variant says how it differs).
	showConf bool
}

// deployTarget is a setup running.
type deployTarget struct {
	addr  string // where the clients send their requests
	first int    // the pid of the backend that serves before any deploy
	conf  string // the proxy's config file, if any
	proxy int    // the proxy's pid, and process group, if any
	// deploy puts a new backend in place and returns once a request on
	// a new connection to addr is answered by it, with its pid.
	deploy func() (int, error)
	// gone waits until every backend replaced so far has exited, and
	// returns, for each deploy, the time from its start to that exit.
	gone func() []time.Duration
	// note is what else the setup tells of its deploys.
	note func() string
	// stop stops everything the setup started.
	stop func()
}

func deploySetups() []deploySetup {
	setups := []deploySetup{
		{key: "hitless", name: "hitless: SIGHUP", start: func(s *scenario, _ string) *deployTarget { return hitlessTarget(s, "") }},
		{key: "hitless behind nginx", name: "hitless behind nginx (nginx never reloaded): SIGHUP to hitless", peer: "nginx",
			start: hitlessTarget},
	}
	for _, ps := range proxySetups() {
		setups = append(setups, deploySetup{key: ps.key, name: ps.name, peer: ps.peer, showConf: !ps.variant,
			start: func(s *scenario, dir string) *deployTarget { return ps.blueGreen(s, dir) }})
	}
	return setups
}

// proxySetup is a proxy in front of blue/green backends, set up and
// switched the way its documentation recommends (peerSources).
type proxySetup struct {
	key, peer, name string
	switchName      string // what a switch runs, for the report
	variant         bool   // another setup's config with one option more
	start           func(s *scenario, dir, front string, slots [2]string) (switcher, error)
}

func proxySetups() []proxySetup {
	haproxy := func(runtime, idleCloseOnResponse bool) func(s *scenario, dir, front string, slots [2]string) (switcher, error) {
		return func(s *scenario, dir, front string, slots [2]string) (switcher, error) {
			return startHAProxy(s.haproxy, dir, front, slots, runtime, idleCloseOnResponse)
		}
	}
	return []proxySetup{
		{"nginx", "nginx", "nginx, blue/green: `nginx -s reload`", "`nginx -s reload`", false,
			func(s *scenario, dir, front string, slots [2]string) (switcher, error) {
				return startNginx(s.nginx, dir, front, slots[0])
			}},
		{"HAProxy reload", "haproxy", "HAProxy, blue/green: seamless reload (master-worker, SIGUSR2)", "SIGUSR2", false, haproxy(false, false)},
		{"HAProxy reload, idle-close-on-response", "haproxy", "HAProxy, the same with `option idle-close-on-response`", "SIGUSR2", true, haproxy(false, true)},
		{"HAProxy runtime API", "haproxy", "HAProxy, blue/green: runtime API (`set server` ready, then drain), no reload", "the two `set server` commands",
			false, haproxy(true, false)},
		{"Caddy", "caddy", "Caddy, blue/green: `caddy reload` (config load)", "`caddy reload`", false,
			func(s *scenario, dir, front string, slots [2]string) (switcher, error) {
				return startCaddy(s.caddy, dir, front, slots[0])
			}},
	}
}

// blueGreen starts the setup, its files in dir.
func (ps proxySetup) blueGreen(s *scenario, dir string) *deployTarget {
	return blueGreenTarget(s, func(front string, slots [2]string) (switcher, error) { return ps.start(s, dir, front, slots) }, ps.switchName)
}

// deployClients are 32 POST clients: fast requests on keep-alive
// connections and on a connection each, 50 ms requests on keep-alive
// connections (in flight when a deploy comes), and keep-alive clients
// paced at 20 requests a second each, whose connections sit idle
// between requests as most real clients' do (a server that closes an
// idle connection races their next request).
func deployClients() []client {
	return []client{
		{name: "keep-alive, fast", keepAlive: true, workers: 8},
		{name: "keep-alive, 50 ms", keepAlive: true, delay: 50 * time.Millisecond, workers: 8},
		{name: "keep-alive, paced: 20/s each, idle between", keepAlive: true, workers: 8, rate: 160},
		{name: "per-request, fast", keepAlive: false, workers: 8},
	}
}

// peerBin is the binary of a peer, "" if it is not installed.
func (b *bench) peerBin(peer string) string {
	switch peer {
	case "nginx":
		return b.nginx
	case "haproxy":
		return b.haproxy
	case "caddy":
		return b.caddy
	}
	return ""
}

// deploySummary is one setup's line of the comparison table.
type deploySummary struct {
	key, skipped                 string
	deploys, changes             int
	requests, failed             int64
	classes                      string
	p50q, p99q, p50d, p99d       time.Duration // keep-alive fast clients: quiet, and with deploys
	stepMedian, stepMax, goneMed time.Duration
}

func benchDeploys(s *scenario) []row {
	var rows []row
	var sums []deploySummary
	for _, st := range deploySetups() {
		if s.plan.deployOnly != nil && !slices.Contains(s.plan.deployOnly, st.key) {
			continue
		}
		if st.peer != "" && s.peerBin(st.peer) == "" {
			why := fmt.Sprintf("skipped: %s is not installed (scripts/bench.sh installs Debian's package; hitless-bench takes it with -%s)", st.peer, st.peer)
			logf("  %s: %s", st.key, why)
			rows = append(rows, row{num: deploysNum, scenario: st.name, setup: why})
			sums = append(sums, deploySummary{key: st.key, skipped: why})
			continue
		}
		t := time.Now()
		r, sum := deployRun(s, st)
		logf("  %s: %d deploys, %d of %d requests failed (%v)", st.key, sum.deploys, sum.failed, sum.requests, time.Since(t).Round(time.Second))
		rows = append(rows, r...)
		sums = append(sums, sum)
	}
	s.headlines = append(s.headlines, "**Deploys compared:** "+deploysHeadline(s.plan, sums))
	s.summaries = append(s.summaries, deploysSummary(s, sums))
	s.appendix = append(s.appendix, deploysMethods(s))
	return rows
}

// deployRun runs one setup: the clients for a quiet while, then a
// deploy at every interval while they run, then one more interval.
func deployRun(s *scenario, st deploySetup) ([]row, deploySummary) {
	p := s.plan
	dir := filepath.Join(s.tmp, "deploys-"+dirName(st.key))
	s.check(os.MkdirAll(dir, 0o755))
	tg := st.start(s, dir)
	defer tg.stop()
	if st.showConf {
		s.captureConfig(st.key, tg.conf, dir)
	}
	seen := &pidsSeen{}
	clients := deployClients()
	for i := range clients {
		clients[i].onBody = seen.add
	}
	// Stopped an interval after the last deploy; the bound allows for
	// deploys as slow as their own deadlines.
	bound := p.deployQuiet + time.Duration(p.deployN+1)*p.deployEvery + time.Duration(p.deployN)*time.Minute
	loads := startLoads(clients, tg.addr, bound)
	s.Cleanup(func() { endLoads(loads, (*harness.Load).Stop) }) // at once, if a deploy fails
	time.Sleep(p.deployQuiet)                                   // paces the run: the clients alone
	var quiet []*harness.Tally
	for _, l := range loads {
		quiet = append(quiet, l.Tally())
		l.NextPhase()
	}
	start := time.Now()
	var steps []time.Duration
	deployed := []int{tg.first}
	for i := range p.deployN {
		time.Sleep(time.Until(start.Add(time.Duration(i) * p.deployEvery)))
		t0 := time.Now()
		pid, err := tg.deploy()
		s.check(err)
		steps = append(steps, time.Since(t0))
		deployed = append(deployed, pid)
	}
	time.Sleep(time.Until(start.Add(time.Duration(p.deployN) * p.deployEvery)))
	tallies := endLoads(loads, (*harness.Load).Stop)
	elapsed := time.Since(start)
	gone := tg.gone()
	note := tg.note()

	sum := deploySummary{key: st.key, deploys: len(steps), stepMedian: median(steps), stepMax: maxOf(steps), goneMed: median(gone)}
	classes := map[harness.Class]int{}
	for _, t := range tallies {
		sum.requests += t.Sent()
		sum.failed += t.Failed()
		for c, n := range t.Failures() {
			classes[c] += n
		}
	}
	sum.classes = classesText(classes)
	sum.p50q, sum.p99q = quiet[0].Latency(50), quiet[0].Latency(99)
	sum.p50d, sum.p99d = tallies[0].Latency(50), tallies[0].Latency(99)
	order := seen.pids()
	sum.changes = len(order) - 1
	proof := fmt.Sprintf("the backend's pid changed %d times in the clients' answers, in the order deployed", sum.changes)
	if !slices.Equal(order, deployed) {
		proof = fmt.Sprintf("**the clients' answers came from pids %v, the deploys started %v**", order, deployed)
		logf("  %s: %s", st.key, proof)
	}
	other := fmt.Sprintf("%d deploys, one every %v: %s; failed per deploy **%s** (%d of %d requests); "+
		"deploy step (until a new connection is answered by the new backend) median %s, max %s; "+
		"the replaced backend exited median %s after its deploy began; %s",
		len(steps), p.deployEvery, proof, perDeploy(sum.failed, len(steps)), sum.failed, sum.requests,
		ms(sum.stepMedian), ms(sum.stepMax), ms(sum.goneMed), note)
	var rows []row
	for i, c := range clients {
		t, q := tallies[i], quiet[i]
		failures := failureText(t)
		if q.Failed() > 0 {
			failures += fmt.Sprintf(" (and before the deploys: %d of %d)", q.Failed(), q.Sent())
		}
		rw := row{setup: fmt.Sprintf("%s (%d clients)", c.name, c.workers),
			requests: strconv.FormatInt(t.Sent(), 10), failures: failures,
			rps: fmt.Sprintf("%.0f", float64(t.OK())/elapsed.Seconds()),
			p50: fmt.Sprintf("%s (%s)", ms(t.Latency(50)), ms(q.Latency(50))),
			p99: fmt.Sprintf("%s (%s)", ms(t.Latency(99)), ms(q.Latency(99)))}
		if i == 0 {
			rw.num, rw.scenario, rw.other = deploysNum, st.name, other
		}
		rows = append(rows, rw)
	}
	logTotals(st.key, clients, tallies)
	return rows, sum
}

// dirName is key as a file name: no spaces, no commas (HAProxy's
// addresses cannot hold one).
func dirName(key string) string { return strings.NewReplacer(" ", "-", ",", "", "/", "-").Replace(key) }

// perDeploy is failed/deploys with two decimals, or "0" for none.
func perDeploy(failed int64, deploys int) string {
	switch {
	case deploys == 0:
		return "–"
	case failed == 0:
		return "0"
	}
	return fmt.Sprintf("%.2f", float64(failed)/float64(deploys))
}

// classesText is "reset 12 · EOF 3" for the classes that failed, or "–".
func classesText(c map[harness.Class]int) string {
	var parts []string
	for _, k := range harness.Classes {
		if n := c[k]; n > 0 {
			label := string(k)
			if k == harness.BadStatus {
				label = "non-2xx"
			}
			parts = append(parts, fmt.Sprintf("%s %d", label, n))
		}
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, " · ")
}

// ---- the setups ----

// hitlessTarget is hitless around the test server; with nginxDir, nginx
// in front of it, never reloaded. A deploy is SIGHUP to hitless.
func hitlessTarget(s *scenario, nginxDir string) *deployTarget {
	h := s.startHitless(nil)
	tg := &deployTarget{addr: h.Addr(), stop: h.Stop}
	if nginxDir != "" {
		front, err := harness.FreeAddr()
		s.check(err)
		n, err := startNginx(s.nginx, nginxDir, front, h.Addr())
		s.check(err)
		s.Cleanup(n.stop)
		tg.addr, tg.conf = front, n.conf
		tg.stop = func() { n.stop(); h.Stop() }
	}
	g, ok := h.Status().Serving()
	if !ok {
		s.Fatalf("hitless: no generation serves")
	}
	first, err := waitAnswer(tg.addr, 0, g.PID, 10*time.Second)
	s.check(err)
	tg.first = first
	m := h.Mark()
	var began []time.Time
	prev := first
	tg.deploy = func() (int, error) {
		began = append(began, time.Now())
		h.Signal(syscall.SIGHUP)
		pid, err := waitAnswer(tg.addr, prev, 0, 30*time.Second)
		prev = pid
		return pid, err
	}
	// Deploy i (from 1) replaced generation i: the time its "drained"
	// record came, from the deploy's start.
	tg.gone = func() []time.Duration {
		n := len(began)
		if n == 0 {
			return nil
		}
		h.WaitSince(m, 60*time.Second, harness.IsGen("drained", n))
		out := make([]time.Duration, n)
		for _, r := range h.Records(m) {
			if g := r.Int("generation"); r.Msg() == "drained" && g >= 1 && g <= n {
				out[g-1] = r.At.Sub(began[g-1])
			}
		}
		return out
	}
	tg.note = func() string {
		st := h.Status()
		return fmt.Sprintf("hitless's status: %d reloads served, %d failed", st.ReloadsOK, st.ReloadsFailed)
	}
	return tg
}

// switcher is a proxy in front of the backends.
type switcher interface {
	// switchTo sends new requests to the backend at addr, which is in
	// slot when the proxy has fixed slots; the release it returns waits
	// until the old backend gets no more.
	switchTo(slot int, addr string) (release, error)
	// fixedSlots is true when the proxy knows its two backends' addresses
	// in advance (blue and green), false when a switch may name any.
	fixedSlots() bool
	confPath() string
	pid() int
	stop()
}

// blueGreenTarget is the test server behind the proxy that start starts
// (pointed at slots[0]). A deploy starts the new backend on a loopback
// address of its own (the other slot, once the backend it held has
// exited, for a proxy with fixed slots), switches the proxy to it, and
// waits until a new connection is answered by it. The old backend is
// stopped as an operator would: once the proxy sends it nothing more
// (the proxy's old workers have exited, or its server has no session
// left), SIGTERM, and it drains with childproc's defaults, as it would
// under hitless.
func blueGreenTarget(s *scenario, start func(front string, slots [2]string) (switcher, error), switchName string) *deployTarget {
	var slots [2]string
	for i := range slots {
		for {
			a, err := quietAddr()
			s.check(err)
			if i == 0 || a != slots[0] {
				slots[i] = a
				break
			}
		}
	}
	front, err := harness.FreeAddr()
	s.check(err)
	live := s.startDirect(slots[0])
	all := []*direct{live}
	var held [2]*direct // with fixed slots: the backend each slot holds
	held[0] = live
	slot := 0
	px, err := start(front, slots)
	s.check(err)
	s.Cleanup(px.stop)
	first, err := waitAnswer(front, 0, live.pid(), 10*time.Second)
	s.check(err)
	// Each replaced backend is stopped by a goroutine of its own, which
	// waits for the proxy's release; gone waits for them all.
	type replaced struct {
		began    time.Time
		old      *direct
		released time.Time
		err      error
		done     chan struct{} // closed once released and told to stop, or failed
	}
	var done []*replaced
	var waits, ups, switches, answers []time.Duration
	tg := &deployTarget{addr: front, first: first, conf: px.confPath(), proxy: px.pid()}
	tg.deploy = func() (int, error) {
		t0 := time.Now()
		var addr string
		if px.fixedSlots() {
			slot = 1 - slot
			addr = slots[slot]
			if d := held[slot]; d != nil {
				t := time.NewTimer(60 * time.Second)
				defer t.Stop()
				select {
				case <-d.exited:
				case <-t.C:
					return 0, fmt.Errorf("the backend replaced a deploy ago (pid %d, %s) still runs after 60s", d.pid(), d.addr)
				}
			}
		} else {
			for addr == "" || addr == live.addr {
				a, err := quietAddr()
				if err != nil {
					return 0, err
				}
				addr = a
			}
		}
		t01 := time.Now()
		d := &direct{server: s.server, addr: addr}
		if err := d.start(); err != nil {
			return 0, fmt.Errorf("backend on %s: %w", addr, err)
		}
		s.Cleanup(d.stop)
		all, held[slot] = append(all, d), d
		t1 := time.Now()
		rel, err := px.switchTo(slot, addr)
		if err != nil {
			return 0, err
		}
		t2 := time.Now()
		pid, err := waitAnswer(front, 0, d.pid(), 10*time.Second)
		if err != nil {
			return 0, err
		}
		waits, ups = append(waits, t01.Sub(t0)), append(ups, t1.Sub(t01))
		switches, answers = append(switches, t2.Sub(t1)), append(answers, time.Since(t2))
		r := &replaced{began: t0, old: live, done: make(chan struct{})}
		done = append(done, r)
		go func() { // owned by tg: ends within the release's deadline
			defer close(r.done)
			if r.err = rel(50 * time.Second); r.err == nil {
				r.released = time.Now()
				r.old.term()
			}
		}()
		live = d
		return pid, nil
	}
	tg.gone = func() []time.Duration {
		var out []time.Duration
		for _, r := range done {
			<-r.done
			if r.err != nil {
				s.Fatalf("%v", r.err)
			}
			t := time.NewTimer(30 * time.Second)
			select {
			case <-r.old.exited:
				out = append(out, r.old.exitedAt.Sub(r.began))
			case <-t.C:
				s.Fatalf("backend pid %d still runs 30s after SIGTERM", r.old.pid())
			}
			t.Stop()
		}
		return out
	}
	tg.note = func() string {
		var rel []time.Duration
		for _, r := range done {
			<-r.done
			rel = append(rel, r.released.Sub(r.began))
		}
		parts := fmt.Sprintf("the new backend started and serving %s, %s %s, then until a new connection was answered by it %s",
			ms(median(ups)), switchName, ms(median(switches)), ms(median(answers)))
		if px.fixedSlots() {
			parts = fmt.Sprintf("its slot free %s (max %s), ", ms(median(waits)), ms(maxOf(waits))) + parts
		}
		note := fmt.Sprintf("the step's parts (medians): %s; the proxy released the old backend (SIGTERM sent) median %s after the deploy began",
			parts, ms(median(rel)))
		if h, ok := px.(*haproxy); ok && h.resent > 0 {
			note += fmt.Sprintf("; SIGUSR2 sent again %d times, the master having dropped it", h.resent)
		}
		return note
	}
	tg.stop = func() {
		for _, r := range done {
			<-r.done
		}
		px.stop()
		for _, d := range all {
			d.stop()
		}
	}
	return tg
}

func (n *nginx) confPath() string   { return n.conf }
func (h *haproxy) confPath() string { return h.conf }
func (c *caddy) confPath() string   { return c.conf }

func (n *nginx) fixedSlots() bool   { return false }
func (h *haproxy) fixedSlots() bool { return h.runtime }
func (c *caddy) fixedSlots() bool   { return false }

// captureConfig keeps the config file at path, as written for this run,
// for the report (the first one under each label), its directory dir
// written as <dir>.
func (s *scenario) captureConfig(label, path, dir string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	b = []byte(strings.ReplaceAll(string(b), dir, "<dir>"))
	for _, c := range s.configs {
		if c.label == label {
			return
		}
	}
	s.configs = append(s.configs, config{label: label, name: filepath.Base(path), text: string(b)})
}

// ---- the report ----

// deploysSummary is the comparison table, one line per setup, with the
// versions of the peers.
func deploysSummary(s *scenario, sums []deploySummary) string {
	p := s.plan
	var b strings.Builder
	fmt.Fprintf(&b, "### Deploys compared (row %s)\n\n", deploysNum)
	var kinds []string
	for _, c := range deployClients() {
		kinds = append(kinds, fmt.Sprintf("%d %s", c.workers, c.name))
	}
	fmt.Fprintf(&b, "The same test server behind each setup, the same %d POST clients (%s), %v of load, then a deploy every %v, %d in all. "+
		"Failures are counted from the first deploy to one interval after the last; p50 and p99 are the keep-alive fast clients', "+
		"before the first deploy → during the deploys. How each setup is made and why: under the table's methods.\n\n",
		clientCount(deployClients()), strings.Join(kinds, "; "), p.deployQuiet, p.deployEvery, p.deployN)
	fmt.Fprintf(&b, "Versions: %s; %s; %s.\n\n", peerVersion("nginx", s.nginx), peerVersion("haproxy", s.haproxy), peerVersion("caddy", s.caddy))
	b.WriteString("| setup | deploys (pid changes the clients saw) | requests | failed | failed per deploy | by class | p50 | p99 | deploy step: median (max) | old backend gone after (median) |\n")
	b.WriteString("|---|--:|--:|--:|--:|---|--:|--:|--:|--:|\n")
	for _, x := range sums {
		if x.skipped != "" {
			fmt.Fprintf(&b, "| %s | %s | | | | | | | | |\n", x.key, x.skipped)
			continue
		}
		fmt.Fprintf(&b, "| %s | %d (%d) | %d | %d | **%s** | %s | %s → %s | %s → %s | %s (%s) | %s |\n",
			x.key, x.deploys, x.changes, x.requests, x.failed, perDeploy(x.failed, x.deploys), x.classes,
			ms(x.p50q), ms(x.p50d), ms(x.p99q), ms(x.p99d), ms(x.stepMedian), ms(x.stepMax), ms(x.goneMed))
	}
	return b.String()
}

func clientCount(cs []client) int {
	n := 0
	for _, c := range cs {
		n += c.workers
	}
	return n
}

// deploysHeadline is the one line of the comparison, "" if it did not
// run.
func deploysHeadline(p plan, sums []deploySummary) string {
	if len(sums) == 0 {
		return ""
	}
	var parts []string
	for _, x := range sums {
		if x.skipped != "" {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s", x.key, perDeploy(x.failed, x.deploys)))
	}
	return fmt.Sprintf("a deploy every %v under %d POST clients, failed requests per deploy: %s (row %s).",
		p.deployEvery, clientCount(deployClients()), strings.Join(parts, "; "), deploysNum)
}

// deploysMethods says how row 13 is measured, how each peer is set up and
// why, and shows the configs as this run wrote them.
func deploysMethods(s *scenario) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### How row %s is measured, and how each peer is set up\n\n", deploysNum)
	fmt.Fprintf(&b, "Each setup in turn, alone on the machine: the test server (the same binary as every row; under `hitless run` "+
		"for hitless, bound by itself with `-addr` for the blue/green backends), the same clients (`internal/harness`; each "+
		"reads the pid that the test server names in every answer), %v of load without deploys, then a deploy every %v, "+
		"%d in all, then one interval more. A deploy is one step that the bench times, from its start until a request on a "+
		"new connection is answered by the new backend. hitless: SIGHUP. Blue/green: start the new backend on a loopback "+
		"port of its own (for HAProxy's runtime API, the other of the two servers it declares, once the backend that held it "+
		"has exited), then switch the proxy to it. The old backend is then stopped as a careful operator would: once the "+
		"proxy sends it nothing more (nginx's or HAProxy's old workers have exited; the drained server has no session "+
		"left; Caddy's reload returns once the old config is stopped), SIGTERM, and it drains with childproc's defaults, "+
		"as a child of hitless does. Stopped sooner, it refuses the old workers' last requests (502s): not measured here. "+
		"The proof that each deploy happened: the clients' answers name as many new pids, in the order the deploys started "+
		"them. In brackets after p50 and p99: the same clients before the first deploy. The peers come from Debian's "+
		"packages; each runs in the foreground, in a process group of its own, with a config that the bench writes to a "+
		"temporary directory, on loopback ports, and is stopped by its pid.\n\n",
		s.plan.deployQuiet, s.plan.deployEvery, s.plan.deployN)
	fmt.Fprintf(&b, "Row 8 beside the proxies: the same 10,000 connections and event streams through nginx and HAProxy, "+
		"set up as here; each reload is one blue/green deploy of this row. A connection that a proxy's old worker closes while "+
		"it is idle is seen at once and reopened at the client's next request, as with hitless; a request that meets the close "+
		"fails (the idle keep-alive race).\n\n")
	b.WriteString("| peer | set up as | source |\n|---|---|---|\n")
	for _, x := range peerSources {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", x.peer, strings.ReplaceAll(x.choice, "|", "\\|"), x.source)
	}
	for _, c := range s.configs {
		fmt.Fprintf(&b, "\n<details><summary>%s of the setup \"%s\", as this run wrote it (ports chosen per run)</summary>\n\n```\n%s```\n</details>\n", c.name, c.label, c.text)
	}
	return b.String()
}
