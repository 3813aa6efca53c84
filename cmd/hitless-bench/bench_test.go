package main

import (
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ http://127.0.0.1:8080/work
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   385.12us  300.00us   4.70ms   90.00%
    Req/Sec    41.32k     1.20k   43.00k    70.00%
  Latency Distribution
     50%  320.00us
     75%  400.00us
     90%  600.00us
     99%    4.70ms
  206650 requests in 5.00s, 30.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
Requests/sec:  41323.00
Transfer/sec:      6.00MB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS != 41323 || r.P50 != 320*time.Microsecond || r.P99 != 4700*time.Microsecond || r.Requests != 206650 {
		t.Errorf("parsed %+v", r)
	}
	if r.Errors != "Socket errors: connect 0, read 3, write 0, timeout 0" {
		t.Errorf("errors %q", r.Errors)
	}
	if _, err := parseWrk("unable to connect"); err == nil {
		t.Error("garbage parsed")
	}
}

func TestParseH2load(t *testing.T) {
	out := `finished in 6.00s, 23012.00 req/s, 1.08MB/s
requests: 138075 total, 138075 started, 138075 done, 138072 succeeded, 3 failed, 3 errored, 0 timeout
status codes: 138072 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 6.46MB (6770632) total, 540.77KB (553752) headers (space savings 95.82%), 3.56MB (3727944) data
                     min         max         mean         sd        +/- sd
time for request:       72us     67.08ms      3.35ms      2.71ms    87.47%
`
	r, err := parseH2load(out)
	if err != nil {
		t.Fatal(err)
	}
	want := h2loadResult{Total: 138075, Succeeded: 138072, Failed: 3, Errored: 3, RPS: 23012, Mean: "3.35ms", Max: "67.08ms"}
	if r != want {
		t.Errorf("parsed %+v, want %+v", r, want)
	}
}
