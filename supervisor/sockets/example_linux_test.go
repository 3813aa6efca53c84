package sockets_test

import (
	"fmt"
	"log"
	"log/slog"

	"github.com/hitless/hitless/supervisor/sockets"
)

// Open binds what systemd did not pass: here, outside systemd, every
// socket. The plan for the fd store is empty without one.
func ExampleOpen() {
	spec, err := sockets.ParseListen("http=tcp://127.0.0.1:0?backlog=128")
	if err != nil {
		log.Fatal(err)
	}
	socks, plan, err := sockets.Open(sockets.Config{
		Listen: []sockets.ListenSpec{spec},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err) // a busy port, a bad address
	}
	plan.Apply(slog.Default()) // before the first child starts
	for i, s := range socks {
		fmt.Printf("child fd %d: %s, %s %s\n", 3+i, s.Spec.Name, s.Source, s.Spec.Network)
		s.Close()
	}
	// Output:
	// child fd 3: http, bound tcp
}
