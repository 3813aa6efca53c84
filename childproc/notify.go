package childproc

import (
	"fmt"
	"os"
	"strings"

	"github.com/hitless/hitless/internal/sdnotify"
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
// lines such as "STOPPING=1\nSTATUS=draining", to $NOTIFY_SOCKET: a
// filesystem path, or an "@name" in Linux's abstract namespace. Without
// NOTIFY_SOCKET it does nothing and returns nil. A payload larger than
// 4096 bytes, which systemd would drop, is refused.
//
// NOTIFY_SOCKET is left in the environment (a later STOPPING=1 needs it).
// Under hitless it is a socket private to this child, so a helper process
// that inherits it cannot stop the whole unit.
func Notify(state string) error {
	path, ok := os.LookupEnv(envNotifySocket)
	if !ok || path == "" {
		return nil
	}
	// systemd also knows vsock: addresses; nothing here would hand one to
	// a child process, and sdnotify refuses them.
	n, err := sdnotify.New(path)
	if err != nil {
		return fmt.Errorf("childproc: %w", err)
	}
	if err := n.SendRaw(state); err != nil {
		return fmt.Errorf("childproc: sd_notify to %s: %w", path, err)
	}
	return nil
}

// notifyPayload builds "KEY=1" plus an optional "STATUS=" line. STATUS must
// be one line of UTF-8: sdnotify.CleanStatus makes it so rather than let a
// stray newline inject another key (a "\nSTOPPING=1" in a status text
// would stop the unit). A status that is blank once cleaned sends no
// STATUS= at all.
func notifyPayload(state, status string) string {
	status = strings.TrimSpace(sdnotify.CleanStatus(status))
	if status == "" {
		return state
	}
	return state + "\nSTATUS=" + status
}
