//go:build !linux

package childproc

// checkPIDFDID is a no-op where pidfds do not exist.
func checkPIDFDID(string, int) error { return nil }
