//go:build linux

package supervisor

import (
	"errors"
	"testing"

	"github.com/hitless/hitless/supervisor/sockets"
)

// Validate takes the sockets systemd passed for --listen when none is
// given, and wants one or the other.
func TestValidateListen(t *testing.T) {
	if err := (Config{Command: []string{"x"}, Passed: sockets.Passed{FDs: []sockets.PassedFD{{Name: "web", FD: 3}}}}).Validate(); err != nil {
		t.Errorf("no --listen, but sockets passed: %v", err)
	}
	var ce *ConfigError
	if err := (Config{Command: []string{"x"}}).Validate(); !errors.As(err, &ce) || ce.Field != "Listen" {
		t.Errorf("no sockets: %v, want a ConfigError for Listen", err)
	}
}
