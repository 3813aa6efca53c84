package sdnotify

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hitless/hitless/internal/listenfds"
	"github.com/hitless/hitless/internal/unixsock"
)

// MaxMessageSize is the largest notification datagram, in bytes, that
// Notifier sends and Conn accepts. It is the limit systemd applies to the
// notifications it receives (PIPE_BUF).
const MaxMessageSize = 4096

// maxStatus bounds the text of a STATUS= line, so that a long error
// message cannot push a datagram over MaxMessageSize. systemctl status
// shows one line anyway.
const maxStatus = 1024

// sendTimeout bounds one Send. A receiver that stopped reading fills its
// queue, and a blocking send would then hang whatever part of hitless
// reports state, such as a reload.
const sendTimeout = 5 * time.Second

// Environment variables that systemd sets for the notification protocol.
const (
	envSocket      = "NOTIFY_SOCKET"
	envWatchdogUS  = "WATCHDOG_USEC"
	envWatchdogPID = "WATCHDOG_PID"
	envFDStore     = "FDSTORE"
)

// A Notifier sends notifications to the service manager. Its methods are
// safe for concurrent use. A nil *Notifier is valid: every method does
// nothing and returns nil, and WatchdogInterval returns 0.
type Notifier struct {
	addr     *net.UnixAddr
	watchdog time.Duration // WATCHDOG_USEC; 0 when disabled
	fdstore  int           // FDSTORE; 0 when not set
}

// FromEnv returns a Notifier for the socket in NOTIFY_SOCKET, and removes
// NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID and FDSTORE from the
// environment of the process (os.Unsetenv), so that children never
// inherit them: the unit's socket, its watchdog and its file descriptor
// store are the process's, not theirs. It returns nil and no error when
// NOTIFY_SOCKET is not set.
//
// The variables are removed even when FromEnv fails. Call it once, early in
// main, before any goroutine reads the environment or starts a child.
func FromEnv() (*Notifier, error) {
	socket := os.Getenv(envSocket)
	usec := os.Getenv(envWatchdogUS)
	wpid := os.Getenv(envWatchdogPID)
	fdstore := os.Getenv(envFDStore)
	for _, k := range []string{envSocket, envWatchdogUS, envWatchdogPID, envFDStore} {
		os.Unsetenv(k)
	}
	n, err := fromValues(socket, usec, wpid, os.Getpid())
	if n == nil || err != nil || fdstore == "" {
		return n, err
	}
	max, err := strconv.ParseUint(fdstore, 10, 31)
	if err != nil {
		return nil, fmt.Errorf("sdnotify: %s=%q is not a number of descriptors", envFDStore, fdstore)
	}
	n.fdstore = int(max)
	return n, nil
}

// fromValues is FromEnv without the environment, for tests.
func fromValues(socket, usec, wpid string, pid int) (*Notifier, error) {
	if socket == "" {
		return nil, nil
	}
	n, err := New(socket)
	if err != nil {
		return nil, err
	}
	timeout, err := ParseWatchdog(usec, wpid, pid)
	switch {
	case errors.Is(err, ErrWatchdogOtherPID):
		// The watchdog is meant for another process (we were started by
		// one that was supervised); pinging would keep a dead service
		// alive.
	case err != nil:
		return nil, fmt.Errorf("sdnotify: %w", err)
	default:
		n.watchdog = timeout
	}
	return n, nil
}

// ErrWatchdogOtherPID is wrapped by ParseWatchdog's error when
// WATCHDOG_PID names another process: the pings are expected from that
// one.
var ErrWatchdogOtherPID = errors.New("WATCHDOG_PID is not this process")

