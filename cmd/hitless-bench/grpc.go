package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ---- 12: gRPC across reloads ----

// grpcResult is what examples/grpc/cmd/grpcload prints (its load.Result):
// the JSON crosses a process boundary, since the main module does not
// depend on grpc-go.
type grpcResult struct {
	Unary       int64             `json:"unary"`
	UnaryFailed int64             `json:"unary_failed"`
	UnaryP50    time.Duration     `json:"unary_p50_ns"`
	UnaryP99    time.Duration     `json:"unary_p99_ns"`
	Streams     int64             `json:"streams"`
	Moved       int64             `json:"streams_moved"`
	StreamsFail int64             `json:"streams_failed"`
	StreamMsgs  int64             `json:"stream_messages"`
	Watches     int64             `json:"watches"`
	WatchMoves  int64             `json:"watch_moves"`
	WatchFailed int64             `json:"watch_failed"`
	WatchMsgs   int64             `json:"watch_messages"`
	WatchGaps   int64             `json:"watch_gaps"`
	Retries     int64             `json:"transparent_retries"`
	Failures    map[string]int64  `json:"failures"`
	Examples    map[string]string `json:"examples"`
	Generations []int64           `json:"generations"`
}

// failureText is "failed N", then each gRPC code that failed with its
// count.
func (r grpcResult) failureText(failed int64) string {
	s := "failed " + strconv.FormatInt(failed, 10)
	var codes []string
	for c, n := range r.Failures {
		codes = append(codes, fmt.Sprintf("%s %d", c, n))
	}
	sort.Strings(codes)
	if len(codes) > 0 {
		s += " (" + strings.Join(codes, ", ") + ")"
	}
	return s
}

// grpcKinds are the clients of scenario 12, one grpcload process each.
var grpcKinds = []struct {
	name string
	args []string
}{
	{"unary, a long-lived channel each (4 clients)", []string{"-unary", "4"}},
	{"unary, a new channel (connection) per call (2 clients)", []string{"-fresh", "2"}},
	{"server streams of 10 messages × 20 ms, back to back (4 clients)", []string{"-streams", "4", "-stream-len", "10", "-stream-every", "20ms"}},
	{"endless server streams, resumed where the server says at each drain (2 clients)", []string{"-watches", "2"}},
}

