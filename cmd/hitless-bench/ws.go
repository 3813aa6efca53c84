package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hitless/hitless/internal/harness"
)

// ---- 14: WebSocket connections handed over across reloads ----

// wsResult is what examples/wsecho/cmd/wsload prints (its load.Result):
// the JSON crosses a process boundary, since the main module does not
// depend on a WebSocket library.
type wsResult struct {
	Clients     int              `json:"clients"`
	Connected   int              `json:"connected"`
	Sent        int64            `json:"sent"`
	Echoed      int64            `json:"echoed"`
	Lost        int64            `json:"lost"`
	CloseFrames int64            `json:"close_frames"`
	Failed      int64            `json:"failed"`
	Failures    map[string]int64 `json:"failures"`
	P50         time.Duration    `json:"p50_ns"`
	P99         time.Duration    `json:"p99_ns"`
}

// wsClients and wsReloads size scenario 14.
const (
	wsClients = 1000
	wsReloads = 10
	wsEvery   = 200 * time.Millisecond // between a client's messages
)

// benchWS runs the WebSocket example (examples/wsecho) under hitless with
// 1,000 echo clients and reloads it 10 times: every connection is handed
// to each new generation with childproc's HandOver.
func benchWS(s *scenario) []row {
	if s.wsServer == "" || s.wsLoad == "" {
		logf("scenario 14 skipped: -ws-server and -ws-load (examples/wsecho and its cmd/wsload) not given")
		return nil
	}
	p := s.plan
	h, addr := s.startExample("ws", s.wsServer)
	m := h.Mark()
	run := time.Duration(wsReloads+2) * p.reloadEvery
	cmd := exec.Command(s.wsLoad, "-addr", addr, "-clients", fmt.Sprint(wsClients), "-every", wsEvery.String(), "-duration", (run + 30*time.Second).String(), "-signal-connected")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	errPipe, err := cmd.StderrPipe()
	s.check(err)
	s.check(cmd.Start())
	s.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// wsload says "connected" on stderr once every client has dialled.
	connected := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(errPipe)
		once := false
		for sc.Scan() {
			if !once && sc.Text() == "connected" {
				once = true
				close(connected)
				continue
			}
			stderr.WriteString(sc.Text() + "\n")
		}
	}()
	select {
	case <-connected:
	case <-time.After(2 * time.Minute):
		s.Fatalf("wsload: clients not connected within 2 minutes: %s", stderr.String())
	}
	start := time.Now()
	for range wsReloads {
		h.Reload()
		time.Sleep(p.reloadEvery)
	}
	h.WaitStatus(60*time.Second, func(st harness.Status) bool { return len(st.Generations) == 1 })
	cmd.Process.Signal(syscall.SIGINT) // end the run: the clients close cleanly
	if err := cmd.Wait(); err != nil {
		s.Fatalf("wsload: %v\n%s", err, stderr.String())
	}
	elapsed := time.Since(start)
	var r wsResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		s.Fatalf("wsload: %v: %q", err, stdout.String())
	}
	st := h.Status()
	var drains []time.Duration
	for _, rec := range h.Records(m) {
		if rec.Msg() == "drained" {
			drains = append(drains, time.Duration(rec.Int("took")))
		}
	}
	h.Stop()
	var fails []string
	for k, v := range r.Failures {
		fails = append(fails, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(fails)
	failures := fmt.Sprintf("close frames %d, messages lost %d, clients failed %d", r.CloseFrames, r.Lost, r.Failed)
	if len(fails) > 0 {
		failures += " (" + strings.Join(fails, "; ") + ")"
	}
	ho := harness.HandOver{}
	if st.HandOver != nil {
		ho = *st.HandOver
	}
	logf("WebSocket: %d sent, %d echoed, %s", r.Sent, r.Echoed, failures)
	return []row{{
		num: "14", scenario: "WebSocket echo (gobwas/ws, examples/wsecho) across reloads, connections handed over",
		setup:    fmt.Sprintf("%d of %d clients connected, a numbered message every %v each, %d reloads one every %v", r.Connected, r.Clients, wsEvery, wsReloads, p.reloadEvery),
		requests: fmt.Sprintf("%d messages", r.Sent), failures: failures,
		rps: fmt.Sprintf("%.0f msg/s", float64(r.Echoed)/elapsed.Seconds()), p50: ms(r.P50), p99: ms(r.P99),
		other: fmt.Sprintf("hitless's hand-over counts: handed %d, adopted %d, refused %d, lost %d (%d reloads × %d connections = %d); old generations drained in median %s, max %s",
			ho.Handed, ho.Adopted, ho.Refused, ho.Lost, wsReloads, r.Connected, wsReloads*r.Connected, ms(median(drains)), ms(maxOf(drains))),
	}}
}

// methodsWS says how scenario 14 is measured; it follows methods.
const methodsWS = `14. ` + "`examples/wsecho`" + ` (a WebSocket echo server on gobwas/ws, its own module) under ` + "`hitless run`" + `:
   when a generation drains, each session hands its connection to the next generation between
   two frames (` + "`childproc`" + `'s ` + "`HandOver`" + `, with the bytes it had read and not processed), and the
   next generation takes it with ` + "`Adopter.Accept`" + `. The clients are ` + "`examples/wsecho/cmd/wsload`" + `:
   each sends a numbered text message and checks that its echo comes back, in order, on the
   same connection; a close frame it did not ask for, an echo lost or out of order, or an error
   counts. 10 reloads, one every reload interval of (3); at the end each client closes with a
   close frame of its own.
`
