//go:build race

package e2e

// raceEnabled builds hitless with the race detector too, so races in the
// supervisor show up under real processes and signals.
const raceEnabled = true