// benchGRPC runs the gRPC example (examples/grpc) under hitless, loads it
// with grpcload (no retry policy: what the application sees), and sends
// SIGHUP at the pace of scenario 3.
func benchGRPC(s *scenario) []row {
	if s.grpcServer == "" || s.grpcLoad == "" {
		logf("scenario 12 skipped: -grpc-server and -grpc-load (examples/grpc and its cmd/grpcload) not given")
		return nil
	}
	p := s.plan
	h, addr := s.startExample("grpc", s.grpcServer)
	m := h.Mark()
	type proc struct {
		cmd    *exec.Cmd
		stdout bytes.Buffer
		stderr bytes.Buffer
	}
	var procs []*proc
	for _, k := range grpcKinds {
		pr := &proc{cmd: exec.Command(s.grpcLoad, append([]string{"-addr", addr, "-duration", p.reloadRun.String()}, k.args...)...)}
		pr.cmd.Stdout, pr.cmd.Stderr = &pr.stdout, &pr.stderr
		s.check(pr.cmd.Start())
		s.Cleanup(func() { pr.cmd.Process.Kill(); pr.cmd.Wait() })
		procs = append(procs, pr)
	}
	start := time.Now()
	reloads := s.reloadAtPace(func() error { return syscall.Kill(h.PID(), syscall.SIGHUP) })
	var results []grpcResult
	for i, pr := range procs {
		if err := pr.cmd.Wait(); err != nil {
			s.Fatalf("grpcload %s: %v\n%s", grpcKinds[i].name, err, pr.stderr.String())
		}
		var r grpcResult
		if err := json.Unmarshal(pr.stdout.Bytes(), &r); err != nil {
			s.Fatalf("grpcload %s: %v: %q", grpcKinds[i].name, err, pr.stdout.String())
		}
		results = append(results, r)
	}
	elapsed := time.Since(start)
	st := h.Status()
	var drains []time.Duration
	for _, r := range h.Records(m) {
		if r.Msg() == "drained" {
			drains = append(drains, time.Duration(r.Int("took")))
		}
	}
	h.Stop()

	var retries, total, failed int64
	gens := map[int64]bool{}
	for _, r := range results {
		retries += r.Retries
		for _, g := range r.Generations {
			gens[g] = true
		}
	}
	rps := func(n int64) string { return fmt.Sprintf("%.0f", float64(n)/elapsed.Seconds()) }
	var rows []row
	for i, r := range results {
		rw := row{setup: grpcKinds[i].name}
		var n, f int64
		switch {
		case r.Unary+r.UnaryFailed > 0:
			n, f = r.Unary+r.UnaryFailed, r.UnaryFailed
			rw.requests, rw.rps, rw.p50, rw.p99 = strconv.FormatInt(n, 10), rps(r.Unary), ms(r.UnaryP50), ms(r.UnaryP99)
			rw.failures = r.failureText(f)
		case r.Streams+r.Moved+r.StreamsFail > 0:
			n, f = r.Streams+r.Moved+r.StreamsFail, r.StreamsFail
			rw.requests = fmt.Sprintf("%d streams", n)
			rw.failures = r.failureText(f) + fmt.Sprintf("; %d complete on the stream opened, %d completed from the server's resume point", r.Streams, r.Moved)
			rw.rps = rps(r.StreamMsgs) + " msg/s"
		default:
			n, f = r.Watches, r.WatchFailed+r.WatchGaps
			rw.requests = fmt.Sprintf("%d streams", n)
			rw.failures = r.failureText(r.WatchFailed) + fmt.Sprintf("; %d numbers skipped or repeated; ended by a drain with a resume point %d times", r.WatchGaps, r.WatchMoves)
			rw.rps = rps(r.WatchMsgs) + " msg/s"
		}
		total += n
		failed += f
		if i == 0 {
			rw.num, rw.scenario = "12", "gRPC (grpc-go, examples/grpc) across reloads"
			rw.other = fmt.Sprintf("%d SIGHUPs in %v (one every %v): %d new generations served, %d failed; answers came from %d generations; "+
				"old generations drained in median %s, max %s; gRPC's own transparent retries (RPCs no server had processed): %d",
				reloads, p.reloadRun, p.reloadEvery, st.ReloadsOK, st.ReloadsFailed, len(gens), ms(median(drains)), ms(maxOf(drains)), retries)
		}
		rows = append(rows, rw)
		for c, ex := range r.Examples {
			logf("  %s: %s: %s", grpcKinds[i].name, c, ex)
		}
	}
	logf("gRPC: %d calls and streams, %d failed", total, failed)
	if !slices.ContainsFunc(results, func(r grpcResult) bool { return r.Unary > 0 }) {
		s.Fatalf("no unary call was answered")
	}
	return rows
}

// methodsGRPC says how scenario 12 is measured; it follows methods.
const methodsGRPC = `12. ` + "`examples/grpc`" + ` (grpc-go, its own module) under ` + "`hitless run`" + `: the listener, READY=1 and the
   drain through ` + "`childproc`" + ` (` + "`ServeListener`" + `, then ` + "`GracefulStop`" + ` bounded by the drain deadline); endless
   streams end with UNAVAILABLE and a resume point when the drain begins. The clients are
   ` + "`examples/grpc/cmd/grpcload`" + `, one process per kind, with no retry policy
   (` + "`grpc.WithDisableRetry`" + `): a failed call or a stream that ends any other way (a transport
   error, a number skipped) is counted, never sent again. gRPC's transparent retry, which no
   client option turns off, resends only RPCs that no server had processed; they are counted
   apart. SIGHUP at the pace of (3).
`
