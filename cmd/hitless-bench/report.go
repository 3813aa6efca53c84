package main

import (
	"fmt"
	"math"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

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

func median(d []time.Duration) time.Duration { return harness.Percentile(d, 50) }

func maxOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

// failureText renders failures as "refused 0 · reset 2 · …": every class,
// so that a zero is a measured zero, but "other" only when there are some.
// Any 2xx is a success here, so a bad status is a non-2xx.
func failureText(t *harness.Tally) string {
	var parts []string
	for _, c := range harness.Classes {
		n := t.Count(c)
		if c == harness.Other && n == 0 {
			continue
		}
		label := string(c)
		if c == harness.BadStatus {
			label = "non-2xx"
		}
		parts = append(parts, label+" "+strconv.Itoa(n))
	}
	return strings.Join(parts, " · ")
}

type report struct {
	started time.Time
	took    time.Duration
	quick   bool
	rows    []row
}

func version(cmd string, args ...string) string {
	out, _ := exec.Command(cmd, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func (r *report) markdown(b *bench, commit string) string {
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
	if head := b.headline(); head != "" {
		fmt.Fprintf(&s, "**Headline:** %s\n\n", head)
	}
	for _, h := range b.headlines {
		fmt.Fprintf(&s, "%s\n\n", h)
	}
	for _, x := range b.summaries {
		fmt.Fprintf(&s, "%s\n", x)
	}
	fmt.Fprintf(&s, "| # | scenario | clients and setup | requests | failed: by class | req/s | p50 | p99 | other figures |\n")
	fmt.Fprintf(&s, "|---|---|---|--:|---|--:|--:|--:|---|\n")
	esc := func(x string) string { return strings.ReplaceAll(x, "|", "\\|") }
	for _, rw := range r.rows {
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", esc(rw.num), esc(rw.scenario), esc(rw.setup), esc(rw.requests),
			esc(rw.failures), esc(rw.rps), esc(rw.p50), esc(rw.p99), esc(rw.other))
	}
	s.WriteString(methods + methodsGRPC + methodsWS)
	for _, x := range b.appendix {
		s.WriteString(x)
	}
	return s.String()
}

// headline sums up scenarios 3 and 4; "" if they did not run.
func (b *bench) headline() string {
	h, ok1 := b.totals["hitless"]
	n, ok2 := b.totals["naive stop-then-start (no hitless)"]
	l, ok3 := b.totals["hitless, lame duck off"]
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
` + "`cmd/hitless-bench`" + ` (load and failure classes: ` + "`internal/harness`" + `); its clients send POSTs,
which no HTTP client retries on its own, so every failure the server side causes is counted.
A failure is filed under the first class that matches: **refused** (connect got
ECONNREFUSED), **reset** (ECONNRESET or EPIPE), **EOF** (the connection closed before a
whole response), **timeout** (10 s), **non-2xx**. Latency percentiles are over successful
requests.

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
   both taken by the child, ` + "`-timing-file`" + `). Just before each reload the bench starts the
   same child itself, as a bare supervisor would (fork+exec with the socket and a notify
   socket of its own), and times start → READY=1: what any supervisor pays. hitless runs
   with ` + "`--log-level debug`" + `, and its ` + "`reload steps`" + ` record times each step (CLOCK_MONOTONIC):
   ` + "`request_to_fork`" + ` (the signal read → fork), ` + "`fork`" + ` (until the shim's execve is done),
   ` + "`shim_start`" + ` (the shim's runtime, until its init runs), ` + "`shim`" + ` (until the child's execve
   is done, seen on a close-on-exec pipe), ` + "`child_start`" + ` (until READY=1 is read),
   ` + "`ready_to_serving`" + ` and ` + "`serving_to_signal`" + ` (the old generation signalled).
6. hitless's and its watcher's PSS (smaps_rollup: pages shared between them, such as their
   binary's, counted once in the sum) and anonymous memory (RssAnon), VmRSS, hitless's
   utime+stime (10 ms ticks) and /proc/PID/fd count, read from /proc 2 s after start, after
   10 reloads and after the last.
7. SIGKILL to the serving child's pid while clients run; time from the kill to hitless's next
   "serving" record. Connections made meanwhile wait in the socket's backlog (hitless holds it).
8. Raw HTTP/1.1 connections, one goroutine each; between requests each waits on a read, so a
   connection that a draining generation closes is seen and reopened with a request. The
   script raises the open-files limit (` + "`ulimit -n`" + `) for itself and what it starts. hitless's and
   its watcher's PSS are read every 250 ms.
9. h2load (nghttp2) with prior-knowledge h2c; h2load does not retry a stream that a GOAWAY
   refused, so refused streams show as "errored".
10. The test server's ` + "`-mode-file`" + ` switches to ` + "`crash:1s`" + ` (READY=1, then exit 4 a second
   later) for every start after the one SIGHUP, as a bad build would. Without a trial, the old
   generation drains once the new one is ready, and each restart runs the bad release again
   (backoff from 100 ms, doubling). With ` + "`--trial`" + `, the old generation is not signalled until
   the trial passes; the crash rolls the reload back. The failures that remain are the requests
   on connections the crashing child had accepted.
11. The load of (3) for each of two servers, upgraded the same number of times at a fixed
   interval, a new copy of the binary renamed over the one the server was started from before
   each upgrade. hitless: ` + "`hitless upgrade`" + `, timed from its start to its verdict (its exit); after
   each, ` + "`hitless status`" + ` and /proc tell whether hitless's pid and the serving child's pid are
   unchanged and /proc/PID/exe is the new file. tableflip: ` + "`cmd/hitless-bench/tableflipserver`" + `,
   the pattern of cloudflare/tableflip's README and ` + "`http_example_test.go`" + ` (` + "`upg.Listen`" + `, ` + "`upg.Ready`" + `,
   ` + "`<-upg.Exit()`" + `, then ` + "`http.Server.Shutdown`" + `; SIGHUP calls ` + "`upg.Upgrade()`" + `) with a POST /work
   like the test server's; each upgrade is timed from SIGHUP until the pid file names a new
   process and a request on a new connection is answered by it, and until the old process has
   exited. Each new process is a child of the old one and outlives it: the bench is a subreaper
   meanwhile, and reaps every one.
`
