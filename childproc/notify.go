package childproc

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Ready tells the supervisor (or systemd) that this process is ready to
// take traffic: it sends READY=1, and STATUS=status when status is not
// empty, to $NOTIFY_SOCKET. Under hitless this is the moment the previous
// generation is told to drain, so call it only once the server accepts on
// its listeners (Lifecycle.Run does). Without NOTIFY_SOCKET it does
// nothing and returns nil.
func Ready(status string) error {
	return Notify(notifyPayload("READY=1", status))
}

// Notify sends a raw sd_notify(3) payload, newline separated KEY=VALUE
// lines such as "STOPPING=1\nSTATUS=draining", to $NOTIFY_SOCKET. Without
// NOTIFY_SOCKET it does nothing and returns nil.
//
// NOTIFY_SOCKET is left in the environment (a later STOPPING=1 needs it).
// Under hitless it is a socket private to this child, so a helper process
// that inherits it cannot stop the whole unit.
func Notify(state string) error {
	path, ok := os.LookupEnv(envNotifySocket)
	if !ok || path == "" {
		return nil
	}
	return notifySocket(path, state)
}

func notifySocket(path, state string) error {
	if path[0] != '/' && path[0] != '@' {
		// systemd also knows vsock: addresses; nothing here would hand
		// one to a child process.
		return fmt.Errorf("childproc: %s=%q: only absolute paths and @abstract names are supported", envNotifySocket, path)
	}
	// Go maps a leading '@' to the abstract namespace (a leading NUL).
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("childproc: sd_notify to %s: %w", path, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("childproc: sd_notify to %s: %w", path, err)
	}
	return nil
}

// notifyPayload builds "KEY=1" plus an optional "STATUS=" line. STATUS must
// be one line of UTF-8, so line breaks and NULs in status become spaces and
// invalid UTF-8 is replaced, rather than letting a stray newline inject
// another key (a "\nSTOPPING=1" in a status text would stop the unit).
func notifyPayload(state, status string) string {
	status = statusLine(status)
	if status == "" {
		return state
	}
	return state + "\nSTATUS=" + status
}

func statusLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == 0 {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}
