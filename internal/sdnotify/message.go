package sdnotify

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"
)

// A Field is one KEY=VALUE line of a notification.
type Field struct {
	Key, Value string
}

// A Message is one notification datagram.
type Message struct {
	// PID, UID and GID identify the sender as the kernel reported them
	// (SCM_CREDENTIALS). They are zero for a Message from ParseMessage.
	PID int32
	UID uint32
	GID uint32

	// Fields holds the well-formed lines, in the order sent.
	Fields []Field

	// Skipped counts the lines that were dropped as malformed, and Err
	// says why (the first few reasons); Err is nil when Skipped is 0,
	// unless the datagram carried file descriptors, which were closed.
	Skipped int
	Err     error

	// Raw is the datagram as received.
	Raw []byte
}

// Get returns the value of key. When a key appears more than once, the
// last one wins, as in systemd.
func (m *Message) Get(key string) (string, bool) {
	for i := len(m.Fields) - 1; i >= 0; i-- {
		if m.Fields[i].Key == key {
			return m.Fields[i].Value, true
		}
	}
	return "", false
}

// An Event is the state change a message announces.
type Event int

const (
	EventNone      Event = iota // none of the below, e.g. only STATUS=
	EventReloading              // RELOADING=1
	EventReady                  // READY=1
	EventStopping               // STOPPING=1
)

func (e Event) String() string {
	switch e {
	case EventReloading:
		return "reloading"
	case EventReady:
		return "ready"
	case EventStopping:
		return "stopping"
	}
	return "none"
}

// Event returns the state change m announces. When a message holds several,
// STOPPING=1 wins over READY=1, which wins over RELOADING=1, as systemd
// decides. Only the value "1" counts.
func (m *Message) Event() Event {
	var ev Event
	for _, f := range m.Fields {
		if f.Value != "1" {
			continue
		}
		switch f.Key {
		case "STOPPING":
			ev = max(ev, EventStopping)
		case "READY":
			ev = max(ev, EventReady)
		case "RELOADING":
			ev = max(ev, EventReloading)
		}
	}
	return ev
}

// maxReasons bounds how many reasons Message.Err lists: a datagram of 4096
// newlines would otherwise produce thousands.
const maxReasons = 4

// ParseMessage parses a notification payload. It never fails as a whole:
// malformed lines are dropped, counted in Skipped and explained in Err, and
// the rest is kept, because one bad line should not hide a READY=1 next to
// it.
//
// A line is well-formed when it is KEY=VALUE, where KEY is non-empty and
// made of A-Z, 0-9 and _, and the line is valid UTF-8 without NUL bytes.
// Empty lines are ignored without counting: a trailing newline is
// customary.
func ParseMessage(b []byte) Message {
	m := Message{Raw: b}
	var reasons []error
	skip := func(line []byte, why string) {
		m.Skipped++
		if len(reasons) < maxReasons {
			reasons = append(reasons, fmt.Errorf("line %q: %s", truncate(line), why))
		}
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		key, value, ok := bytes.Cut(line, []byte("="))
		switch {
		case !ok:
			skip(line, "not KEY=VALUE")
		case !validKey(key):
			skip(line, "key is not made of A-Z, 0-9 and _")
		case bytes.IndexByte(value, 0) >= 0:
			skip(line, "contains a NUL byte")
		case !utf8.Valid(value):
			skip(line, "not valid UTF-8")
		default:
			m.Fields = append(m.Fields, Field{Key: string(key), Value: string(value)})
		}
	}
	if m.Skipped > len(reasons) {
		reasons = append(reasons, fmt.Errorf("and %d more malformed lines", m.Skipped-len(reasons)))
	}
	m.Err = errors.Join(reasons...)
	return m
}

func validKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// truncate shortens a line for an error message.
func truncate(b []byte) []byte {
	if len(b) > 64 {
		return append(b[:64:64], "..."...)
	}
	return b
}
