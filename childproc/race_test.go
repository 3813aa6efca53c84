//go:build race

package childproc

// raceEnabled trims the slowest tests: race-instrumented children are
// several times slower, and the comparison runs prove nothing more there.
const raceEnabled = true
