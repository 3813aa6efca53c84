//go:build linux

// Package metrics serves what hitless knows in the Prometheus exposition
// format, on /metrics, for "hitless run --metrics ADDR".
//
// # Model
//
// Each figure has one source. Counters and gauges are read from the
// supervisor's own Status at each scrape (from a Source), so that they
// are exactly what "hitless status" says and nothing counts twice. The
// durations of reloads and drains, which Status does not keep, are
// histograms fed as they happen through the supervisor.Observer that
// Metrics implements. Nothing else is kept.
//
// The text format (version 0.0.4) is written here, not by the Prometheus
// Go client, which served it before: the client and what it pulls in
// (protobuf, procfs, its registry) were most of hitless's binary and a
// good part of its memory, paid by every run, with --metrics or not
// (docs/footprint.md has the figures). The families, their types, HELP
// texts and labels are the client's, the go_* and process_* ones
// included (testdata/families.txt pins them).
//
//	hitless_reloads_total{result="ok|failed|rolled_back"}  counter
//	hitless_restarts_total                                 counter
//	hitless_watchdog_kills_total                           counter
//	hitless_output_dropped_lines_total{stream}             counter, lines hitless could not write to its stdout or stderr
//	hitless_generations{state}                             gauge, every state, 0 included
//	hitless_generation_resident_memory_bytes{generation,pid,state}  gauge
//	hitless_generation_drain_start_time_seconds{generation,pid,state}  gauge, draining and failed generations
//	hitless_handover_connections_total{result}             counter, connections handed between generations
//	hitless_generation_handover_connections{generation,pid,state,result}  gauge, generations that take part
//	hitless_drain_timeout_seconds                          gauge, the configured deadline
//	hitless_reload_duration_seconds                        histogram, request to serving, trial included
//	hitless_drain_duration_seconds                         histogram, drain signal to exit
//	hitless_build_info{version,revision,goversion}         gauge, always 1
//
// plus the standard process_* and go_* metrics of the hitless process
// itself (not of its children), and promhttp_metric_handler_errors_total
// {cause="gathering|encoding"}, the scrapes that failed, under the name
// the Go client gave it.
//
// The hand-over results (see package internal/handover's Counts) are
// handed, adopted, refused, lost, closed and closed_idle; the total
// counts every generation since hitless started, exited ones included.
//
// result="failed" counts every start that did not serve, as Status's
// reloads_failed does: failed reloads, and also failed restarts after a
// crash and a failed first start. result="rolled_back" counts reloads
// that were ready and then failed their trial; they are not in "failed".
//
// Server binds the address before hitless starts a child, so that an
// address that cannot be bound is a start-up error, and serves until
// Close.
//
// An upgrade of hitless in place carries everything: Server is a
// supervisor.Carrier that hands its listener over (scrapes that connect
// during the exec wait in its queue; a port chosen for host:0 stays), and
// Metrics one that hands the histograms' values over, as they are at the
// exec; the counters come from the status, which the supervisor carries.
//
// # Limits
//
// A scrape waits for the supervisor's goroutine to answer Status, at most
// ScrapeTimeout; if it cannot (hitless is stopping), the scrape fails
// with an error rather than report stale counts. The per-generation
// series are labelled by pid and state, so each generation, and each
// change of its state, starts new series; they end when the generation
// exits. Histograms start empty at each start of hitless, as the counters
// do, and keep their values across upgrades in place. The go_* metrics
// describe the running image, and restart at an upgrade; process_* are
// the process's, which an upgrade keeps. A scrape in progress when an
// upgrade begins finishes first (within the hand-over's 5 s); an idle
// keep-alive connection is closed, and a scrape sent on it at that
// instant fails, as HTTP/1.1 allows. There is no TLS and no
// authentication: bind a loopback address or a unix socket, or put a
// proxy in front. Only the text format is served (every Prometheus
// server reads it), uncompressed, by Server, an HTTP/1.1 server of its
// own (keep-alive, bounded in connections, sizes and time; its doc says
// why it is not net/http's).
package metrics
