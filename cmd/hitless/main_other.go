//go:build !linux

package main

import (
	"fmt"
	"os"
	"runtime"
)

// hitless relies on what only Linux has (pidfds, SO_PEERCRED,
// SCM_CREDENTIALS, subreapers). Built for another
// system, the binary says so at once instead of failing half-way.
func main() {
	fmt.Fprintf(os.Stderr, "hitless: runs on Linux only (this binary was built for %s)\n", runtime.GOOS)
	os.Exit(1)
}
