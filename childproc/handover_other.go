//go:build !linux

package childproc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"

	"github.com/hitless/hitless/internal/handover"
)

// handoverClient is the hand-over's channel to hitless, which runs on
// Linux only: elsewhere there is never one.
type handoverClient struct{}

func handoverFromEnv(*slog.Logger) *handoverClient {
	os.Unsetenv(handover.EnvVar)
	return nil
}

func (c *handoverClient) open([]string, func(handover.Message, []int)) error {
	return errors.ErrUnsupported
}
func (c *handoverClient) usable() bool                   { return false }
func (c *handoverClient) hello([]string)                 {}
func (c *handoverClient) report(int, int)                {}
func (c *handoverClient) ack(uint64, bool, string)       {}
func (c *handoverClient) ackMany([]uint64, bool, string) {}
func (c *handoverClient) query(context.Context) (int, []string, error) {
	return 0, nil, errors.ErrUnsupported
}
func (c *handoverClient) close()        {}
func adoptedConn(int) (net.Conn, error) { return nil, errors.ErrUnsupported }
func (c *handoverClient) hand(string, syscall.Conn, []byte, bool) (bool, bool, string) {
	return false, false, "not supported on this system"
}
