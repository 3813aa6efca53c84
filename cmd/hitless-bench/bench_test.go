package main

import (
	"encoding/json"
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

// What examples/grpc/cmd/grpcload prints (its load.Result), as scenario
// 12 reads it.
func TestParseGRPCLoad(t *testing.T) {
	out := `{"unary":1002,"unary_failed":3,"fresh":1002,"fresh_failed":3,"unary_p50_ns":543726,"unary_p99_ns":6004771,"streams":0,"streams_moved":0,"streams_failed":0,"stream_messages":0,"watches":2,"watch_moves":5,"watch_failed":1,"watch_messages":50,"watch_gaps":0,"transparent_retries":1,"failures":{"Unavailable":3,"Canceled":1},"examples":{"Unavailable":"x"},"generations":[1,2]}`
	var r grpcResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Unary != 1002 || r.UnaryFailed != 3 || r.UnaryP99 != 6004771 || r.WatchMoves != 5 || r.Retries != 1 || len(r.Generations) != 2 {
		t.Errorf("parsed %+v", r)
	}
	if got, want := r.failureText(4), "failed 4 (Canceled 1, Unavailable 3)"; got != want {
		t.Errorf("failureText %q, want %q", got, want)
	}
}

// What examples/wsecho/cmd/wsload prints (its load.Result), as scenario
// 14 reads it.
func TestParseWSLoad(t *testing.T) {
	out := `{"clients":1000,"connected":1000,"sent":50210,"echoed":50210,"lost":0,"close_frames":0,"failed":0,"failures":{},"p50_ns":183000,"p99_ns":4100000}`
	var r wsResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Connected != 1000 || r.Sent != 50210 || r.P99 != 4100*time.Microsecond {
		t.Errorf("parsed %+v", r)
	}
}
