// Package e2e holds the end-to-end tests: they build the hitless binary
// and a small child server (./testserver, which uses childproc), run them
// as real processes on loopback sockets, and drive them with real signals
// and real HTTP load. Every wait is on an event (a log record of hitless,
// an HTTP answer, a process exit) with a deadline, never a fixed sleep.
package e2e
