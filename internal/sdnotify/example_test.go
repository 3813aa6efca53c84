package sdnotify_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/hitless/hitless/internal/sdnotify"
)

// The supervisor's side: a private socket for a child, and what arrives on
// it. Here the "child" is a Notifier in the same process.
func ExampleListen() {
	dir, err := os.MkdirTemp("", "sdnotify-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	conn, err := sdnotify.Listen(filepath.Join(dir, "child-1.sock"), 0o600)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	// The child would find conn.Path() in its NOTIFY_SOCKET.
	child, err := sdnotify.New(conn.Path())
	if err != nil {
		log.Fatal(err)
	}
	if err := child.Ready("listening on 2 sockets"); err != nil {
		log.Fatal(err)
	}

	m, err := conn.Read()
	if err != nil {
		log.Fatal(err)
	}
	status, _ := m.Get("STATUS")
	fmt.Println(m.Event(), status, m.PID == int32(os.Getpid()))
	// Output: ready listening on 2 sockets true
}

// hitless's own side: report to systemd, when there is one.
func ExampleFromEnv() {
	// Also removes NOTIFY_SOCKET and the watchdog variables from our
	// environment, so no child inherits them. n is nil without systemd,
	// and a nil Notifier does nothing.
	n, err := sdnotify.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	if d := n.WatchdogInterval(); d > 0 {
		go func() {
			for range time.Tick(d) {
				n.Watchdog()
			}
		}()
	}
	n.Ready("serving")

	// On SIGHUP under Type=notify-reload:
	n.Reloading()
	// ... start the new child, wait for it ...
	n.Ready("reload failed: new child exited with status 1; old child still serving")
}
