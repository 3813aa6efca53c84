package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors wrapped in a *DatagramError.
var (
	ErrTooLarge      = fmt.Errorf("datagram larger than %d bytes", MaxMessageSize)
	ErrNoCredentials = errors.New("datagram without sender credentials")
)

// A DatagramError reports a datagram that Conn received but rejected as a
// whole. The Conn remains usable: keep reading.
type DatagramError struct {
	PID int32 // the sender, when known; else 0
	Err error // ErrTooLarge or ErrNoCredentials
}

func (e *DatagramError) Error() string {
	return fmt.Sprintf("sdnotify: notification from pid %d rejected: %v", e.PID, e.Err)
}

func (e *DatagramError) Unwrap() error { return e.Err }

// A Conn receives notifications on a socket of its own, such as the
// NOTIFY_SOCKET hitless gives a child. Read and Close are safe for
// concurrent use.
type Conn struct {
	conn      *net.UnixConn
	path      string
	closeOnce sync.Once
	closeErr  error
}

// Listen creates a notification socket at path: a filesystem path, or an
// "@name" in the abstract namespace. The file must not exist yet; Close
// removes it. A filesystem socket gets mode (sending needs write
// permission on it), set before the file exists so that it is never
// wider. Put it where only the intended senders can find it, since anyone
// who can reach it can send; the credentials in each Message tell who did.
//
// It needs Linux, for the senders' credentials (SO_PASSCRED); elsewhere
// it fails with an error wrapping errors.ErrUnsupported.
func Listen(path string, mode os.FileMode) (*Conn, error) {
	if path == "" || strings.HasPrefix(path, "@") && len(path) == 1 {
		return nil, fmt.Errorf("sdnotify: listen: empty socket address %q", path)
	}
	return listen(path, mode)
}

// Path returns the socket's address, in the syntax of NOTIFY_SOCKET.
func (c *Conn) Path() string { return c.path }

// Read waits for the next notification and returns it, with the sender's
// credentials from the kernel.
//
// A datagram that is rejected as a whole (too large, or without
// credentials) yields a *DatagramError and a Message holding what is known
// of it; keep reading. Lines that are malformed are dropped from the
// Message without an error from Read (see Message.Skipped). After Close,
// Read returns an error that wraps net.ErrClosed.
func (c *Conn) Read() (Message, error) {
	m, _, err := c.read(false)
	return m, err
}

// ReadFDs is Read for a receiver that keeps the descriptors sent along
// with a notification, as a service manager keeps those sent with
// FDSTORE=1: they are returned in the order sent, close-on-exec, and are
// the caller's to close. Read closes them instead, so that a sender cannot
// make the receiver leak descriptors.
func (c *Conn) ReadFDs() (Message, []*os.File, error) { return c.read(true) }

// SetReadDeadline makes a pending and any later Read return an error
// wrapping os.ErrDeadlineExceeded at t (now, for at once); the zero time
// lifts it. The Conn remains usable.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SyscallConn gives access to the socket's descriptor, for a process that
// hands it over to its next image (see FileConn).
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.conn.SyscallConn() }

// FileConn makes a Conn of a notification socket that an earlier Conn
// created at path and handed over (its descriptor, f). f is not closed:
// the Conn holds a duplicate.
func FileConn(f *os.File, path string) (*Conn, error) {
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("sdnotify: %s: %w", path, err)
	}
	uc, ok := pc.(*net.UnixConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("sdnotify: %s is not a unix socket", path)
	}
	return &Conn{conn: uc, path: path}, nil
}

// Close closes the socket, which makes a pending Read return, and removes
// the socket file.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.conn.Close()
		if !strings.HasPrefix(c.path, "@") {
			if err := os.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				c.closeErr = errors.Join(c.closeErr, err)
			}
		}
		if c.closeErr != nil {
			c.closeErr = fmt.Errorf("sdnotify: close %s: %w", c.path, c.closeErr)
		}
	})
	return c.closeErr
}