// ParseWatchdog reads the values of WATCHDOG_USEC and WATCHDOG_PID, as the
// service manager sets them, for the process whose pid is self. It returns
// the watchdog's timeout: the manager acts when no WATCHDOG=1 came for
// that long, so ping at half of it. The timeout is 0 when usec is empty,
// or too large for a time.Duration (a watchdog that never fires). An empty
// pid means the pings are expected from whoever reads the variables. A
// value that is not a positive decimal number is an error, and so is a
// pid other than self, wrapping ErrWatchdogOtherPID.
func ParseWatchdog(usec, pid string, self int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	us, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || us == 0 {
		return 0, fmt.Errorf("%s=%q is not a positive number of microseconds", envWatchdogUS, usec)
	}
	if pid != "" {
		p, err := strconv.ParseUint(pid, 10, 31)
		if err != nil || p == 0 {
			return 0, fmt.Errorf("%s=%q is not a pid", envWatchdogPID, pid)
		}
		if int(p) != self {
			return 0, fmt.Errorf("%w: %s=%d, this process is %d", ErrWatchdogOtherPID, envWatchdogPID, p, self)
		}
	}
	if us > uint64(math.MaxInt64/time.Microsecond) {
		return 0, nil
	}
	return time.Duration(us) * time.Microsecond, nil
}

// New returns a Notifier that sends to socket: a filesystem path starting
// with "/", or an abstract socket name starting with "@". It does not read
// the environment and has no watchdog.
func New(socket string) (*Notifier, error) {
	if !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		return nil, fmt.Errorf("sdnotify: %s=%q: want an absolute path or an @abstract name", envSocket, socket)
	}
	if len(socket) > unixsock.MaxPath {
		return nil, fmt.Errorf("sdnotify: %s=%q: longer than a unix socket address can be", envSocket, socket)
	}
	return &Notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}, nil
}

// Socket returns the address the Notifier sends to, in the syntax of
// NOTIFY_SOCKET, or "" for a nil Notifier.
func (n *Notifier) Socket() string {
	if n == nil {
		return ""
	}
	return n.addr.Name
}

// Send sends lines, each "KEY=VALUE", as one datagram: the service manager
// applies them together. A line must not contain a newline or NUL byte,
// since that would smuggle in another key; use Status to send text from
// elsewhere.
func (n *Notifier) Send(lines ...string) error {
	if n == nil {
		return nil
	}
	payload, err := checkLines(lines)
	if err != nil {
		return err
	}
	return n.send(payload, nil)
}

// checkLines checks lines as Send does, and joins them into a payload.
// Its size is checked by send.
func checkLines(lines []string) (string, error) {
	for _, l := range lines {
		if i := strings.IndexByte(l, '='); i <= 0 {
			return "", fmt.Errorf("sdnotify: %q is not KEY=VALUE", l)
		}
		if strings.ContainsAny(l, "\n\x00") {
			return "", fmt.Errorf("sdnotify: %q contains a newline or NUL byte", l)
		}
	}
	return strings.Join(lines, "\n"), nil
}

// SendRaw sends payload, newline-separated KEY=VALUE lines, as one
// datagram, unchecked, as sd_notify(3) does: for payloads composed
// elsewhere, such as what a library's caller hands it (the receiver drops
// lines it cannot parse). Send checks each line first, and is the one to
// use for text of your own. A payload larger than MaxMessageSize is
// refused, since systemd would drop it.
func (n *Notifier) SendRaw(payload string) error {
	if n == nil {
		return nil
	}
	return n.send(payload, nil)
}

// SendFDs sends lines, checked as Send checks them, in one datagram with
// duplicates of the descriptors fds attached (SCM_RIGHTS), as
// sd_pid_notify_with_fds(3) does. The descriptors stay the caller's. The
// service manager keeps them only with FDSTORE=1 among the lines; see
// StoreFD.
func (n *Notifier) SendFDs(fds []int, lines ...string) error {
	if n == nil {
		return nil
	}
	if len(fds) == 0 {
		return errors.New("sdnotify: SendFDs without descriptors")
	}
	payload, err := checkLines(lines)
	if err != nil {
		return err
	}
	return n.send(payload, fds)
}

// StoreFD puts a duplicate of fd in the service manager's file
// descriptor store, named name: FDSTORE=1 and FDNAME=name, one datagram.
// systemd keeps it while the service restarts, and passes it back in
// LISTEN_FDS, named in LISTEN_FDNAMES, at the next start; only with
// FileDescriptorStoreMax= above 0, and across a stop only with
// FileDescriptorStorePreserve=yes (systemd 254). It drops descriptors
// beyond the maximum, and says so only in its own log. A name must be
// what LISTEN_FDNAMES can carry (listenfds.CheckName); systemd keeps
// several descriptors of one name.
func (n *Notifier) StoreFD(name string, fd int) error {
	if err := listenfds.CheckName(name); err != nil {
		return fmt.Errorf("sdnotify: FDNAME: %w", err)
	}
	return n.SendFDs([]int{fd}, "FDSTORE=1", "FDNAME="+name)
}

