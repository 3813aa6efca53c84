//go:build linux

package supervisor_test

import (
	"context"
	"log"

	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/supervisor/sockets"
)

// A program that embeds the supervisor needs nothing more: the hidden
// modes it starts its own binary in (the shim, the watcher) run from an
// init of this package's, before main.
func Example() {
	spec, err := sockets.ParseListen("http=tcp://127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	sup, err := supervisor.New(supervisor.Config{
		Listen:  []sockets.ListenSpec{spec},
		Command: []string{"./myserver", "--flag", "value"},
	})
	if err != nil {
		log.Fatal(err) // a busy port, a bad address
	}
	// Run returns after SIGTERM or SIGINT, once every child has drained.
	if err := sup.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
