package sockets_test

import (
	"fmt"
	"log"

	"github.com/hitless/hitless/supervisor/sockets"
)

func ExampleParseListen() {
	for _, flag := range []string{
		"tcp://127.0.0.1:8080",
		"api=unix:///run/app.sock?mode=0660",
		"udp://[::1]:5353",
	} {
		spec, err := sockets.ParseListen(flag)
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