// RemoveStoredFD drops every descriptor named name from the service
// manager's store (FDSTOREREMOVE=1, FDNAME=name). Dropping a name the
// store does not hold is not an error.
func (n *Notifier) RemoveStoredFD(name string) error {
	if err := listenfds.CheckName(name); err != nil {
		return fmt.Errorf("sdnotify: FDNAME: %w", err)
	}
	return n.Send("FDSTOREREMOVE=1", "FDNAME="+name)
}

// FDStoreMax returns FDSTORE as FromEnv found it: the most descriptors
// the service manager's store keeps (FileDescriptorStoreMax=), which
// systemd 254 and later set when the store is enabled; 0 when it was not
// set, which older systemd does not tell apart from a disabled store.
func (n *Notifier) FDStoreMax() int {
	if n == nil {
		return 0
	}
	return n.fdstore
}

// send sends msg, with fds attached when there are any, after refusing a
// msg larger than MaxMessageSize, which systemd would drop.
func (n *Notifier) send(msg string, fds []int) error {
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("sdnotify: message of %d bytes exceeds %d", len(msg), MaxMessageSize)
	}
	// A new socket per message, as sd_notify(3) does: a socket connected
	// once would keep pointing at a stale inode after systemd re-executes
	// itself and binds its notification socket anew.
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	if len(fds) > 0 {
		err = sendFDs(conn, []byte(msg), fds)
	} else {
		_, err = conn.Write([]byte(msg))
	}
	if err != nil {
		return fmt.Errorf("sdnotify: send %q: %w", firstLine(msg), err)
	}
	return nil
}

// Ready sends READY=1: start-up, or a reload, is complete. A non-empty
// status is sent in the same datagram as STATUS=; after a reload, it is how
// the outcome reaches "systemctl status", since the protocol has no way to
// report a failed reload.
func (n *Notifier) Ready(status string) error {
	if status == "" {
		return n.Send("READY=1")
	}
	return n.Send("READY=1", "STATUS="+CleanStatus(status))
}

// Reloading sends RELOADING=1 with MONOTONIC_USEC= set to now, in one
// datagram. Type=notify-reload services must send both together; systemd
// ignores RELOADING=1 without a timestamp, or with one from before its own
// reload signal. A Ready must follow when the reload is over. It needs
// Linux, whose CLOCK_MONOTONIC systemd reads; elsewhere it fails with an
// error wrapping errors.ErrUnsupported.
func (n *Notifier) Reloading() error {
	if n == nil {
		return nil
	}
	usec, err := monotonicUsec()
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return n.Send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatUint(usec, 10))
}

// Stopping sends STOPPING=1: shutdown began.
func (n *Notifier) Stopping() error {
	return n.Send("STOPPING=1")
}

// Status sends STATUS= with s made fit for one line (see CleanStatus).
func (n *Notifier) Status(s string) error {
	return n.Send("STATUS=" + CleanStatus(s))
}

// Watchdog sends WATCHDOG=1, the keep-alive ping. Call it every
// WatchdogInterval while the service is healthy.
func (n *Notifier) Watchdog() error {
	return n.Send("WATCHDOG=1")
}

// WatchdogInterval returns how often to call Watchdog: half the timeout
// systemd enforces (WATCHDOG_USEC), as sd_watchdog_enabled(3) advises, so
// that one late ping is not fatal. It returns 0 when the watchdog is
// disabled: WATCHDOG_USEC unset, or WATCHDOG_PID naming another process.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog / 2
}

// CleanStatus makes s fit for a STATUS= line: invalid UTF-8 is replaced,
// control characters (newlines above all) become spaces, and text beyond
// 1024 bytes is cut with an ellipsis.
func CleanStatus(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxStatus {
		cut := maxStatus - len("…")
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + "..."
	}
	return s
}
