//go:build linux

package main

import (
	"encoding/json"
	"testing"
)

// The "run" section an upgrade carries is a format: a later build reads
// what this one writes, by these names.
func TestRunStateFormat(t *testing.T) {
	b, _ := json.Marshal(runState{Config: "/etc/hitless/app.yaml", Data: []byte("drain_timeout: 5s\n")})
	const want = `{"config":"/etc/hitless/app.yaml","data":"ZHJhaW5fdGltZW91dDogNXMK"}`
	if string(b) != want {
		t.Errorf("run section %s, want %s", b, want)
	}
}
