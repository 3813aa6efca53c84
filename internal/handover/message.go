package handover

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Versions of the protocol this build speaks: it writes Version and reads
// MinVersion to Version. Version 2 adds the batch: a "conns" record
// carries up to MaxBatch connections, and an answer names any number of
// them (IDs).
const (
	Version    = 2
	MinVersion = 1
)

// BatchVersion is the first version with "conns" records and answers
// that name several connections: a peer that speaks an older one gets
// one record per connection.
const BatchVersion = 2

// EnvVar is set by hitless for every child, to the newest protocol version
// it speaks. NotifyKey is the key of the notification that carries a
// child's channel; its value is the version of the hello on the channel.
const (
	EnvVar    = "HITLESS_HANDOVER"
	NotifyKey = "HITLESS_HANDOVER"
)

// Limits of one message.
const (
	// MaxState is the largest application state blob a connection may
	// carry.
	MaxState = 32 << 10
	// MaxMessage is the largest record, encoded: a connection with the
	// largest state (base64 in JSON) and a long kind fits.
	MaxMessage = 64 << 10
	// MaxKind is the longest kind name; MaxKinds, the most kinds a hello
	// may list.
	MaxKind  = 256
	MaxKinds = 256
	// MaxBatch is the most connections a "conns" record carries: well
	// under the kernel's SCM_MAX_FD (253 descriptors in one message), and
	// its ids fit MaxMessage many times over.
	MaxBatch = 64
)

// Type names a message. Types are written by name, never by number, so
// that an old reader can tell a message it does not know.
type Type string

// The message types; see the package doc for who sends which.
const (
	TypeHello   Type = "hello"
	TypeQuery   Type = "query"
	TypeAdopter Type = "adopter"
	TypeConn    Type = "conn"
	TypeConns   Type = "conns" // version 2: a batch of connections of one kind
	TypeTaken   Type = "taken"
	TypeRefused Type = "refused"
	TypeAdopted Type = "adopted"
	TypeClosed  Type = "closed"
	TypeReport  Type = "report"
)

// Message is one record on a channel. Fields that a type does not use are
// left empty and are not written.
type Message struct {
	Version int  `json:"v"`
	Type    Type `json:"type"`
	// ID pairs a query with its adopter answer, and a conn with its
	// taken/refused (ids of the child's) or adopted/closed (ids of
	// hitless's).
	ID uint64 `json:"id,omitempty"`
	// IDs (version 2) are the connections of a conns record, one per
	// descriptor in the record, in order; in a taken, refused, adopted
	// or closed answer, the connections it answers for (besides ID, if
	// set).
	IDs []uint64 `json:"ids,omitempty"`
	// Kind is what a connection is: HTTPKind for one accepted on a
	// listener, StreamKind for one handed over by the application.
	Kind string `json:"kind,omitempty"`
	// Kinds, in a hello and an adopter answer: the kinds adopted.
	Kinds []string `json:"kinds,omitempty"`
	// State is the application's blob that goes with a connection it
	// handed over itself.
	State []byte `json:"state,omitempty"`
	// Adopter is the generation that would take connections (0: none);
	// From, the generation a connection comes from.
	Adopter int `json:"adopter,omitempty"`
	From    int `json:"from,omitempty"`
	// Reason says why a connection was refused or closed.
	Reason string `json:"reason,omitempty"`
	// Closed and ClosedIdle, in a report: connections the generation
	// closed during its drain rather than hand over, and how many of
	// them were closed while idle (the rest after a response).
	Closed     int `json:"closed,omitempty"`
	ClosedIdle int `json:"closed_idle,omitempty"`
}

// HTTPKind is the kind of an HTTP connection accepted on the listener
// with address addr (of network network): the same socket, held by every
// generation, has the same address in each.
func HTTPKind(network, addr string) string { return "http " + network + " " + addr }

// StreamKind is the kind of a connection the application hands over
// itself under name (childproc's Lifecycle.HandOver).
func StreamKind(name string) string { return "stream " + name }

