//go:build linux && !(mips || mipsle || mips64 || mips64le)

package upgrade

// The kernel's struct sigaction starts with the handler, and its sigset_t
// is 64 bits.
const (
	sigactionHandler = 0
	sigsetSize       = 8
)
