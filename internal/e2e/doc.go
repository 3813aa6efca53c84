// Package e2e holds the end-to-end tests: they build the hitless binary
// and a small child server (./testserver, which uses childproc), run them
// as real processes on loopback sockets, and drive them with real signals
// and real HTTP load, through internal/harness. A test asserts on what
// `hitless status --json` shows wherever the fact is there (generations
// and their states, reload counters, the last failure), and on hitless's
// log only for what the log alone tells (how a child ended, what hitless
// did to it, what it ignored). Every wait is on an event (a log record,
// an HTTP answer, a process exit) or on the status, polled, with a
// deadline, never a fixed sleep. The tests need Linux (/proc, prlimit,
// kcmp, SO_PEERCRED).
package e2e
