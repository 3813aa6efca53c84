//go:build linux

package config

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitless/hitless/internal/control"
)

const readyWant = "want notify or delay:DURATION, e.g. delay:2s"

// ParseReady parses a readiness mode into the supervisor's ReadyDelay:
// "notify" (the child sends READY=1) is 0, and "delay:DURATION", with a
// duration as ParseDuration takes it, is that duration: the child counts
// as ready once it has lived that long.
func ParseReady(s string) (time.Duration, error) {
	if s == "notify" {
		return 0, nil
	}
	rest, ok := strings.CutPrefix(s, "delay:")
	if !ok {
		return 0, fmt.Errorf("%q is not a readiness mode (%s)", s, readyWant)
	}
	d, err := ParseDuration(rest)
	if err != nil {
		return 0, fmt.Errorf("%q: the delay %w", s, err)
	}
	return d, nil
}

// FormatReady returns a ReadyDelay in the syntax ParseReady accepts.
func FormatReady(delay time.Duration) string {
	if delay == 0 {
		return "notify"
	}
	return "delay:" + delay.String()
}

const durationWant = "want e.g. 30s, 1m30s"

// ParseDuration parses a positive duration in the syntax of
// time.ParseDuration. A bare number is refused rather than guessed to be
// seconds, because "30" meaning 30ns would be a silent surprise.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return 0, fmt.Errorf("%q has no unit (%s)", s, durationWant)
		}
		return 0, fmt.Errorf("%q is not a duration (%s)", s, durationWant)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not positive (%s)", s, durationWant)
	}
	return d, nil
}

// ParseOptionalDuration parses a duration as ParseDuration does, and also
// zero ("0", "0s"), which turns off what the duration enables (a trial,
// a watchdog).
func ParseOptionalDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil && d == 0 {
		return 0, nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%w, or 0 for none", err)
	}
	return d, nil
}

// FormatOptionalDuration returns a duration in the syntax
// ParseOptionalDuration accepts: "0" for none.
func FormatOptionalDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.String()
}

// Checked turns a check of a text value into a parser of it, which
// returns the text itself if check (nil: none) accepts it; the "name" key
// reads Checked(control.CheckName), as does --name.
func Checked(check func(string) error) func(string) (string, error) {
	return func(s string) (string, error) {
		if check != nil {
			if err := check(s); err != nil {
				return "", err
			}
		}
		return s, nil
	}
}

// checkSocketPath checks that s fits in a unix socket address.
func checkSocketPath(s string) error {
	if len(s) > control.MaxPath {
		return fmt.Errorf("%q is %d bytes long; unix socket paths are limited to %d", s, len(s), control.MaxPath)
	}
	return nil
}

// ParseMetrics parses the address of the metrics server: host:port (the
// host may be empty, for every address, or an IPv6 address in brackets;
// the port may be 0 for any free one), or the path of a unix socket,
// which must contain a slash ("./metrics.sock" for one in the working
// directory).
func ParseMetrics(s string) (string, error) {
	const want = "want host:port such as 127.0.0.1:9180, or a unix socket path such as /run/app/metrics.sock"
	switch {
	case s == "":
		return "", fmt.Errorf("empty address (%s)", want)
	case strings.IndexByte(s, 0) >= 0:
		return "", fmt.Errorf("%q contains a NUL byte (%s)", s, want)
	case strings.Contains(s, "/"):
		if err := checkSocketPath(s); err != nil {
			return "", err
		}
		return s, nil
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port or a path (%s)", s, want)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port != strconv.FormatUint(n, 10) {
		return "", fmt.Errorf("%q: port %q is not a number from 0 to 65535 (%s)", s, port, want)
	}
	return s, nil
}

// sigrtmax is the highest real-time signal number on Linux (SIGRTMAX as the
// kernel defines it, not glibc's, which reserves a few).
const sigrtmax = 64

// ParseSignal parses a signal: a name with or without the SIG prefix, in
// any case ("SIGTERM", "TERM", "usr2"), or a number ("15").
func ParseSignal(s string) (syscall.Signal, error) {
	const want = "want a signal name such as SIGTERM, TERM, SIGUSR2, or a number"
	if n, err := strconv.Atoi(s); err == nil {
		// Numbers 32 and 33 are used internally by the C library's threads
		// and have no name; the rest of 1..64 exists on every Linux.
		if n < 1 || n > sigrtmax || (unix.SignalName(syscall.Signal(n)) == "" && n < 34) {
			return 0, fmt.Errorf("%q is not a signal number (%s)", s, want)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("%q is not a signal (%s)", s, want)
}

// SignalName returns the conventional name of sig ("SIGTERM"), or its
// number for signals without one, in a form ParseSignal accepts.
func SignalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return strconv.Itoa(int(sig))
}

// Log formats accepted by ParseLogFormat.
const (
	LogText = "text"
	LogJSON = "json"
)

// ParseLogFormat parses a log format: "text" or "json".
func ParseLogFormat(s string) (string, error) {
	switch s {
	case LogText, LogJSON:
		return s, nil
	}
	return "", fmt.Errorf("%q is not a log format (want text or json)", s)
}

// ParseLogLevel parses a log level: "debug", "info", "warn" or "error".
func ParseLogLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not a log level (want debug, info, warn or error)", s)
}

// formatLogLevel returns a level as ParseLogLevel takes it.
func formatLogLevel(l slog.Level) string { return strings.ToLower(l.String()) }
