// Package harness drives hitless from the outside, the way the end-to-end
// tests, the examples' tests and the benchmark do: it runs `hitless run`
// as a real process, reads its JSON log as it is written, asks it
// `hitless status --json`, and sends HTTP load at what it serves, filing
// every failed request under one class.
//
// Three parts, each usable on its own:
//
//   - Hitless (Start, Launch): one hitless process, its log records
//     with marks, waits with deadlines on a record or on the status,
//     signals, exit status, stop. Its methods fail a TB: *testing.T, or a
//     command's own implementation (hitless-bench has one).
//   - Load (StartLoad): closed-loop POST workers, each one client with one
//     connection at a time, keep-alive on or off, bounded in count and in
//     time, optionally paced, counted in a Tally whose progress can be
//     awaited; Classify names each failure, and OnBody sees each answer
//     (the test server names the process that answered).
//   - Helpers for the test server (internal/e2e/testserver): WorkURL for
//     its handler delay, OpenStream for its event streams; and, on Linux,
//     what /proc says of a process (ProcUsage, Children, Alive).
//
// Limits: everything runs on one machine over loopback; the harness never
// retries a request and never sleeps to wait for something, but it does
// poll the status (every 10ms, each poll a run of the hitless client),
// since the state it shows changes without an event to wait on. Status
// needs the control socket, so it cannot serve a test that takes away
// hitless's file descriptors. Reading /proc is Linux only; elsewhere those
// helpers return an error.
package harness
