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
}
