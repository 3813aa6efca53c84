//go:build linux

package config

import (
	"strings"
	"syscall"
	"testing"
)

// The values of hitless run's flags (--ready, --drain-signal, durations,
// --log-format, --log-level, --metrics) go through these parsers, which FuzzParse
// reaches only inside YAML. Here they get raw strings: none may panic, and
// what one accepts must survive a round trip through its canonical form.
func FuzzFlagValues(f *testing.F) {
	for _, s := range []string{"notify", "delay:2s", "delay:-1s", "delay:", "SIGTERM", "usr2", "15", "64", "33", "SIGKILL",
		"30s", "1m30s", "30", "-5s", "json", "text", "debug", "warn", "\x00", "", "0", "0s",
		"127.0.0.1:9180", ":0", "[::1]:80", "/run/m.sock", "host", ":99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseReady(s); err == nil {
			back, err := ParseReady(FormatReady(d))
			if err != nil || back != d {
				t.Fatalf("ParseReady(%q) = %v, whose form %q parses to %v, %v", s, d, FormatReady(d), back, err)
			}
			if d < 0 {
				t.Fatalf("ParseReady(%q) accepted a delay of %v", s, d)
			}
		}
		if sig, err := drainSignal(s); err == nil {
			if sig == syscall.SIGKILL || sig == syscall.SIGSTOP || sig < 1 || sig > 64 {
				t.Fatalf("drainSignal(%q) accepted %d", s, sig)
			}
			if back, err := drainSignal(SignalName(sig)); err != nil || back != sig {
				t.Fatalf("drainSignal(%q) = %d, whose name %q parses to %d, %v", s, sig, SignalName(sig), back, err)
			}
		}
		if d, err := ParseDuration(s); err == nil {
			if back, err := ParseDuration(d.String()); d <= 0 || err != nil || back != d {
				t.Fatalf("ParseDuration(%q) = %v, round trip %v, %v", s, d, back, err)
			}
		}
		if d, err := ParseOptionalDuration(s); err == nil {
			if back, err := ParseOptionalDuration(FormatOptionalDuration(d)); d < 0 || err != nil || back != d {
				t.Fatalf("ParseOptionalDuration(%q) = %v, round trip %v, %v", s, d, back, err)
			}
		}
		if addr, err := ParseMetrics(s); err == nil && (addr != s || !strings.Contains(s, "/") && !strings.Contains(s, ":")) {
			t.Fatalf("ParseMetrics(%q) = %q", s, addr)
		}
		if v, err := ParseLogFormat(s); err == nil && v != LogText && v != LogJSON {
			t.Fatalf("ParseLogFormat(%q) = %q", s, v)
		}
		if _, err := ParseLogLevel(s); err == nil && s != "debug" && s != "info" && s != "warn" && s != "error" {
			t.Fatalf("ParseLogLevel(%q) accepted", s)
		}
	})
}
