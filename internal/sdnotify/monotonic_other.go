//go:build !linux

package sdnotify

import (
	"errors"
	"fmt"
)

// monotonicUsec would return the clock systemd compares MONOTONIC_USEC
// with: Linux's CLOCK_MONOTONIC, which other systems do not share.
func monotonicUsec() (uint64, error) {
	return 0, fmt.Errorf("MONOTONIC_USEC is Linux's CLOCK_MONOTONIC: %w", errors.ErrUnsupported)
}
