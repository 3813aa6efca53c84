package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what the bench reads from wrk --latency.
type wrkResult struct {
	RPS      float64
	P50, P99 time.Duration
	Requests int64
	Errors   string // "Socket errors" and "Non-2xx" lines, if any
}

// runWrk runs wrk with POST /work on keep-alive connections.
func runWrk(wrk, script, addr string, conns int, d time.Duration) (wrkResult, error) {
	cmd := exec.Command(wrk, "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()))+"s",
		"--latency", "-s", script, "http://"+addr+"/work")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	return parseWrk(string(out))
}

var (
	wrkRPS  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkReqs = regexp.MustCompile(`(\d+) requests in`)
)

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output without Requests/sec:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[3]]
		d := time.Duration(v * float64(unit))
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if r.P50 == 0 || r.P99 == 0 {
		return r, fmt.Errorf("wrk output without the latency distribution:\n%s", out)
	}
	if m := wrkReqs.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	var errs []string
	for line := range strings.SplitSeq(out, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "Socket errors") || strings.HasPrefix(line, "Non-2xx") {
			errs = append(errs, line)
		}
	}
	r.Errors = strings.Join(errs, "; ")
	return r, nil
}

// writeWrkScript writes the Lua script that makes wrk send POST /work.
func writeWrkScript(dir string) (string, error) {
	p := dir + "/post.lua"
	return p, os.WriteFile(p, []byte("wrk.method = \"POST\"\nwrk.body = \"payload\"\nwrk.headers[\"Content-Type\"] = \"text/plain\"\n"), 0o644)
}

// h2loadResult is what the bench reads from h2load.
type h2loadResult struct {
	Total, Succeeded, Failed, Errored, Timeout int64
	RPS                                        float64
	Mean, Max                                  string // time for request
}

var (
	h2Reqs = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2RPS  = regexp.MustCompile(`finished in [^,]+, ([0-9.]+) req/s`)
	h2Time = regexp.MustCompile(`time for request:\s+(\S+)\s+(\S+)\s+(\S+)`)
)

func parseH2load(out string) (h2loadResult, error) {
	var r h2loadResult
	m := h2Reqs.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("h2load output without a requests line:\n%s", out)
	}
	n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
	r.Total, r.Succeeded, r.Failed, r.Errored, r.Timeout = n(m[1]), n(m[4]), n(m[5]), n(m[6]), n(m[7])
	if m := h2RPS.FindStringSubmatch(out); m != nil {
		r.RPS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := h2Time.FindStringSubmatch(out); m != nil {
		r.Max, r.Mean = m[2], m[3]
	}
	return r, nil
}

// machine describes the machine for the report's header.
func machine() string {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		f.Close()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d × %s%s%s", runtime.NumCPU(), cpu, mem, kernel)
}
