//go:build !linux

package listenfds

// checkPIDFDID is a no-op where pidfds do not exist.
func checkPIDFDID(string, int) error { return nil }
