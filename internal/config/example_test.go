//go:build linux

package config_test

import (
	"fmt"

	"github.com/hitless/hitless/internal/config"
)

func ExampleParse() {
	f, err := config.Parse("app.yaml", []byte(`
listen:
  - http=tcp://127.0.0.1:8080
  - {name: admin, url: "unix:///run/app/admin.sock", mode: "0660"}
command: [./server, --port, 8080]
drain_signal: USR2
drain_timeout: 45s
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, l := range f.Listen {
		fmt.Printf("%s %s %s %#o\n", l.Name, l.Network, l.Address, l.Mode)
	}
	fmt.Println(f.Command)
	fmt.Println(config.SignalName(f.DrainSignal), f.DrainTimeout, config.FormatReady(f.ReadyDelay))
	// Output:
	// http tcp 127.0.0.1:8080 0
	// admin unix /run/app/admin.sock 0660
	// [./server --port 8080]
	// SIGUSR2 45s notify
}

func ExampleParse_errors() {
	_, err := config.Parse("app.yaml", []byte(`
command: [./server]
drain_timeout: 3x
restart:
  backof_max: 1m
`))
	fmt.Println(err)
	// Output:
	// app.yaml:3: drain_timeout: "3x" is not a duration (want e.g. 30s, 1m30s)
	// app.yaml:5: restart.backof_max: unknown key (valid keys here: backoff_min, backoff_max, stable_after)
}
