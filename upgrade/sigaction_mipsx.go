//go:build linux && (mips || mipsle || mips64 || mips64le)

package upgrade

import "unsafe"

// On MIPS the kernel's struct sigaction starts with an int of flags,
// padded to a pointer, and its sigset_t is 128 bits.
const (
	sigactionHandler = unsafe.Sizeof(uintptr(0))
	sigsetSize       = 16
)
