package sdnotify

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func fields(kv ...string) []Field {
	var fs []Field
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		fs = append(fs, Field{k, v})
	}
	return fs
}

func TestSendRejects(t *testing.T) {
	n, err := New("/nonexistent/socket")
	if err != nil {
		t.Fatal(err)
	}
	for _, lines := range [][]string{
		{"READY"},
		{"=1"},
		{"READY=1\nSTOPPING=1"},
		{"STATUS=a\x00b"},
		{"STATUS=" + strings.Repeat("x", MaxMessageSize)},
	} {
		if err := n.Send(lines...); err == nil || strings.Contains(err.Error(), "nonexistent") {
			t.Errorf("Send(%.40q) = %v, want it refused before sending", lines, err)
		}
	}
	if err := n.SendRaw(strings.Repeat("x", MaxMessageSize+1)); err == nil || strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("SendRaw of %d bytes = %v, want it refused before sending", MaxMessageSize+1, err)
	}
	if err := n.Send("READY=1"); err == nil || !strings.Contains(err.Error(), "/nonexistent/socket") {
		t.Errorf("Send to a missing socket = %v, want an error naming it", err)
	}
}

func TestCleanStatus(t *testing.T) {
	long := strings.Repeat("é", 1000)
	got := CleanStatus(long)
	if len(got) > maxStatus || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Errorf("CleanStatus(long) = %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if got := CleanStatus("a\r\n\tb\x7f"); got != "a   b " {
		t.Errorf("CleanStatus = %q", got)
	}
}

func TestParseMessage(t *testing.T) {
	tests := []struct {
		in      string
		fields  []Field
		skipped int
		event   Event
	}{
		{"", nil, 0, EventNone},
		{"READY=1", fields("READY=1"), 0, EventReady},
		{"READY=1\n", fields("READY=1"), 0, EventReady},
		{"\n\nREADY=1\n\n", fields("READY=1"), 0, EventReady},
		{"READY=0", fields("READY=0"), 0, EventNone},
		{"STATUS=a=b", fields("STATUS=a=b"), 0, EventNone},
		{"STATUS=", fields("STATUS="), 0, EventNone},
		{"RELOADING=1\nREADY=1", fields("RELOADING=1", "READY=1"), 0, EventReady},
		{"STOPPING=1\nREADY=1", fields("STOPPING=1", "READY=1"), 0, EventStopping},
		{"READY=1\nRELOADING=1", fields("READY=1", "RELOADING=1"), 0, EventReady},
		{"X_FOO_2=v", fields("X_FOO_2=v"), 0, EventNone},
		{"ready=1", nil, 1, EventNone},
		{"READY", nil, 1, EventNone},
		{"=1", nil, 1, EventNone},
		{"RE ADY=1", nil, 1, EventNone},
		{"STATUS=a\x00b\nREADY=1", fields("READY=1"), 1, EventReady},
		{"STATUS=\xc3\x28", nil, 1, EventNone},
		{"STATUS=ünïcode", fields("STATUS=ünïcode"), 0, EventNone},
		{"READY=1\r", fields("READY=1\r"), 0, EventNone},
	}
	for _, tt := range tests {
		m := ParseMessage([]byte(tt.in))
		if !reflect.DeepEqual(m.Fields, tt.fields) || m.Skipped != tt.skipped || m.Event() != tt.event {
			t.Errorf("ParseMessage(%q) = %q, skipped %d, event %v; want %q, %d, %v",
				tt.in, m.Fields, m.Skipped, m.Event(), tt.fields, tt.skipped, tt.event)
		}
		if (m.Err != nil) != (tt.skipped > 0) {
			t.Errorf("ParseMessage(%q).Err = %v with %d skipped", tt.in, m.Err, m.Skipped)
		}
	}

	m := ParseMessage([]byte(strings.Repeat("bad\n", 100)))
	if m.Skipped != 100 || !strings.Contains(m.Err.Error(), "and 96 more malformed lines") {
		t.Errorf("100 bad lines: skipped %d, err %v", m.Skipped, m.Err)
	}
	m = ParseMessage([]byte("STATUS=a\nSTATUS=b"))
	if v, _ := m.Get("STATUS"); v != "b" {
		t.Errorf("Get with a repeated key = %q, want the last", v)
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		"READY=1", "READY=1\nSTATUS=ok\n", "RELOADING=1\nMONOTONIC_USEC=123",
		"garbage\n\n=\nA=\xff", "STOPPING=1\nREADY=1\x00", "X=" + strings.Repeat("y", 100),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := ParseMessage(b)
		lines := 0
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" {
				lines++
			}
		}
		if len(m.Fields)+m.Skipped != lines {
			t.Fatalf("%d fields + %d skipped != %d non-empty lines", len(m.Fields), m.Skipped, lines)
		}
		if (m.Err == nil) != (m.Skipped == 0) {
			t.Fatalf("Err %v with %d skipped", m.Err, m.Skipped)
		}
		for _, f := range m.Fields {
			if !validKey([]byte(f.Key)) || !utf8.ValidString(f.Value) ||
				strings.ContainsAny(f.Value, "\n\x00") {
				t.Fatalf("bad field accepted: %q", f)
			}
		}
		ev := m.Event()
		if ev == EventReady {
			if v, _ := m.Get("STOPPING"); v == "1" {
				t.Fatal("READY won over STOPPING")
			}
		}
	})
}

func TestParseWatchdog(t *testing.T) {
	const self = 1000
	for _, tt := range []struct {
		usec, pid string
		want      time.Duration
		err       string
	}{
		{"", "", 0, ""},
		{"", "999", 0, ""}, // no watchdog, whoever it is for
		{"2000000", "", 2 * time.Second, ""},
		{"2000000", "1000", 2 * time.Second, ""},
		{"1", "1000", time.Microsecond, ""},
		{"9223372036854775807", "", 0, ""}, // never fires
		{"2000000", "999", 0, "WATCHDOG_PID is not this process"},
		{"0", "", 0, "not a positive number"},
		{"-1", "", 0, "not a positive number"},
		{"+1", "", 0, "not a positive number"},
		{"1s", "", 0, "not a positive number"},
		{"18446744073709551615", "", 0, "not a positive number"},
		{"2000000", "x", 0, "not a pid"},
		{"2000000", "0", 0, "not a pid"},
		{"2000000", "+1000", 0, "not a pid"},
	} {
		got, err := ParseWatchdog(tt.usec, tt.pid, self)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ParseWatchdog(%q, %q) = %v, %v; want %v, %q", tt.usec, tt.pid, got, err, tt.want, tt.err)
		}
		if strings.Contains(tt.err, "not this process") && !errors.Is(err, ErrWatchdogOtherPID) {
			t.Errorf("ParseWatchdog(%q, %q) = %v, want ErrWatchdogOtherPID", tt.usec, tt.pid, err)
		}
	}
}
