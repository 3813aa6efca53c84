//go:build !linux

package main

const deploysNum = "13"

// benchDeploys needs Linux: the peers are Debian's packages, run in
// process groups with a parent-death signal.
func benchDeploys(s *scenario) []row {
	s.Fatalf("scenario %s runs on Linux only", deploysNum)
	return nil
}

// peerScaleTargets needs Linux, as benchDeploys does: row 8 runs
// hitless alone.
func peerScaleTargets(*scenario) []func() *scaleTarget { return nil }
