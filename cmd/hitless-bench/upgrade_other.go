//go:build !linux

package main

// benchUpgrade needs Linux: `hitless upgrade` is Linux only, and so is
// the subreaper that owns the tableflip server's processes.
func benchUpgrade(s *scenario) []row {
	s.Fatalf("scenario 11 runs on Linux only")
	return nil
}
