// Package oneproc runs hitless on one processor: its init sets
// GOMAXPROCS to 1, unless the environment sets GOMAXPROCS.
//
// # Model
//
// hitless is one event loop and the goroutines that feed it: reading
// pipes and sockets, relaying descriptors. It never needs two processors
// at once, and each processor the Go runtime sets up costs memory for the
// whole life of the process (a cache of spans per size class, buffers,
// more threads that took part in the start): about 0.5 MiB of anonymous
// memory at rest, a sixth of what hitless holds (docs/footprint.md). One
// processor also bounds hitless's CPU at one core when it is busiest (the
// hand-over of thousands of connections), leaving the others to the
// generations it supervises.
//
// The runtime sizes itself before any Go code runs; GOMAXPROCS=1 in the
// environment avoids even that first cost, and is what hitless gives its
// watcher and shim. For hitless itself this init is the earliest point:
// Go initialises a package as soon as the packages it imports are, in
// import-path order among those ready, and this one imports only os and
// runtime, so it runs before the heavy packages (cobra, yaml, slog) are
// initialised, which is when most of the memory would be taken.
//
// # Limits
//
// It must import nothing heavier than os, or it would run later. A
// program that imports it runs on one processor, whatever its main does
// later: only the hitless command imports it.
package oneproc

import (
	"os"
	"runtime"
)

func init() {
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(1)
	}
}