// Marshal encodes m, after checking it.
func Marshal(m Message) ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("handover: encode %s: %w", m.Type, err)
	}
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("handover: %s message of %d bytes is larger than %d", m.Type, len(b), MaxMessage)
	}
	return b, nil
}

// ErrVersion is wrapped by Unmarshal's error for a message written in a
// version this build does not read.
var ErrVersion = errors.New("handover: protocol version not supported")

// Unmarshal decodes and checks one record. A type it does not know is not
// an error: the caller ignores the message.
func Unmarshal(b []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return Message{}, fmt.Errorf("handover: decode: %w", err)
	}
	if m.Version < MinVersion || m.Version > Version {
		return m, fmt.Errorf("%w: %d (this build reads %d to %d)", ErrVersion, m.Version, MinVersion, Version)
	}
	// Empty is absent, as Marshal writes it (omitempty): a message reads
	// the same however its writer spelled nothing.
	if len(m.Kinds) == 0 {
		m.Kinds = nil
	}
	if len(m.State) == 0 {
		m.State = nil
	}
	if len(m.IDs) == 0 {
		m.IDs = nil
	}
	if err := m.check(); err != nil {
		return m, err
	}
	return m, nil
}

// Known reports whether this build knows the message's type.
func (m Message) Known() bool {
	switch m.Type {
	case TypeHello, TypeQuery, TypeAdopter, TypeConn, TypeTaken, TypeRefused, TypeAdopted, TypeClosed, TypeReport:
		return true
	case TypeConns:
		return m.Version >= BatchVersion
	}
	return false
}

// Answered lists the connections an answer (taken, refused, adopted,
// closed) is about: ID, if set, then IDs.
func (m Message) Answered() []uint64 {
	if m.ID == 0 {
		return m.IDs
	}
	return append([]uint64{m.ID}, m.IDs...)
}

func (m Message) check() error {
	if m.Type == "" {
		return errors.New("handover: message without a type")
	}
	if len(m.State) > MaxState {
		return fmt.Errorf("handover: state of %d bytes is larger than %d", len(m.State), MaxState)
	}
	if len(m.Kinds) > MaxKinds {
		return fmt.Errorf("handover: %d kinds, more than %d", len(m.Kinds), MaxKinds)
	}
	for _, k := range append([]string{m.Kind}, m.Kinds...) {
		if err := CheckKind(k); k != "" && err != nil {
			return err
		}
	}
	if (m.Type == TypeConn || m.Type == TypeConns) && m.Kind == "" {
		return fmt.Errorf("handover: %s message without a kind", m.Type)
	}
	if len(m.IDs) > 0 && m.Version < BatchVersion {
		return fmt.Errorf("handover: ids in a message of version %d (from version %d on)", m.Version, BatchVersion)
	}
	if m.Type == TypeConns {
		switch {
		case m.Version < BatchVersion:
			return fmt.Errorf("handover: conns message of version %d (from version %d on)", m.Version, BatchVersion)
		case len(m.IDs) == 0 || len(m.IDs) > MaxBatch:
			return fmt.Errorf("handover: conns message with %d connections (1 to %d)", len(m.IDs), MaxBatch)
		case m.ID != 0:
			return errors.New("handover: conns message with an id (its connections are in ids)")
		}
	}
	if len(m.IDs) > MaxBatch {
		return fmt.Errorf("handover: %d ids in one message, more than %d", len(m.IDs), MaxBatch)
	}
	return nil
}

// CheckKind checks a kind name: at most MaxKind bytes of printable UTF-8.
func CheckKind(k string) error {
	switch {
	case k == "":
		return errors.New("handover: empty kind")
	case len(k) > MaxKind:
		return fmt.Errorf("handover: kind %.32q... is longer than %d bytes", k, MaxKind)
	case !utf8.ValidString(k) || strings.ContainsFunc(k, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return fmt.Errorf("handover: kind %q is not printable UTF-8", k)
	}
	return nil
}
