package harness

import "time"

// Usage is what a process uses, as Linux's /proc tells (ProcUsage).
type Usage struct {
	RSS int64         // resident memory, bytes
	CPU time.Duration // user and system time
	FDs int           // open descriptors
}
