package harness

import "time"

// Usage is what a process uses, as Linux's /proc tells (ProcUsage).
type Usage struct {
	RSS int64         // resident memory, bytes
	CPU time.Duration // user and system time
	// ChildCPU is the user and system time of the children it waited
	// for (cutime and cstime): for hitless, the generations it reaped.
	ChildCPU time.Duration
	FDs      int // open descriptors
	// PSS is the proportional set size: resident memory, each page
	// shared with other processes counted in part (from smaps_rollup);
	// the PSS of processes add up to what they hold together. Anon is
	// the anonymous part of RSS (RssAnon): what the process itself
	// allocated, not its mapped files.
	PSS, Anon int64
}
