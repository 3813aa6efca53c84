//go:build linux

package supervisor_test

import (
	"context"
	"fmt"
	"log"

	"github.com/hitless/hitless/supervisor"
)

func ExampleParseListen() {
	for _, flag := range []string{
		"tcp://127.0.0.1:8080",
		"api=unix:///run/app.sock?mode=0660",
		"udp://[::1]:5353",
	} {
		spec, err := supervisor.ParseListen(flag)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(spec.Name, spec.Network, spec.Address)
	}
	// Output:
	// tcp-8080 tcp 127.0.0.1:8080
	// api unix /run/app.sock
	// udp-5353 udp [::1]:5353
}

// A program that embeds the supervisor must run its hidden modes (the
// shim, the watcher) when it is started in one, before anything else.
func Example() {
	// if code, ok := supervisor.RunHidden(os.Args[1:]); ok {
	// 	os.Exit(code)
	// }
	spec, err := supervisor.ParseListen("http=tcp://127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	sup, err := supervisor.New(supervisor.Config{
		Listen:  []supervisor.ListenSpec{spec},
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
